"""A top-up: an owner asks for an amount, Stripe Checkout takes the card; the balance is
credited when Stripe's webhook says the session is paid (events.py), never here."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.audit.services import audit_record
from apps.payments.models import TopUp
from apps.payments.services.accounts import (
    PaymentsError,
    minor_units,
    money_in_bounds,
    payment_customer_ensure,
    require_payments,
)
from apps.payments.stripe_api import checkout_session_create
from apps.tenants.models import Tenant


def top_up_start(
    *,
    tenant: Tenant,
    amount: Any,
    success_url: str,
    cancel_url: str,
    email: str = "",
    actor=None,
) -> tuple[TopUp, str]:
    """Open a Checkout Session for ``amount``; (the top-up, the URL to send the owner to).
    Raises PaymentsOff, PaymentsError (bad amount, postpaid tenant) or PaymentError."""
    require_payments()
    if not tenant.prepaid:
        raise PaymentsError("tenant", "top-ups are for prepaid tenants")
    amount = money_in_bounds(amount, field="amount")
    currency = settings.PAYMENTS_CURRENCY
    account = payment_customer_ensure(tenant=tenant, email=email)
    session_id, url = checkout_session_create(
        customer_id=account.stripe_customer_id,
        amount_minor=minor_units(amount),
        currency=currency,
        product_name=f"Tollgate credit for {tenant.display_name or tenant.name}",
        metadata={"tenant_id": str(tenant.id), "amount": str(amount), "tollgate": "top_up"},
        success_url=success_url,
        cancel_url=cancel_url,
    )
    user = actor if getattr(actor, "is_authenticated", False) else None
    top_up = TopUp.objects.create(
        tenant=tenant, session_id=session_id, amount=amount, currency=currency, created_by=user
    )
    audit_record(
        actor=actor,
        tenant=tenant,
        action="payments.top_up_started",
        target=top_up,
        details={"amount": str(amount), "currency": currency, "session": session_id},
    )
    return top_up, url
