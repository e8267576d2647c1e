"""Alert settings, webhook endpoints and their delivery log (apps/alerts). Viewers read;
admins and owners write; staff alone set allow_http / allow_internal."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods, require_POST

from apps.alerts import events, selectors, services
from apps.alerts.services import AlertsError
from apps.dashboard.access import TenantAccess, access_required
from apps.dashboard.views.common import one_time_put, page
from apps.tenants.access import require_every_project
from apps.tenants.models import Membership

WRITE = Membership.Role.ADMIN


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]


def _alerts_page(request: HttpRequest, access: TenantAccess, error: AlertsError | None = None):
    settings = selectors.alert_settings_get(tenant=access.tenant)
    response = page(
        request,
        "dashboard/alerts.html",
        access,
        "alerts",
        settings=settings,
        percents_text=", ".join(str(p) for p in settings.budget_percents),
        balance_text=", ".join(settings.balance_below),
        alerts=selectors.alert_event_list(tenant=access.tenant, limit=30),
        error=error,
    )
    if error is not None:
        response.status_code = error.status
    return response


@login_required
@require_http_methods(["GET", "POST"])
def alert_settings(request: HttpRequest) -> HttpResponse:
    access = require_every_project(access_required(request))
    if request.method == "GET":
        return _alerts_page(request, access)
    access = access_required(request, WRITE)
    try:
        services.alert_settings_set(
            tenant=access.tenant,
            budget_percents=_split(request.POST.get("budget_percents", "")),
            balance_below=_split(request.POST.get("balance_below", "")),
            email_enabled=request.POST.get("email_enabled") == "on",
            actor=request.user,
        )
    except AlertsError as exc:
        return _alerts_page(request, access, exc)
    messages.success(request, "Alert settings saved.")
    return redirect("dashboard:alerts")


def _endpoint_fields(request: HttpRequest, access: TenantAccess) -> dict:
    fields = {
        "url": request.POST.get("url", ""),
        "description": request.POST.get("description", ""),
        "event_types": request.POST.getlist("event_types") or None,
        "enabled": request.POST.get("enabled") == "on",
    }
    if access.is_staff:
        fields["allow_http"] = request.POST.get("allow_http") == "on"
        fields["allow_internal"] = request.POST.get("allow_internal") == "on"
    return fields


def _webhooks_page(request, access, error: AlertsError | None = None, values=None):
    return page(
        request,
        "dashboard/webhooks.html",
        access,
        "webhooks",
        endpoints=selectors.webhook_endpoint_list(tenant=access.tenant),
        event_types=sorted(events.EVENT_TYPES.items()),
        error=error,
        values=values or {},
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhook_list(request: HttpRequest) -> HttpResponse:
    access = require_every_project(access_required(request))
    if request.method == "GET":
        return _webhooks_page(request, access)
    access = access_required(request, WRITE)
    fields = _endpoint_fields(request, access)
    try:
        endpoint, secret = services.webhook_endpoint_create(
            tenant=access.tenant, staff=access.is_staff, actor=request.user, **fields
        )
    except AlertsError as exc:
        response = _webhooks_page(request, access, exc, fields)
        response.status_code = exc.status
        return response
    one_time_put(
        request, kind="secret", label=f"webhook #{endpoint.id} signing secret", value=secret
    )
    return redirect("dashboard:webhook", endpoint_id=endpoint.id)


def _endpoint_page(request, access, endpoint, error: AlertsError | None = None):
    return page(
        request,
        "dashboard/webhook.html",
        access,
        "webhooks",
        endpoint=endpoint,
        deliveries=selectors.webhook_delivery_log(endpoint=endpoint),
        event_types=sorted(events.EVENT_TYPES.items()),
        error=error,
    )


@login_required
@require_http_methods(["GET", "POST"])
def webhook_detail(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    access = require_every_project(access_required(request))
    if request.method == "GET":
        endpoint = selectors.webhook_endpoint_get(tenant=access.tenant, endpoint_id=endpoint_id)
        return _endpoint_page(request, access, endpoint)
    access = access_required(request, WRITE)
    endpoint = selectors.webhook_endpoint_get(tenant=access.tenant, endpoint_id=endpoint_id)
    fields = _endpoint_fields(request, access)
    fields["event_types"] = fields["event_types"] or [events.ALL]
    try:
        services.webhook_endpoint_update(
            endpoint=endpoint, staff=access.is_staff, actor=request.user, **fields
        )
    except AlertsError as exc:
        endpoint.refresh_from_db()
        response = _endpoint_page(request, access, endpoint, exc)
        response.status_code = exc.status
        return response
    messages.success(request, "Webhook endpoint saved.")
    return redirect("dashboard:webhook", endpoint_id=endpoint.id)


def _write_target(request: HttpRequest, endpoint_id: int):
    access = access_required(request, WRITE)
    return selectors.webhook_endpoint_get(tenant=access.tenant, endpoint_id=endpoint_id)


@login_required
@require_POST
def webhook_test(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _write_target(request, endpoint_id)
    services.webhook_test_send(endpoint=endpoint, actor=request.user)
    messages.success(request, "Test event queued: its attempts appear in the log below.")
    return redirect("dashboard:webhook", endpoint_id=endpoint.id)


@login_required
@require_POST
def webhook_rotate(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _write_target(request, endpoint_id)
    secret = services.webhook_endpoint_secret_rotate(endpoint=endpoint, actor=request.user)
    one_time_put(
        request, kind="secret", label=f"webhook #{endpoint.id} signing secret", value=secret
    )
    return redirect("dashboard:webhook", endpoint_id=endpoint.id)


@login_required
@require_POST
def webhook_delete(request: HttpRequest, endpoint_id: int) -> HttpResponse:
    endpoint = _write_target(request, endpoint_id)
    services.webhook_endpoint_delete(endpoint=endpoint, actor=request.user)
    messages.success(request, "Webhook endpoint removed.")
    return redirect("dashboard:webhooks")
