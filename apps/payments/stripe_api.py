"""The seam to Stripe: the only module that imports the ``stripe`` library.

Everything above it gets plain values (ids, amounts in minor units, dicts of an event)
and our own exceptions: ``PaymentError`` for anything Stripe or the network refused,
``CardDeclined`` (a subclass) when the card itself was refused, ``BadSignature`` for a
webhook that Stripe did not sign (or signed too long ago). Settings: STRIPE_SECRET_KEY,
STRIPE_WEBHOOK_SECRET, STRIPE_API_BASE (empty: Stripe itself; tests point it at
tests/fakes/stripe.py), STRIPE_WEBHOOK_TOLERANCE_S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe
from django.conf import settings

# A network error is retried by the library (with the same idempotency key).
NETWORK_RETRIES = 2


class PaymentError(Exception):
    """Stripe (or the way to it) refused or failed; the message is safe to show and log."""

    def __init__(self, message: str, *, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class CardDeclined(PaymentError):
    def __init__(self, message: str, *, code: str = "", payment_intent_id: str = "") -> None:
        super().__init__(message, code=code)
        self.payment_intent_id = payment_intent_id


class BadSignature(Exception):
    pass


@dataclass(frozen=True)
class Charge:
    payment_intent_id: str
    status: str  # "succeeded", "processing", "requires_action", …
    amount_received: int  # minor units
    currency: str


def _client() -> stripe.StripeClient:
    base = settings.STRIPE_API_BASE
    return stripe.StripeClient(
        settings.STRIPE_SECRET_KEY,
        base_addresses={"api": base} if base else None,
        max_network_retries=NETWORK_RETRIES,
    )


def _translated(exc: stripe.StripeError) -> PaymentError:
    """Stripe's exception as ours, once, here. Its user_message is what Stripe meant to be
    shown; nothing of the request (keys, card data) is in it."""
    message = str(exc.user_message or "").strip()[:300] or type(exc).__name__
    code = str(getattr(exc, "code", "") or "")
    if isinstance(exc, stripe.CardError):
        error = getattr(exc, "error", None)
        intent = getattr(error, "payment_intent", None) if error is not None else None
        intent_id = str(getattr(intent, "id", "") or "") if intent is not None else ""
        decline = getattr(error, "decline_code", None) if error is not None else None
        return CardDeclined(message, code=str(decline or code), payment_intent_id=intent_id)
    return PaymentError(message, code=code)


def customer_create(*, name: str, email: str, tenant_id: int, idempotency_key: str) -> str:
    try:
        customer = _client().v1.customers.create(
            params={
                "name": name,
                "email": email or None,
                "metadata": {"tenant_id": str(tenant_id)},
            },
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as exc:
        raise _translated(exc) from None
    return customer.id


def checkout_session_create(
    *,
    customer_id: str,
    amount_minor: int,
    currency: str,
    product_name: str,
    metadata: dict[str, str],
    success_url: str,
    cancel_url: str,
) -> tuple[str, str]:
    """A hosted Checkout page for one payment of ``amount_minor``; (session id, its url).
    The card is saved for off-session use (auto-recharge)."""
    params: dict[str, Any] = {
        "mode": "payment",
        "customer": customer_id,
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": currency,
                    "unit_amount": amount_minor,
                    "product_data": {"name": product_name},
                },
            }
        ],
        "metadata": metadata,
        "payment_intent_data": {"setup_future_usage": "off_session", "metadata": metadata},
        "success_url": success_url,
        "cancel_url": cancel_url,
    }
    try:
        session = _client().v1.checkout.sessions.create(params=params)
    except stripe.StripeError as exc:
        raise _translated(exc) from None
    return session.id, session.url


def payment_method_of_intent(payment_intent_id: str) -> tuple[str, str]:
    """(payment method id, a label such as "visa •••• 4242") of a payment intent."""
    try:
        intent = _client().v1.payment_intents.retrieve(
            payment_intent_id, params={"expand": ["payment_method"]}
        )
    except stripe.StripeError as exc:
        raise _translated(exc) from None
    method = intent.to_dict().get("payment_method")
    if method is None:
        return "", ""
    if isinstance(method, str):
        return method, ""
    card = method.get("card") or {}
    label = f"{card.get('brand', 'card')} •••• {card.get('last4', '')}".strip() if card else ""
    return method.get("id", ""), label[:100]


def payment_intent_charge(
    *,
    customer_id: str,
    payment_method_id: str,
    amount_minor: int,
    currency: str,
    metadata: dict[str, str],
    description: str,
    idempotency_key: str,
) -> Charge:
    """Charge the saved card now, without the customer present (auto-recharge)."""
    try:
        intent = _client().v1.payment_intents.create(
            params={
                "amount": amount_minor,
                "currency": currency,
                "customer": customer_id,
                "payment_method": payment_method_id,
                "off_session": True,
                "confirm": True,
                "description": description,
                "metadata": metadata,
            },
            options={"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as exc:
        raise _translated(exc) from None
    found = intent.to_dict()
    return Charge(
        payment_intent_id=str(found.get("id") or ""),
        status=str(found.get("status") or ""),
        amount_received=int(found.get("amount_received") or 0),
        currency=str(found.get("currency") or ""),
    )


def event_verify(payload: bytes, signature_header: str | None) -> dict[str, Any]:
    """The event of a webhook delivery, as a plain dict, if Stripe signed it with our
    webhook secret within the tolerance; else BadSignature."""
    try:
        event = stripe.Webhook.construct_event(
            payload,
            signature_header,
            settings.STRIPE_WEBHOOK_SECRET,
            tolerance=settings.STRIPE_WEBHOOK_TOLERANCE_S,
        )
    except stripe.SignatureVerificationError as exc:
        raise BadSignature(str(exc._message or "bad signature")) from None
    except (ValueError, UnicodeDecodeError):
        # Signed by us but not an event (or not JSON / UTF-8): refused all the same.
        raise BadSignature("the payload is not a Stripe event") from None
    return event.to_dict()
