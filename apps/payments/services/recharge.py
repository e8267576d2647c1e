"""Auto-recharge: when a prepaid balance (the journal's sum) is below the tenant's
threshold, charge its saved card for the recharge amount, at most once per window.

The claim is taken under a lock on the tenant's PaymentAccount row: the balance is read
again there (a charge that just finished is in it), no attempt may exist within the last
window, and the RechargeAttempt row, unique per (tenant, window start), is the claim. So
any number of beat runs or workers make one charge. Stripe gets the attempt's id as its
idempotency key. The credit (ref = the payment intent id) comes from the response or from
the ``payment_intent.succeeded`` webhook, whichever is first: once. A failed charge pauses
auto-recharge until an owner saves the settings again, and alerts once; never a retry loop.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.payments.models import PaymentAccount, RechargeAttempt
from apps.payments.selectors import payments_enabled
from apps.payments.services.accounts import minor_units
from apps.payments.stripe_api import CardDeclined, PaymentError, payment_intent_charge
from apps.tenants.models import BillingMode, Tenant
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add

log = logging.getLogger(__name__)
# The metadata that marks a payment intent as one of ours (events.py reads it back).
RECHARGE = "recharge"


def _window_start(now: datetime, window_s: int) -> datetime:
    epoch = int(now.timestamp())
    return datetime.fromtimestamp(epoch - epoch % window_s, UTC)


def recharge_run(*, now: datetime | None = None) -> int:
    """Check every prepaid tenant with auto-recharge on; the number of charges made. One
    indexed query when nobody has it on."""
    if not payments_enabled():
        return 0
    accounts = (
        PaymentAccount.objects.filter(
            recharge_enabled=True,
            recharge_paused_at__isnull=True,
            tenant__billing_mode=BillingMode.PREPAID,
        )
        .exclude(payment_method_id="")
        .exclude(stripe_customer_id="")
        .select_related("tenant")
    )
    return sum(1 for account in accounts if recharge_check(account=account, now=now) is not None)


def recharge_check(
    *, account: PaymentAccount, now: datetime | None = None
) -> RechargeAttempt | None:
    """Charge the tenant's card if its balance is below the threshold and no charge was made
    within the window; the attempt made, or None."""
    now = now or timezone.now()
    if balance_get(tenant=account.tenant) >= account.recharge_threshold:
        return None  # the common case, without taking any lock
    attempt = _claim(account=account, now=now)
    if attempt is None:
        return None
    _charge(account=account, attempt=attempt)
    attempt.refresh_from_db()
    return attempt


def _claim(*, account: PaymentAccount, now: datetime) -> RechargeAttempt | None:
    try:
        with transaction.atomic():
            account = (
                PaymentAccount.objects.select_for_update(of=("self",))
                .select_related("tenant")
                .get(pk=account.pk)
            )
            if not account.recharge_active or not account.tenant.prepaid:
                return None
            balance = balance_get(tenant=account.tenant)
            if balance >= account.recharge_threshold:
                return None
            window = timedelta(seconds=account.recharge_window_s)
            recent = RechargeAttempt.objects.for_tenant(account.tenant).filter(
                created_at__gt=now - window
            )
            if recent.exists():
                return None
            return RechargeAttempt.objects.create(
                tenant=account.tenant,
                window_start=_window_start(now, account.recharge_window_s),
                amount=account.recharge_amount,
                currency=settings.PAYMENTS_CURRENCY,
                balance_before=balance,
            )
    except IntegrityError:  # this window's attempt exists
        return None


def _charge(*, account: PaymentAccount, attempt: RechargeAttempt) -> None:
    tenant = account.tenant
    try:
        charge = payment_intent_charge(
            customer_id=account.stripe_customer_id,
            payment_method_id=account.payment_method_id,
            amount_minor=minor_units(attempt.amount),
            currency=attempt.currency,
            metadata={
                "tollgate": RECHARGE,
                "tenant_id": str(tenant.id),
                "attempt_id": str(attempt.id),
            },
            description=f"Tollgate auto-recharge for {tenant.name}",
            idempotency_key=f"tollgate-recharge-{attempt.id}",
        )
    except CardDeclined as exc:
        recharge_failure_record(
            attempt_id=attempt.id, error=exc.message, payment_intent_id=exc.payment_intent_id
        )
        return
    except PaymentError as exc:
        recharge_failure_record(attempt_id=attempt.id, error=exc.message)
        return
    if charge.status == "succeeded":
        recharge_success_record(
            attempt_id=attempt.id,
            payment_intent_id=charge.payment_intent_id,
            amount_minor=charge.amount_received,
            currency=charge.currency,
        )
    elif charge.status == "processing":
        RechargeAttempt.objects.filter(pk=attempt.pk).update(
            payment_intent_id=charge.payment_intent_id
        )  # the webhook settles it
    else:
        recharge_failure_record(
            attempt_id=attempt.id,
            error=f"the payment needs the card holder ({charge.status})",
            payment_intent_id=charge.payment_intent_id,
        )


def recharge_success_record(
    *, attempt_id: int, payment_intent_id: str, amount_minor: int, currency: str
) -> bool:
    """Credit a recharge Stripe says succeeded (from its response or its webhook); True if
    this call credited it."""
    with transaction.atomic():
        attempt = (
            RechargeAttempt.objects.select_for_update()
            .select_related("tenant")
            .filter(pk=attempt_id)
            .first()
        )
        if attempt is None:
            return False
        if currency.lower() != attempt.currency or amount_minor <= 0:
            log.error(
                "recharge %s: Stripe reported %s %s, expected %s; not credited",
                attempt.id,
                amount_minor,
                currency.lower()[:3],
                attempt.currency,
            )
            return False
        _, created = balance_entry_add(
            tenant=attempt.tenant,
            kind="topup",
            amount=Decimal(amount_minor) / 100,
            ref=payment_intent_id,
            reason=f"Auto-recharge ({payment_intent_id})",
            actor="stripe",
        )
        attempt.status = RechargeAttempt.Status.SUCCEEDED
        attempt.payment_intent_id = payment_intent_id
        attempt.error = ""
        attempt.finished_at = attempt.finished_at or timezone.now()
        attempt.save(update_fields=["status", "payment_intent_id", "error", "finished_at"])
    return created


def recharge_failure_record(*, attempt_id: int, error: str, payment_intent_id: str = "") -> bool:
    """Record a failed charge once (the 402 and the ``payment_intent.payment_failed``
    webhook both report it), pause auto-recharge, alert. True if this call recorded it."""
    now = timezone.now()
    with transaction.atomic():
        attempt = (
            RechargeAttempt.objects.select_for_update()
            .select_related("tenant")
            .filter(pk=attempt_id)
            .first()
        )
        if attempt is None or attempt.status != RechargeAttempt.Status.PENDING:
            return False
        attempt.status = RechargeAttempt.Status.FAILED
        attempt.error = error[:500]
        attempt.payment_intent_id = payment_intent_id or attempt.payment_intent_id
        attempt.finished_at = now
        attempt.save(update_fields=["status", "error", "payment_intent_id", "finished_at"])
        PaymentAccount.objects.filter(tenant=attempt.tenant).update(
            recharge_paused_at=now, recharge_paused_reason=error[:500]
        )
    log.warning(
        "auto-recharge of tenant %s failed (attempt %s); paused until an owner re-enables it",
        attempt.tenant.name,
        attempt.id,
    )
    _recharge_failed(attempt.tenant, attempt, error)
    return True


def _recharge_failed(tenant: Tenant, attempt: RechargeAttempt, error: str) -> None:
    """Tell the tenant that its auto-recharge failed and is paused: an alert (the tenant's
    webhooks subscribed to ``balance.auto_recharge_failed`` and an email to its owners and
    admins), once per attempt."""
    from apps.alerts.services import alert_send

    alert_send(
        tenant=tenant,
        event_type="balance.auto_recharge_failed",
        data={
            "amount": str(attempt.amount),
            "currency": attempt.currency,
            "error": str(error)[:300],
            "paused": True,
        },
        dedupe_key=f"auto-recharge-failed:{attempt.id}",
    )
