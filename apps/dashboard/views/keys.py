"""Keys: list, issue (secret shown once), edit, rotate, revoke, content policy."""

from __future__ import annotations

from datetime import UTC

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from apps.dashboard import selectors
from apps.dashboard.access import access_required
from apps.dashboard.forms import ContentPolicyForm, KeyCreateForm, KeyRotateForm, LimitsForm
from apps.dashboard.views.common import one_time_put, page
from apps.keys.services import (
    ApiKeyError,
    api_key_issue,
    api_key_revoke,
    api_key_rotate,
    api_key_update,
)
from apps.moderation.policy import PolicyError
from apps.moderation.services import content_policy_set
from apps.projects.selectors import project_list
from apps.tenants.access import TenantAccess, require_project_key_manager

KEYS_PER_PAGE = 50


@login_required
@require_GET
def key_list(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    show_revoked = request.GET.get("revoked") == "1"
    search = request.GET.get("q", "").strip()[:100]
    keys = selectors.key_list(access=access, include_revoked=show_revoked, search=search)
    keys_page = Paginator(keys, KEYS_PER_PAGE).get_page(request.GET.get("page"))
    selectors.key_statuses(keys_page, access)
    return page(
        request,
        "dashboard/keys.html",
        access,
        "keys",
        keys=keys_page,
        show_revoked=show_revoked,
        search=search,
        can_issue=access.can_manage_some_keys,
    )


def _managed_projects(access: TenantAccess) -> list:
    """The projects the caller may put keys in (the default first)."""
    return [p for p in project_list(access=access) if access.can_manage_keys_of(p.id)]


def _key_manager(request: HttpRequest, api_key) -> TenantAccess:
    """The access of a caller who manages this key's project (403 otherwise)."""
    return require_project_key_manager(access_required(request), api_key.project_id)


@login_required
@require_http_methods(["GET", "POST"])
def key_create(request: HttpRequest) -> HttpResponse:
    access = access_required(request)
    if not access.can_manage_some_keys:
        raise PermissionDenied("This needs the admin role in a project or the tenant.")
    wanted = request.GET.get("project", "")
    initial = {"project": int(wanted)} if wanted.isdigit() and len(wanted) < 10 else {}
    form = KeyCreateForm(request.POST or None, initial=initial, projects=_managed_projects(access))
    if request.method == "POST" and form.is_valid():
        try:
            api_key, secret = api_key_issue(
                tenant=access.tenant,
                name=form.cleaned_data["name"],
                actor=request.user,
                **form.service_fields(),
            )
        except IntegrityError:
            form.add_error("name", "An active key of this tenant already has this name.")
        else:
            one_time_put(
                request, kind="key", label=f"{api_key.name} ({api_key.prefix}…)", value=secret
            )
            return redirect("dashboard:keys")
    return page(request, "dashboard/key_form.html", access, "keys", form=form, api_key=None)


@login_required
@require_http_methods(["GET", "POST"])
def key_edit(request: HttpRequest, key_id: int) -> HttpResponse:
    access = access_required(request)
    api_key = selectors.key_get(access=access, key_id=key_id)
    initial = LimitsForm.initial_of(api_key)
    projects = _managed_projects(access) if api_key.manageable else ()
    if request.method == "POST":
        access = _key_manager(request, api_key)
        form = LimitsForm(request.POST, initial=initial, projects=projects)
        if form.is_valid() and api_key.revoked_at is None:
            changes = {
                name: value
                for name, value in form.service_fields().items()
                if getattr(api_key, name) != value
            }
            if changes:
                api_key_update(api_key=api_key, actor=request.user, **changes)
            messages.success(request, f"Key {api_key.name} saved.")
            return redirect("dashboard:key-edit", key_id=api_key.id)
    else:
        form = LimitsForm(initial=initial, projects=projects)
    policy_form = ContentPolicyForm(policy=api_key.content_policy)
    return page(
        request,
        "dashboard/key_edit.html",
        access,
        "keys",
        form=form,
        policy_form=policy_form,
        api_key=api_key,
    )


@login_required
@require_POST
def key_policy(request: HttpRequest, key_id: int) -> HttpResponse:
    access = access_required(request)
    api_key = selectors.key_get(access=access, key_id=key_id)
    access = _key_manager(request, api_key)
    form = ContentPolicyForm(request.POST, policy=api_key.content_policy)
    if form.is_valid():
        try:
            content_policy_set(api_key=api_key, policy=form.policy(), actor=request.user)
        except PolicyError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(request, f"Content policy of {api_key.name} saved.")
            return redirect("dashboard:key-edit", key_id=api_key.id)
    limits = LimitsForm(initial=LimitsForm.initial_of(api_key), projects=_managed_projects(access))
    return page(
        request,
        "dashboard/key_edit.html",
        access,
        "keys",
        form=limits,
        policy_form=form,
        api_key=api_key,
    )


@login_required
@require_http_methods(["GET", "POST"])
def key_rotate(request: HttpRequest, key_id: int) -> HttpResponse:
    """GET: the confirmation page with the grace to choose; POST: rotate."""
    access = access_required(request)
    api_key = selectors.key_get(access=access, key_id=key_id)
    access = _key_manager(request, api_key)
    if api_key.revoked_at is not None:
        messages.error(request, "A revoked key cannot be rotated.")
        return redirect("dashboard:keys")
    form = KeyRotateForm(request.POST if request.method == "POST" else None)
    if form.is_valid():
        try:
            api_key, secret = api_key_rotate(
                api_key=api_key, actor=request.user, **form.cleaned_data
            )
        except ApiKeyError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            label = f"{api_key.name} ({api_key.prefix}…), rotated"
            if api_key.previous_valid_until is not None:
                until = api_key.previous_valid_until.astimezone(UTC)
                label += f"; the previous secret works until {until:%Y-%m-%d %H:%M:%S} UTC"
            one_time_put(request, kind="key", label=label, value=secret)
            return redirect("dashboard:keys")
    return page(request, "dashboard/key_rotate.html", access, "keys", api_key=api_key, form=form)


@login_required
@require_http_methods(["GET", "POST"])
def key_revoke(request: HttpRequest, key_id: int) -> HttpResponse:
    """GET: the confirmation page; POST: revoke."""
    access = access_required(request)
    api_key = selectors.key_get(access=access, key_id=key_id)
    access = _key_manager(request, api_key)
    if request.method == "POST":
        api_key_revoke(api_key=api_key, actor=request.user)
        messages.success(request, f"Key {api_key.name} ({api_key.prefix}…) revoked.")
        return redirect("dashboard:keys")
    return page(request, "dashboard/key_revoke.html", access, "keys", api_key=api_key)
