"""Stripe's webhook events. Each event id is handled once (StripeEvent, unique): a
duplicate or a replay finds its row and changes nothing. Whatever the order of delivery,
a payment is credited once, by the event that owns it:

    checkout.session.completed /    a top-up (paid): credits the session's amount_total
    checkout.session.async_payment_succeeded      under ref = the session id
    payment_intent.succeeded        an auto-recharge (metadata tollgate=recharge): credits
                                    under ref = the intent id; a top-up's own intent is
                                    left to its session's event
    payment_intent.payment_failed   an auto-recharge failed: recorded once, paused, alerted

Anything else is stored and ignored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.payments.models import PaymentAccount, StripeEvent, TopUp
from apps.payments.services.accounts import CENT, PaymentsError
from apps.payments.services.recharge import (
    RECHARGE,
    recharge_failure_record,
    recharge_success_record,
)
from apps.payments.stripe_api import PaymentError, event_verify, payment_method_of_intent
from apps.tenants.models import Tenant
from apps.wallet.services import balance_entry_add

log = logging.getLogger(__name__)


@dataclass
class Handled:
    outcome: str
    after: Callable[[], None] | None = None  # run once the event's transaction committed


def _text(value: Any, limit: int = 255) -> str:
    return value[:limit] if isinstance(value, str) else ""


def _minor(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def stripe_event_receive(*, payload: bytes, signature: str | None) -> str:
    """Verify and handle one webhook delivery; what was done ("credited", "duplicate", …).
    Raises BadSignature (forged, stale or not an event) or PaymentsError (signed but
    malformed)."""
    event = event_verify(payload, signature)
    event_id, kind = _text(event.get("id")), _text(event.get("type"), 100)
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not event_id or not isinstance(obj, dict):
        raise PaymentsError("event", "has no id or data.object")
    with transaction.atomic():
        try:
            with transaction.atomic():
                record = StripeEvent.objects.create(
                    event_id=event_id, type=kind, object_id=_text(obj.get("id"))
                )
        except IntegrityError:
            return "duplicate"
        handler = HANDLERS.get(kind)
        handled = handler(obj) if handler is not None else Handled("ignored")
        record.outcome = handled.outcome[:200]
        record.save(update_fields=["outcome"])
    if handled.after is not None:
        handled.after()
    return handled.outcome


def _checkout_paid(session: dict[str, Any]) -> Handled:
    session_id = _text(session.get("id"))
    top_up = (
        TopUp.objects.select_for_update()
        .select_related("tenant")
        .filter(session_id=session_id)
        .first()
    )
    if top_up is None:
        log.warning("Stripe checkout session %s is not a Tollgate top-up; ignored", session_id)
        return Handled("not a top-up")
    metadata = session.get("metadata") if isinstance(session.get("metadata"), dict) else {}
    if metadata.get("tenant_id") != str(top_up.tenant_id):
        log.error("Stripe checkout session %s: tenant does not match; not credited", session_id)
        return Handled("tenant mismatch")
    if session.get("payment_status") != "paid":
        return Handled("not paid yet")
    currency = _text(session.get("currency"), 3).lower()
    paid = _minor(session.get("amount_total"))
    if currency != top_up.currency or not paid:
        log.error(
            "Stripe checkout session %s: paid %s %s, expected %s; not credited",
            session_id,
            paid,
            currency,
            top_up.currency,
        )
        return Handled("amount or currency refused")
    amount = (Decimal(paid) / 100).quantize(CENT)
    _, created = balance_entry_add(
        tenant=top_up.tenant,
        kind="topup",
        amount=amount,
        ref=session_id,
        reason=f"Stripe Checkout top-up ({session_id})",
        actor="stripe",
    )
    if top_up.status != TopUp.Status.PAID:
        top_up.status = TopUp.Status.PAID
        top_up.paid_amount = amount
        top_up.paid_at = timezone.now()
        top_up.save(update_fields=["status", "paid_amount", "paid_at"])
    customer = _text(session.get("customer"))
    if customer:
        PaymentAccount.objects.filter(tenant=top_up.tenant, stripe_customer_id="").update(
            stripe_customer_id=customer
        )
    intent = session.get("payment_intent")
    intent_id = _text(intent if isinstance(intent, str) else (intent or {}).get("id"))
    tenant = top_up.tenant
    after = (
        (lambda: _card_remember(tenant=tenant, payment_intent_id=intent_id)) if intent_id else None
    )
    return Handled("credited" if created else "already credited", after)


def _card_remember(*, tenant: Tenant, payment_intent_id: str) -> None:
    """Keep the card a top-up saved (setup_future_usage) for auto-recharge."""
    try:
        method_id, label = payment_method_of_intent(payment_intent_id)
    except PaymentError as exc:
        log.warning("could not read the card of %s's top-up: %s", tenant.name, exc.message)
        return
    if method_id:
        PaymentAccount.objects.filter(tenant=tenant).update(
            payment_method_id=method_id, payment_method_label=label
        )


def _recharge_attempt_id(intent: dict[str, Any]) -> int | None:
    metadata = intent.get("metadata") if isinstance(intent.get("metadata"), dict) else {}
    if metadata.get("tollgate") != RECHARGE:
        return None
    raw = metadata.get("attempt_id")
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


def _intent_succeeded(intent: dict[str, Any]) -> Handled:
    attempt_id = _recharge_attempt_id(intent)
    if attempt_id is None:
        return Handled("ignored (a top-up is credited by its checkout session)")
    paid = _minor(intent.get("amount_received"))
    credited = recharge_success_record(
        attempt_id=attempt_id,
        payment_intent_id=_text(intent.get("id")),
        amount_minor=paid or 0,
        currency=_text(intent.get("currency"), 3),
    )
    return Handled("credited" if credited else "already credited")


def _intent_failed(intent: dict[str, Any]) -> Handled:
    attempt_id = _recharge_attempt_id(intent)
    if attempt_id is None:
        return Handled("ignored")
    error = intent.get("last_payment_error")
    message = _text(error.get("message"), 300) if isinstance(error, dict) else ""
    recorded = recharge_failure_record(
        attempt_id=attempt_id,
        error=message or "the card was declined",
        payment_intent_id=_text(intent.get("id")),
    )
    return Handled("recharge failed" if recorded else "already recorded")


HANDLERS: dict[str, Callable[[dict[str, Any]], Handled]] = {
    "checkout.session.completed": _checkout_paid,
    "checkout.session.async_payment_succeeded": _checkout_paid,
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
}
