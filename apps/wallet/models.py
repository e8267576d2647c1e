from django.conf import settings
from django.db import models

from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet

MONEY = {"max_digits": 24, "decimal_places": 12}


class BalanceEntry(models.Model):
    """A credit or correction of a prepaid tenant's balance (usage debits are the ledger's
    rows: see the package header). Append-only: a mistake is corrected by another entry."""

    class Kind(models.TextChoices):
        GRANT = "grant"  # staff credit, with a reason
        TOPUP = "topup"  # a payment
        REFUND = "refund"  # money returned to the tenant (negative)
        ADJUSTMENT = "adjustment"  # a staff correction, either sign

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="balance_entries")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    # Signed: credits positive, refunds negative.
    amount = models.DecimalField(**MONEY)
    # The idempotency key: a config grant's ref, a payment provider's event id, …
    ref = models.CharField(max_length=200)
    reason = models.CharField(max_length=500, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "kind", "ref"], name="balance_entry_once")
        ]
        indexes = [models.Index(fields=["tenant", "created_at"], name="balance_entry_time")]
        ordering = ["tenant", "created_at", "id"]

    def __str__(self) -> str:
        return f"{self.tenant} {self.kind} {self.amount} ({self.ref})"
