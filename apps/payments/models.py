from django.conf import settings
from django.db import models

from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet

MONEY = {"max_digits": 14, "decimal_places": 2}


class PaymentAccount(models.Model):
    """A tenant's side of Stripe: its customer, the card saved by its last top-up, and its
    auto-recharge settings (owners edit them)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="payment_account")
    stripe_customer_id = models.CharField(max_length=255, blank=True)
    # The card saved (setup_future_usage=off_session) by the last paid top-up.
    payment_method_id = models.CharField(max_length=255, blank=True)
    payment_method_label = models.CharField(max_length=100, blank=True)  # "visa •••• 4242"

    recharge_enabled = models.BooleanField(default=False)
    recharge_threshold = models.DecimalField(**MONEY, default=0)
    recharge_amount = models.DecimalField(**MONEY, default=0)
    recharge_window_s = models.PositiveIntegerField(default=3600)
    # Set when a charge failed: no charge until the owner saves the settings again.
    recharge_paused_at = models.DateTimeField(null=True, blank=True)
    recharge_paused_reason = models.CharField(max_length=500, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        indexes = [
            models.Index(
                fields=["recharge_enabled"],
                name="payment_account_recharging",
                condition=models.Q(recharge_enabled=True),
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant} ({self.stripe_customer_id or 'no customer'})"

    @property
    def recharge_active(self) -> bool:
        return bool(
            self.recharge_enabled and self.recharge_paused_at is None and self.payment_method_id
        )


class TopUp(models.Model):
    """A Checkout Session Tollgate opened for a tenant; credited once when Stripe says paid."""

    class Status(models.TextChoices):
        OPEN = "open"
        PAID = "paid"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="top_ups")
    session_id = models.CharField(max_length=255, unique=True)
    amount = models.DecimalField(**MONEY)  # asked for; the credit is what Stripe reports paid
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    paid_amount = models.DecimalField(**MONEY, null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    paid_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.tenant} {self.amount} {self.currency} ({self.status})"


class RechargeAttempt(models.Model):
    """One off-session charge of the saved card. At most one per (tenant, window): the
    unique constraint is the claim, so concurrent beat runs charge once."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="recharge_attempts")
    window_start = models.DateTimeField()
    amount = models.DecimalField(**MONEY)
    currency = models.CharField(max_length=3)
    balance_before = models.DecimalField(max_digits=24, decimal_places=12)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    payment_intent_id = models.CharField(max_length=255, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "window_start"], name="recharge_once_per_window"
            )
        ]
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.tenant} recharge {self.amount} ({self.status})"


class StripeEvent(models.Model):
    """Every webhook event handled, once: a replayed or duplicated delivery finds its id here."""

    event_id = models.CharField(max_length=255, unique=True)
    type = models.CharField(max_length=100)
    object_id = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received_at"]

    def __str__(self) -> str:
        return f"{self.event_id} {self.type}"
