"""Tenant settings: the limits and budget over all its keys, and its content policy (the
default of every key; a key may override categories on its own page)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_http_methods, require_POST

from apps.dashboard.access import TenantAccess, access_required
from apps.dashboard.forms import ContentPolicyForm, TenantLimitsForm
from apps.dashboard.views.common import page
from apps.moderation.policy import PolicyError
from apps.moderation.services import content_policy_set
from apps.tenants.models import Membership
from apps.tenants.services import tenant_update_limits

WRITE = Membership.Role.ADMIN


def _settings_page(
    request: HttpRequest,
    access: TenantAccess,
    form: TenantLimitsForm | None = None,
    policy_form: ContentPolicyForm | None = None,
) -> HttpResponse:
    tenant = access.tenant
    return page(
        request,
        "dashboard/settings.html",
        access,
        "settings",
        form=form or TenantLimitsForm(initial=TenantLimitsForm.initial_of(tenant)),
        policy_form=policy_form
        or ContentPolicyForm(policy=tenant.content_policy, tenant_default=False),
    )


@login_required
@require_http_methods(["GET", "POST"])
def tenant_settings(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    if request.method == "GET":
        return _settings_page(request, access)
    access = access_required(request, WRITE)
    form = TenantLimitsForm(request.POST)
    if not form.is_valid():
        return _settings_page(request, access, form=form)
    tenant_update_limits(tenant=access.tenant, actor=request.user, **form.service_fields())
    messages.success(request, "Tenant limits and budget saved.")
    return redirect("dashboard:settings")


@login_required
@require_POST
def tenant_policy(request: HttpRequest) -> HttpResponse:
    access = access_required(request, WRITE)
    tenant = access.tenant
    form = ContentPolicyForm(request.POST, policy=tenant.content_policy, tenant_default=False)
    if form.is_valid():
        try:
            content_policy_set(tenant=tenant, policy=form.policy(), actor=request.user)
        except PolicyError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, "Tenant content policy saved.")
            return redirect("dashboard:settings")
    return _settings_page(request, access, policy_form=form)
