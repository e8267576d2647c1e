"""Limit fields shared by keys and tenants (an abstract model mixin)."""

from django.db import models


class BudgetPeriod(models.TextChoices):
    DAILY = "daily"
    MONTHLY = "monthly"
    LIFETIME = "lifetime"


class LimitFields(models.Model):
    """Requests and tokens per minute, concurrent requests and a money budget per period.

    Empty means unlimited. Periods reset at UTC midnight / the first of the month."""

    rpm = models.PositiveIntegerField(null=True, blank=True, help_text="Requests per minute")
    tpm = models.PositiveIntegerField(null=True, blank=True, help_text="Tokens per minute")
    max_concurrent = models.PositiveIntegerField(null=True, blank=True)
    budget_amount = models.DecimalField(
        max_digits=14, decimal_places=6, null=True, blank=True, help_text="USD per period"
    )
    budget_period = models.CharField(
        max_length=16, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTHLY
    )

    class Meta:
        abstract = True
