"""Members (owners invite, change roles, remove), admin tokens, the audit log, and the
tenant switcher."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_POST

from apps.audit.selectors import audit_event_list
from apps.dashboard import selectors
from apps.dashboard.access import (
    access_required,
    current_access,
    require_admin_token_manager,
    tenant_switch,
)
from apps.dashboard.forms import AdminTokenForm, InviteForm, RoleForm
from apps.dashboard.views.common import one_time_put, page
from apps.tenants.models import Membership
from apps.tenants.services import (
    TenantError,
    admin_token_issue,
    admin_token_revoke,
    membership_invite,
    membership_remove,
    membership_set_role,
)

OWNER = Membership.Role.OWNER


@login_required
@require_POST
def switch_tenant(request: HttpRequest) -> HttpResponse:
    tenant = tenant_switch(request, request.POST.get("tenant", ""))
    messages.info(request, f"Now working in {tenant.display_name or tenant.name}.")
    return redirect("dashboard:home")


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    access = current_access(request)
    if access is not None:
        return redirect("dashboard:keys")
    if request.user.is_staff:
        return redirect("dashboard:staff-tenants")
    return page(request, "dashboard/no_tenant.html", None, "")


def _members_page(request: HttpRequest, access, invite_form: InviteForm) -> HttpResponse:
    return page(
        request,
        "dashboard/members.html",
        access,
        "members",
        members=selectors.member_list(tenant=access.tenant),
        invite_form=invite_form,
        roles=Membership.Role.choices,
    )


@login_required
@require_GET
def member_list(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    return _members_page(request, access, InviteForm())


@login_required
@require_POST
def member_invite(request: HttpRequest) -> HttpResponse:
    access = access_required(request, OWNER)
    form = InviteForm(request.POST)
    if form.is_valid():
        try:
            invitation = membership_invite(
                tenant=access.tenant,
                email=form.cleaned_data["email"],
                role=form.cleaned_data["role"],
                actor=request.user,
            )
        except TenantError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            email = form.cleaned_data["email"]
            if invitation.set_password_path:
                one_time_put(
                    request,
                    kind="link",
                    label=f"set-password link for {email}",
                    value=request.build_absolute_uri(invitation.set_password_path),
                )
            messages.success(request, f"{email} added as {invitation.membership.role}.")
            return redirect("dashboard:members")
    return _members_page(request, access, form)


@login_required
@require_POST
def member_role(request: HttpRequest, membership_id: int) -> HttpResponse:
    access = access_required(request)
    membership = selectors.member_get(tenant=access.tenant, membership_id=membership_id)
    access_required(request, OWNER)
    form = RoleForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Choose a role.")
    else:
        try:
            membership_set_role(
                membership=membership, role=form.cleaned_data["role"], actor=request.user
            )
        except TenantError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"{membership.user} is now {form.cleaned_data['role']}.")
    return redirect("dashboard:members")


@login_required
@require_POST
def member_remove(request: HttpRequest, membership_id: int) -> HttpResponse:
    access = access_required(request)
    membership = selectors.member_get(tenant=access.tenant, membership_id=membership_id)
    access_required(request, OWNER)
    try:
        membership_remove(membership=membership, actor=request.user)
    except TenantError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"{membership.user} removed.")
    return redirect("dashboard:members")


@login_required
@require_GET
def audit_log(request: HttpRequest) -> HttpResponse:
    access = access_required(request, OWNER)
    action = request.GET.get("action") or None
    events = audit_event_list(tenant=access.tenant, action=action)
    events_page = Paginator(events, 50).get_page(request.GET.get("page"))
    return page(
        request, "dashboard/audit.html", access, "audit", events=events_page, action=action or ""
    )


# Admin tokens (management API credentials) -------------------------------------------------


@login_required
@require_GET
def token_list(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    return page(
        request,
        "dashboard/tokens.html",
        access,
        "tokens",
        tokens=selectors.admin_token_list(tenant=access.tenant),
        form=AdminTokenForm(),
    )


@login_required
@require_POST
def token_create(request: HttpRequest) -> HttpResponse:
    access = require_admin_token_manager(access_required(request))
    form = AdminTokenForm(request.POST)
    if form.is_valid():
        try:
            token, secret = admin_token_issue(
                tenant=access.tenant, name=form.cleaned_data["name"], actor=request.user
            )
        except IntegrityError:
            form.add_error("name", "An active token of this tenant already has this name.")
        else:
            one_time_put(
                request, kind="token", label=f"{token.name} ({token.prefix}…)", value=secret
            )
            return redirect("dashboard:tokens")
    return page(
        request,
        "dashboard/tokens.html",
        access,
        "tokens",
        tokens=selectors.admin_token_list(tenant=access.tenant),
        form=form,
    )


@login_required
@require_POST
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    access = access_required(request)
    token = selectors.admin_token_get(tenant=access.tenant, token_id=token_id)
    require_admin_token_manager(access)
    admin_token_revoke(admin_token=token, actor=request.user)
    messages.success(request, f"Token {token.name} ({token.prefix}…) revoked.")
    return redirect("dashboard:tokens")
