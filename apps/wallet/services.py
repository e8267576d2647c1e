"""Writes to the balance journal. Every credit goes through ``balance_entry_add``: one
entry per (tenant, kind, ref), so a replayed grant, webhook or import changes nothing."""

from collections.abc import Callable
from decimal import Decimal

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry

# Called with (tenant_id, amount) once an entry is committed: the Redis side of the balance
# (apps/limits) registers here, so this module needs no Redis.
_on_committed: list[Callable[[int, Decimal], None]] = []


def balance_entry_hook(callback: Callable[[int, Decimal], None]) -> None:
    """Run ``callback(tenant_id, amount)`` after every new entry commits."""
    if callback not in _on_committed:
        _on_committed.append(callback)


class BalanceError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


_SIGNS = {
    BalanceEntry.Kind.GRANT: 1,
    BalanceEntry.Kind.TOPUP: 1,
    BalanceEntry.Kind.REFUND: -1,
    BalanceEntry.Kind.ADJUSTMENT: 0,  # either sign
}


def balance_entry_add(
    *,
    tenant: Tenant,
    kind: str,
    amount: Decimal,
    ref: str,
    reason: str = "",
    actor=None,
) -> tuple[BalanceEntry, bool]:
    """The entry for (tenant, kind, ref), created unless it exists; ``(entry, created)``.
    Grants and top-ups are positive, refunds negative, adjustments non-zero."""
    if kind not in _SIGNS:
        raise BalanceError("kind", f"must be one of {sorted(_SIGNS)}")
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise BalanceError("amount", "must be a decimal amount")
    sign = _SIGNS[kind]
    if amount == 0 or (sign and (amount > 0) != (sign > 0)):
        raise BalanceError("amount", "must be positive" if sign > 0 else "must be negative")
    if amount != amount.quantize(Decimal("0.000001")):
        raise BalanceError("amount", "has more than 6 decimal places")
    if abs(amount) >= Decimal(10) ** 12:
        raise BalanceError("amount", "is too large")
    ref = str(ref).strip()
    if not ref or len(ref) > 200:
        raise BalanceError("ref", "must be 1 to 200 characters")
    user = actor if getattr(actor, "is_authenticated", False) else None
    try:
        with transaction.atomic():
            entry = BalanceEntry.objects.create(
                tenant=tenant,
                kind=kind,
                amount=amount,
                ref=ref,
                reason=str(reason)[:500],
                created_by=user,
            )
            audit_record(
                actor=actor,
                tenant=tenant,
                action=f"balance.{kind}",
                target=entry,
                details={"amount": str(amount), "ref": ref, "reason": entry.reason},
            )
    except IntegrityError:
        existing = BalanceEntry.objects.filter(tenant=tenant, kind=kind, ref=ref).first()
        if existing is None:
            raise
        return existing, False
    tenant_id = tenant.id
    for callback in _on_committed:
        transaction.on_commit(lambda cb=callback: cb(tenant_id, amount))
    return entry, True
