"""The dashboard's side of access control.

Every decision — which tenant this request acts for, with which role, is the role
enough — is apps.tenants.access's (one module for the dashboard and the API). This module
only adds what a browser session needs: a default tenant when the user has several and
has not picked one yet, and the switcher. Anything of a tenant the user may not see is a
404, never a 403 that would confirm it exists.
"""

from __future__ import annotations

from django.http import Http404, HttpRequest

from apps.tenants.access import (
    SESSION_TENANT_KEY,
    TenantAccess,
    TenantNotSelected,
    require_admin_token_manager,
    require_role,
    session_tenant_set,
    tenant_access_for,
)
from apps.tenants.access import tenants_for_user as _tenants_for_user
from apps.tenants.models import Membership, Tenant

__all__ = [
    "TenantAccess",
    "access_required",
    "can",
    "current_access",
    "require_admin_token_manager",
    "staff_required",
    "tenant_switch",
    "tenants_for_user",
]


def tenants_for_user(user) -> list[Tenant]:
    """The tenants the user may switch to: their memberships (staff: every tenant)."""
    if not getattr(user, "is_authenticated", False):
        return []
    return [tenant for tenant, _role in _tenants_for_user(user)]


def _default_tenant(user) -> Tenant | None:
    """The first tenant the user is a member of; staff without one: the first tenant."""
    membership = (
        Membership.objects.select_related("tenant")
        .filter(user=user)
        .order_by("tenant__name")
        .first()
    )
    if membership is not None:
        return membership.tenant
    return Tenant.objects.order_by("name").first() if user.is_staff else None


def current_access(request: HttpRequest) -> TenantAccess | None:
    """The access of this request (the session's tenant, or ?tenant=). When none is chosen
    yet, or the chosen one is no longer the user's, the user's first tenant is chosen.
    None: a signed-in user without any tenant. Http404: ?tenant= names one not theirs."""
    if not getattr(request.user, "is_authenticated", False):
        return None
    try:
        return tenant_access_for(request)
    except TenantNotSelected:
        pass
    except Http404:
        if request.GET.get("tenant"):
            raise
        if request.session.pop(SESSION_TENANT_KEY, None) is None:
            return None  # no tenant stored and none of their own: a user without tenant
    tenant = _default_tenant(request.user)
    if tenant is None:
        return None
    return session_tenant_set(request, tenant_name=tenant.name)


def access_required(request: HttpRequest, minimum: str = Membership.Role.VIEWER) -> TenantAccess:
    """The current access with at least ``minimum`` (403 below it; 404 without tenant)."""
    access = current_access(request)
    if access is None:
        raise Http404("You are not a member of any tenant.")
    return require_role(access, minimum)


def tenant_switch(request: HttpRequest, tenant_name: str) -> Tenant:
    """Make ``tenant_name`` the session's tenant; 404 unless the user may act in it."""
    return session_tenant_set(request, tenant_name=tenant_name).tenant


def can(access: TenantAccess | None, minimum: str) -> bool:
    """For templates: show write controls only to roles that may use them."""
    return access is not None and access.has_role(minimum)


def staff_required(request: HttpRequest) -> None:
    """Staff pages do not exist for anyone else (404)."""
    if not (request.user.is_authenticated and request.user.is_staff):
        raise Http404("Not found.")
