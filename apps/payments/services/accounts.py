"""The tenant's Stripe customer and saved card, and its auto-recharge settings."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.payments import stripe_api
from apps.payments.models import PaymentAccount
from apps.payments.selectors import payments_enabled, topup_bounds
from apps.tenants.models import Tenant

CENT = Decimal("0.01")
WINDOW_MIN_S, WINDOW_MAX_S = 300, 30 * 86400


class PaymentsError(ValueError):
    """Input a payment cannot be made with (400), naming the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class PaymentsOff(Exception):
    """Stripe is not configured on this platform (STRIPE_SECRET_KEY, STRIPE_WEBHOOK_SECRET)."""

    message = "Top-ups are off on this platform (Stripe is not configured)."


def require_payments() -> None:
    if not payments_enabled():
        raise PaymentsOff()


def money(value: Any, *, field: str, allow_zero: bool = False) -> Decimal:
    """A money amount as Decimal with at most 2 decimal places (Stripe charges cents)."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise PaymentsError(field, "must be a decimal amount") from None
    if not amount.is_finite():
        raise PaymentsError(field, "must be a decimal amount")
    if amount != amount.quantize(CENT):
        raise PaymentsError(field, "has more than 2 decimal places")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise PaymentsError(field, "must be positive")
    return amount.quantize(CENT)


def money_in_bounds(value: Any, *, field: str) -> Decimal:
    amount = money(value, field=field)
    low, high = topup_bounds()
    if not low <= amount <= high:
        raise PaymentsError(field, f"must be between {low} and {high}")
    return amount


def minor_units(amount: Decimal) -> int:
    return int((amount * 100).to_integral_exact())


def payment_account_ensure(*, tenant: Tenant) -> PaymentAccount:
    try:
        with transaction.atomic():
            account, _ = PaymentAccount.objects.get_or_create(tenant=tenant)
    except IntegrityError:  # created concurrently
        account = PaymentAccount.objects.get(tenant=tenant)
    return account


def payment_customer_ensure(*, tenant: Tenant, email: str = "") -> PaymentAccount:
    """The account with its Stripe customer, created at the first top-up. Concurrent first
    top-ups send the same idempotency key, so Stripe makes one customer."""
    account = payment_account_ensure(tenant=tenant)
    if account.stripe_customer_id:
        return account
    customer_id = stripe_api.customer_create(
        name=tenant.display_name or tenant.name,
        email=email,
        tenant_id=tenant.id,
        idempotency_key=f"tollgate-customer-{tenant.id}",
    )
    PaymentAccount.objects.filter(pk=account.pk, stripe_customer_id="").update(
        stripe_customer_id=customer_id
    )
    account.refresh_from_db()
    return account


def recharge_settings_set(
    *,
    tenant: Tenant,
    enabled: bool,
    threshold: Any,
    amount: Any,
    window_s: int | None = None,
    actor=None,
) -> PaymentAccount:
    """Save the auto-recharge settings; saving them (enabled) also lifts a pause that a
    failed charge set."""
    threshold = money(threshold, field="threshold", allow_zero=True)
    amount = money_in_bounds(amount, field="amount") if enabled or amount else Decimal(0)
    if window_s is None:
        window_s = 3600
    if isinstance(window_s, bool) or not isinstance(window_s, int):
        raise PaymentsError("window_s", "must be a whole number of seconds")
    if not WINDOW_MIN_S <= window_s <= WINDOW_MAX_S:
        raise PaymentsError("window_s", f"must be between {WINDOW_MIN_S} and {WINDOW_MAX_S}")
    if enabled:
        require_payments()
        if not tenant.prepaid:
            raise PaymentsError("enabled", "auto-recharge is for prepaid tenants")
    with transaction.atomic():
        account = payment_account_ensure(tenant=tenant)
        account = PaymentAccount.objects.select_for_update().get(pk=account.pk)
        account.recharge_enabled = bool(enabled)
        account.recharge_threshold = threshold
        account.recharge_amount = amount
        account.recharge_window_s = window_s
        account.recharge_paused_at = None
        account.recharge_paused_reason = ""
        account.save()
        audit_record(
            actor=actor,
            tenant=tenant,
            action="payments.auto_recharge",
            target=account,
            details={
                "enabled": account.recharge_enabled,
                "threshold": str(threshold),
                "amount": str(amount),
                "window_s": window_s,
            },
        )
    return account
