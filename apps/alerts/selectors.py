"""Reads, each through ``for_tenant(tenant)``: another tenant's rows are not there."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Prefetch, QuerySet
from django.http import Http404

from apps.alerts.models import (
    DEFAULT_BUDGET_PERCENTS,
    AlertEvent,
    AlertSettings,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from apps.catalog.crypto import credential_decrypt
from apps.tenants.models import Membership, Tenant


def alert_settings_get(*, tenant: Tenant) -> AlertSettings:
    """The tenant's settings (unsaved defaults when it has none)."""
    found = AlertSettings.objects.for_tenant(tenant).first()
    if found is None:
        found = AlertSettings(tenant=tenant, budget_percents=list(DEFAULT_BUDGET_PERCENTS))
    return found


def balance_thresholds(settings: AlertSettings) -> list[Decimal]:
    return [Decimal(a) for a in settings.balance_below]


def alert_recipients(*, tenant: Tenant) -> list[str]:
    """Email addresses of the tenant's active owners and admins."""
    emails = (
        Membership.objects.filter(
            tenant=tenant,
            role__in=[Membership.Role.OWNER, Membership.Role.ADMIN],
            user__is_active=True,
        )
        .exclude(user__email="")
        .order_by("user__email")
        .values_list("user__email", flat=True)
    )
    return list(dict.fromkeys(emails))


def alert_event_list(*, tenant: Tenant, limit: int = 50) -> list[AlertEvent]:
    return list(AlertEvent.objects.for_tenant(tenant).order_by("-created_at", "-id")[:limit])


def webhook_endpoint_list(*, tenant: Tenant) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.for_tenant(tenant).order_by("id")


def webhook_endpoint_get(*, tenant: Tenant, endpoint_id: int) -> WebhookEndpoint:
    """The tenant's endpoint or 404: another tenant's does not exist here."""
    endpoint = WebhookEndpoint.objects.for_tenant(tenant).filter(id=endpoint_id).first()
    if endpoint is None:
        raise Http404("No such webhook endpoint.")
    return endpoint


def webhook_secret(endpoint: WebhookEndpoint) -> str:
    return credential_decrypt(endpoint.secret_encrypted)


def webhook_delivery_log(*, endpoint: WebhookEndpoint, limit: int = 50) -> list[WebhookDelivery]:
    """The endpoint's latest deliveries, newest first, each with its attempts (``log``)."""
    return list(
        WebhookDelivery.objects.for_tenant(endpoint.tenant)
        .filter(endpoint=endpoint)
        .select_related("event")
        .prefetch_related(Prefetch("log", queryset=WebhookAttempt.objects.order_by("number")))
        .order_by("-created_at", "-id")[:limit]
    )
