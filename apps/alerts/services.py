"""Writes: alert settings, webhook endpoints, and ``alert_send``, the one way an alert is
raised (budget and balance thresholds here, auto-recharge failures from the wallet's
payments). An alert is an AlertEvent, unique per (tenant, dedupe_key), created in the
same transaction as one WebhookDelivery per subscribed endpoint and the email's pending
state: the outbox that apps/alerts/delivery.py sends from, so a raised alert is delivered
once whatever crashes or runs twice."""

from __future__ import annotations

import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.alerts import events
from apps.alerts.egress import EgressRefused, url_check
from apps.alerts.models import (
    AlertEvent,
    AlertSettings,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.alerts.selectors import alert_recipients
from apps.alerts.signing import secret_generate
from apps.audit.services import audit_changes, audit_record
from apps.catalog.crypto import credential_encrypt
from apps.tenants.models import Tenant

MAX_THRESHOLDS = 10
MAX_ENDPOINTS = 20


class AlertsError(ValueError):
    """Bad input; ``field`` names it (a 400 on the API, a form error on the dashboard)."""

    def __init__(self, field: str, message: str, *, status: int = 400) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.status = status


# Settings ----------------------------------------------------------------------------------


def _percents(value: Any) -> list[int]:
    if not isinstance(value, list | tuple) or len(value) > MAX_THRESHOLDS:
        raise AlertsError("budget_percents", f"must be a list of at most {MAX_THRESHOLDS}")
    result = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | str):
            raise AlertsError("budget_percents", "must be whole numbers from 1 to 100")
        try:
            percent = int(item)
        except ValueError:
            raise AlertsError("budget_percents", "must be whole numbers from 1 to 100") from None
        if not 1 <= percent <= 100:
            raise AlertsError("budget_percents", "must be whole numbers from 1 to 100")
        result.add(percent)
    return sorted(result)


def _amounts(value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > MAX_THRESHOLDS:
        raise AlertsError("balance_below", f"must be a list of at most {MAX_THRESHOLDS}")
    result = set()
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int | str | Decimal):
            raise AlertsError("balance_below", 'must be amounts like "5.00"')
        try:
            amount = Decimal(str(item).strip())
        except InvalidOperation:
            raise AlertsError("balance_below", 'must be amounts like "5.00"') from None
        if not amount.is_finite() or amount <= 0 or amount >= Decimal(10) ** 9:
            raise AlertsError("balance_below", "must be positive amounts below 1,000,000,000")
        if amount != amount.quantize(Decimal("0.000001")):
            raise AlertsError("balance_below", "has more than 6 decimal places")
        result.add(amount.normalize())
    return [format(a, "f") for a in sorted(result)]


def alert_settings_set(
    *,
    tenant: Tenant,
    budget_percents: Any = None,
    balance_below: Any = None,
    email_enabled: bool | None = None,
    actor: Any = None,
) -> AlertSettings:
    """Change the tenant's thresholds (None leaves a field as it is)."""
    changes: dict[str, Any] = {}
    if budget_percents is not None:
        changes["budget_percents"] = _percents(budget_percents)
    if balance_below is not None:
        changes["balance_below"] = _amounts(balance_below)
    if email_enabled is not None:
        changes["email_enabled"] = bool(email_enabled)
    with transaction.atomic():
        current, _ = AlertSettings.objects.select_for_update().get_or_create(tenant=tenant)
        diff = audit_changes(current, changes)
        for name, value in changes.items():
            setattr(current, name, value)
        current.save()
        if diff:
            audit_record(
                tenant=tenant, actor=actor, action="alerts.settings", target=None, details=diff
            )
    return current


# Webhook endpoints -------------------------------------------------------------------------


def _event_types(value: Any) -> list[str]:
    if value is None:
        return [events.ALL]
    if not isinstance(value, list | tuple) or not value:
        raise AlertsError("event_types", 'must be a non-empty list (["*"]: every type)')
    for item in value:
        if item != events.ALL and item not in events.EVENT_TYPES:
            known = ", ".join(sorted(events.EVENT_TYPES))
            raise AlertsError("event_types", f"unknown event type (known: *, {known})")
    return sorted(set(value))


def _url(value: Any, *, allow_http: bool, allow_internal: bool) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 500:
        raise AlertsError("url", "must be a URL of at most 500 characters")
    url = value.strip()
    try:
        url_check(url, allow_http=allow_http, allow_internal=allow_internal)
    except EgressRefused as exc:
        raise AlertsError("url", exc.message) from None
    return url


def _staff_flags(endpoint_flags: dict[str, Any], *, staff: bool) -> dict[str, bool]:
    flags = {}
    for name in ("allow_http", "allow_internal"):
        value = endpoint_flags.get(name)
        if value is None:
            continue
        if not staff:
            raise AlertsError(name, "only staff may change this", status=403)
        flags[name] = bool(value)
    return flags


def webhook_endpoint_create(
    *,
    tenant: Tenant,
    url: Any,
    event_types: Any = None,
    description: str = "",
    enabled: bool = True,
    allow_http: bool | None = None,
    allow_internal: bool | None = None,
    staff: bool = False,
    actor: Any = None,
) -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its signing secret (the only time the secret is shown)."""
    flags = _staff_flags({"allow_http": allow_http, "allow_internal": allow_internal}, staff=staff)
    checked_url = _url(url, **{"allow_http": False, "allow_internal": False, **flags})
    types = _event_types(event_types)
    if WebhookEndpoint.objects.for_tenant(tenant).count() >= MAX_ENDPOINTS:
        raise AlertsError("url", f"a tenant has at most {MAX_ENDPOINTS} webhook endpoints")
    secret = secret_generate()
    user = actor.user if hasattr(actor, "token") else actor
    with transaction.atomic():
        endpoint = WebhookEndpoint.objects.create(
            tenant=tenant,
            url=checked_url,
            description=str(description or "")[:200],
            secret_encrypted=credential_encrypt(secret),
            secret_prefix=secret[:12],
            enabled=bool(enabled),
            event_types=types,
            created_by=user if getattr(user, "is_authenticated", False) else None,
            **flags,
        )
        audit_record(
            tenant=tenant,
            actor=actor,
            action="webhook.create",
            target=endpoint,
            details={"url": checked_url, "event_types": types, **flags},
        )
    return endpoint, secret


def webhook_endpoint_update(
    *,
    endpoint: WebhookEndpoint,
    staff: bool = False,
    actor: Any = None,
    url: Any = None,
    event_types: Any = None,
    description: str | None = None,
    enabled: bool | None = None,
    allow_http: bool | None = None,
    allow_internal: bool | None = None,
) -> WebhookEndpoint:
    flags = _staff_flags({"allow_http": allow_http, "allow_internal": allow_internal}, staff=staff)
    changes: dict[str, Any] = dict(flags)
    if url is not None and url != endpoint.url and not staff:
        # Staff approved http / internal addresses for the URL they saw, not for any.
        flags = changes = {"allow_http": False, "allow_internal": False}
    effective = {
        "allow_http": flags.get("allow_http", endpoint.allow_http),
        "allow_internal": flags.get("allow_internal", endpoint.allow_internal),
    }
    if url is not None or flags:
        changes["url"] = _url(endpoint.url if url is None else url, **effective)
    if event_types is not None:
        changes["event_types"] = _event_types(event_types)
    if description is not None:
        changes["description"] = str(description)[:200]
    if enabled is not None:
        changes["enabled"] = bool(enabled)
    with transaction.atomic():
        diff = audit_changes(endpoint, changes)
        for name, value in changes.items():
            setattr(endpoint, name, value)
        endpoint.save()
        if diff:
            audit_record(
                tenant=endpoint.tenant,
                actor=actor,
                action="webhook.update",
                target=endpoint,
                details=diff,
            )
    return endpoint


def webhook_endpoint_secret_rotate(*, endpoint: WebhookEndpoint, actor: Any = None) -> str:
    """A new signing secret (shown once); the old one stops signing at once."""
    secret = secret_generate()
    with transaction.atomic():
        endpoint.secret_encrypted = credential_encrypt(secret)
        endpoint.secret_prefix = secret[:12]
        endpoint.save(update_fields=["secret_encrypted", "secret_prefix"])
        audit_record(
            tenant=endpoint.tenant, actor=actor, action="webhook.rotate_secret", target=endpoint
        )
    return secret


def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Any = None) -> None:
    with transaction.atomic():
        audit_record(
            tenant=endpoint.tenant,
            actor=actor,
            action="webhook.delete",
            target=endpoint,
            details={"url": endpoint.url},
        )
        endpoint.delete()


# Raising alerts ----------------------------------------------------------------------------


def _deliver_after_commit(deliveries: list[WebhookDelivery], event: AlertEvent) -> None:
    """Hand the new work to a worker at once; the beat sweep is the safety net (and the
    embedded default's only path)."""
    if not settings.ALERTS_DELIVER_ON_COMMIT:
        return
    from apps.alerts import tasks

    ids = [d.id for d in deliveries]
    email = event.email_status == AlertEvent.Email.PENDING

    def kick() -> None:
        for delivery_id in ids:
            tasks.alerts_deliver.delay(delivery_id)
        if email:
            tasks.alerts_email.delay(event.id)

    transaction.on_commit(kick)


def _event_create(
    *,
    tenant: Tenant,
    event_type: str,
    data: dict,
    dedupe_key: str,
    endpoints: list[WebhookEndpoint] | None = None,
    email: bool = True,
) -> tuple[AlertEvent | None, list[WebhookDelivery]]:
    if event_type not in events.EVENT_TYPES:
        raise AlertsError("event_type", f"unknown event type {event_type!r}")
    dedupe_key = str(dedupe_key)
    if not dedupe_key or len(dedupe_key) > 200:
        raise AlertsError("dedupe_key", "must be 1 to 200 characters")
    now = timezone.now()
    try:
        with transaction.atomic():
            event = AlertEvent.objects.create(
                tenant=tenant,
                public_id="evt_" + secrets.token_hex(12),
                type=event_type,
                dedupe_key=dedupe_key,
                data=data,
            )
            if endpoints is None:
                endpoints = [
                    e
                    for e in WebhookEndpoint.objects.for_tenant(tenant).filter(enabled=True)
                    if e.receives(event_type)
                ]
            deliveries = WebhookDelivery.objects.bulk_create(
                [
                    WebhookDelivery(tenant=tenant, event=event, endpoint=e, next_attempt_at=now)
                    for e in endpoints
                ]
            )
            if email:
                alert_settings = AlertSettings.objects.for_tenant(tenant).first()
                recipients = alert_recipients(tenant=tenant)
                if recipients and (alert_settings is None or alert_settings.email_enabled):
                    event.email_status = AlertEvent.Email.PENDING
                    event.email_recipients = len(recipients)
                    event.save(update_fields=["email_status", "email_recipients"])
    except IntegrityError:
        if AlertEvent.objects.filter(tenant=tenant, dedupe_key=dedupe_key).exists():
            return None, []
        raise
    _deliver_after_commit(deliveries, event)
    return event, deliveries


def alert_send(*, tenant: Tenant, event_type: str, data: dict, dedupe_key: str) -> bool:
    """Raise an alert: delivered to the tenant's enabled webhooks subscribed to
    ``event_type`` and emailed to its owners and admins, exactly once per (tenant,
    dedupe_key). True if this call raised it, False if it had been raised before.
    ``data`` becomes the webhook body's "data": only this tenant's facts, JSON values."""
    event, _ = _event_create(tenant=tenant, event_type=event_type, data=data, dedupe_key=dedupe_key)
    return event is not None


def webhook_test_send(*, endpoint: WebhookEndpoint, actor: Any = None) -> WebhookDelivery:
    """A ``webhook.test`` event to this endpoint only (no email), whatever it subscribes
    to; the delivery shows in its log like any other."""
    event, deliveries = _event_create(
        tenant=endpoint.tenant,
        event_type=events.TEST,
        data={"message": "A test event from Tollgate.", "endpoint": endpoint.id},
        dedupe_key=f"test:{secrets.token_hex(8)}",
        endpoints=[endpoint],
        email=False,
    )
    audit_record(tenant=endpoint.tenant, actor=actor, action="webhook.test", target=endpoint)
    return deliveries[0]
