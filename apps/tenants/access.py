"""Access control, in one place: who is calling, for which tenant, with which role.

Used by every management API view (through the DRF permission classes below) and by the
dashboard's HTML views (``tenant_access_for`` + ``require_role``):

* an **admin token** (``Authorization: Bearer tga-…``) acts for its own tenant with at
  most the role ``admin``, and never more than the user who created it has in that tenant
  *now* (``admin_token_role``): demote the creator to viewer and the token reads only;
  remove them and it stops working (401). Tokens the operator issued (config as code)
  act as admin. Naming another tenant (``?tenant=``) is a 404;
* a **signed-in user** acts for the tenant selected by ``?tenant=<name>``, else the one
  stored in the session (``session_tenant_set``), else their only membership; the role
  is their membership's. A tenant they are not a member of does not exist for them (404);
* **staff** may select any tenant and act as its ``owner``.

**Admin tokens** are created and revoked by owners only (staff count as owners), on the
dashboard and the API alike (``require_admin_token_manager``), and never by a token: a
token cannot mint a credential that outlives its creator's rights.

**Projects** narrow a member further. Owners and admins of the tenant (and staff, and
operator-issued tokens) see and manage every project. A tenant *viewer* with no project
role reads every project, as before projects; a viewer given a role in some projects
(``ProjectMembership``) sees only those: ``viewer`` reads the project and its keys,
``admin`` also manages that project's keys (issue, edit, rotate, revoke). A project the
caller may not see is a 404, like another tenant's object (looked up before the role is
checked, so whatever the method); one they see but may not change is a 403. An admin
token created by a user acts with that user's project roles. Reports of a member
narrowed to some projects cover those projects only (``report_project_ids``); the
tenant-wide figures (statements, the balance) are a 403 for them
(``require_every_project``).

A role too low for the operation is a 403 (the tenant is theirs, the action is not);
anything of another tenant is a 404, never a 403, so its existence does not leak.
Objects are then read through ``for_tenant(access.tenant)`` querysets, and project-level
objects (projects, keys) through ``for_access(access)`` (apps/tenants/scoping.py).
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest
from rest_framework import exceptions
from rest_framework.permissions import SAFE_METHODS, BasePermission

from apps.tenants.models import AdminToken, Membership, Tenant

ROLE_RANK = {Membership.Role.VIEWER: 1, Membership.Role.ADMIN: 2, Membership.Role.OWNER: 3}
VIEWER, ADMIN, OWNER = Membership.Role.VIEWER, Membership.Role.ADMIN, Membership.Role.OWNER
# The dashboard's tenant switcher stores the current tenant's name here.
SESSION_TENANT_KEY = "tollgate_tenant"
_TENANT_NAME = re.compile(r"[-a-zA-Z0-9_]{1,64}")
_CACHE_ATTR = "_tollgate_tenant_access"
# A member's role in one project (apps.projects.models.ProjectMembership.Role).
PROJECT_VIEWER, PROJECT_ADMIN = "viewer", "admin"


class TenantNotSelected(exceptions.ValidationError):
    """A caller who may act for several tenants named none (400 on the API; the dashboard
    catches it and shows its tenant picker)."""

    def __init__(self, message: str = "name a tenant with ?tenant=<name>") -> None:
        super().__init__({"tenant": [message]})


class ProjectNotVisible(Http404):
    """A project (or a key of one) the caller may not see: a 404, as another tenant's."""

    def __init__(self, message: str = "No such project.") -> None:
        super().__init__(message)


@dataclass(frozen=True)
class TenantAccess:
    tenant: Tenant
    role: str  # "owner" | "admin" | "viewer"
    user: AbstractBaseUser | None  # the signed-in user (None for an admin token)
    token: AdminToken | None  # the admin token (None for a user)

    @property
    def is_staff(self) -> bool:
        return bool(self.user is not None and self.user.is_staff)

    @property
    def actor(self) -> AbstractBaseUser | AdminToken:
        """Who acts, for the audit log (services take ``actor=access``)."""
        return self.token if self.token is not None else self.user

    def has_role(self, minimum: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[minimum]

    @property
    def can_write(self) -> bool:
        return self.has_role(ADMIN)

    @property
    def is_owner(self) -> bool:
        return self.has_role(OWNER)

    # Projects ------------------------------------------------------------------------

    @cached_property
    def project_roles(self) -> dict[int, str] | None:
        """{project id: role} when the caller sees only some projects of the tenant; None
        when they see every project (with the tenant role: admin+ manage, viewers read)."""
        if self.has_role(ADMIN):
            return None
        user = self.user
        if self.token is not None:
            user = self.token.created_by if self.token.issued_by_user else None
        if user is None:
            return None
        roles = dict(
            user.project_memberships.filter(project__tenant_id=self.tenant.id).values_list(
                "project_id", "role"
            )
        )
        return roles or None

    @property
    def visible_project_ids(self) -> frozenset[int] | None:
        """The projects this caller may see; None: every project of the tenant."""
        roles = self.project_roles
        return None if roles is None else frozenset(roles)

    def project_role(self, project_id: int) -> str | None:
        """``admin`` (manages the project's keys), ``viewer`` (reads them) or None (the
        project does not exist for this caller: a 404)."""
        roles = self.project_roles
        if roles is None:
            return PROJECT_ADMIN if self.can_write else PROJECT_VIEWER
        return roles.get(project_id)

    def can_manage_keys_of(self, project_id: int) -> bool:
        return self.project_role(project_id) == PROJECT_ADMIN

    @property
    def sees_every_project(self) -> bool:
        """Whether the caller reads tenant-wide figures (statements, the balance and its
        journal): everyone but a member narrowed to some projects."""
        return self.project_roles is None

    def report_project_ids(self, wanted: Iterable[int] = ()) -> list[int]:
        """The projects a report of this caller covers, as a ``project_ids`` filter ([]:
        every project). ``wanted``: the projects the caller asked for, which must all be
        visible to them (``ProjectNotVisible`` otherwise: a 404, like another tenant's)."""
        wanted = list(wanted)
        visible = self.visible_project_ids
        if visible is None:
            return wanted
        if any(pk not in visible for pk in wanted):
            raise ProjectNotVisible()
        return wanted or sorted(visible)

    @property
    def can_manage_some_keys(self) -> bool:
        """Tenant admins, and project admins (of at least one project)."""
        roles = self.project_roles
        if roles is None:
            return self.can_write
        return PROJECT_ADMIN in roles.values()


def _lower(a: str, b: str) -> str:
    return a if ROLE_RANK[a] <= ROLE_RANK[b] else b


def admin_token_role(token: AdminToken) -> str | None:
    """The role an admin token acts with: ``admin`` at most, and never more than the user
    who created it has in the token's tenant now (staff: owner). None: that user was
    deleted, deactivated or is no longer a member, and the token no longer works."""
    if not token.issued_by_user:
        return ADMIN  # issued by the operator (config as code)
    creator = token.created_by
    if creator is None or not creator.is_active:
        return None
    if creator.is_staff:
        return ADMIN
    role = (
        Membership.objects.filter(user=creator, tenant_id=token.tenant_id)
        .values_list("role", flat=True)
        .first()
    )
    return None if role is None else _lower(role, ADMIN)


def can_manage_admin_tokens(access: TenantAccess) -> bool:
    """Owners (and staff) create and revoke admin tokens; admin tokens never do."""
    return access.token is None and access.has_role(OWNER)


def require_admin_token_manager(access: TenantAccess) -> TenantAccess:
    """PermissionDenied (403) unless the caller may create and revoke admin tokens."""
    if not can_manage_admin_tokens(access):
        who = "an admin token" if access.token is not None else f"you are {access.role}"
        raise PermissionDenied(f"Only owners create and revoke admin tokens ({who}).")
    return access


def _query_param(request: Any, name: str) -> str | None:
    value = request.GET.get(name)
    return value or None


def _tenant_name(value: Any) -> str | None:
    """A syntactically valid tenant name, or None (anything else cannot exist: 404)."""
    if isinstance(value, str) and _TENANT_NAME.fullmatch(value):
        return value
    return None


def _resolve(request: Any) -> TenantAccess:
    wanted = _query_param(request, "tenant")
    if wanted is not None and _tenant_name(wanted) is None:
        raise Http404("No such tenant.")
    token = getattr(request, "auth", None)
    if isinstance(token, AdminToken):
        if wanted is not None and wanted != token.tenant.name:
            raise Http404("No such tenant.")
        role = admin_token_role(token)
        if role is None:
            raise exceptions.AuthenticationFailed(
                "This admin token's creator is no longer a member of its tenant."
            )
        return TenantAccess(tenant=token.tenant, role=role, user=None, token=token)
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated or not isinstance(user, AbstractBaseUser):
        raise PermissionDenied("Sign in or send an admin token.")
    if wanted is None:
        session = getattr(request, "session", None)
        wanted = _tenant_name(session.get(SESSION_TENANT_KEY)) if session is not None else None
    if user.is_staff:
        if wanted is None:
            raise TenantNotSelected("staff: name a tenant with ?tenant=<name>")
        tenant = Tenant.objects.filter(name=wanted).first()
        if tenant is None:
            raise Http404("No such tenant.")
        return TenantAccess(tenant=tenant, role=OWNER, user=user, token=None)
    memberships = Membership.objects.select_related("tenant").filter(user=user)
    if wanted is not None:
        memberships = memberships.filter(tenant__name=wanted)
    found = list(memberships.order_by("tenant__name")[:2])
    if not found:
        raise Http404("No such tenant.")
    if len(found) > 1:
        raise TenantNotSelected()
    return TenantAccess(tenant=found[0].tenant, role=found[0].role, user=user, token=None)


def tenant_access_for(request: HttpRequest | Any) -> TenantAccess:
    """The caller's tenant and role for this request (a Django or DRF request; computed
    once per request). Raises Http404 (no such tenant for this caller), PermissionDenied
    (not signed in) or TenantNotSelected (several tenants possible, none named)."""
    cached = getattr(request, _CACHE_ATTR, None)
    if cached is None:
        cached = _resolve(request)
        setattr(request, _CACHE_ATTR, cached)
    return cached


def require_project_key_manager(access: TenantAccess, project_id: int) -> TenantAccess:
    """PermissionDenied (403) unless the caller manages the keys of this project (the
    caller has already been shown it exists: a project they cannot see is the caller's
    404 to raise, before this)."""
    if not access.can_manage_keys_of(project_id):
        raise PermissionDenied("This needs the admin role in this project or the tenant.")
    return access


def require_every_project(access: TenantAccess) -> TenantAccess:
    """PermissionDenied (403) for a member narrowed to some projects: tenant-wide
    figures (statements, the balance and its journal) are not theirs to read."""
    if not access.sees_every_project:
        raise PermissionDenied(
            "Tenant-wide figures need a role that sees every project (you see some)."
        )
    return access


def require_role(access: TenantAccess, minimum: str) -> TenantAccess:
    """PermissionDenied (403) unless the caller has at least ``minimum`` in the tenant."""
    if minimum not in ROLE_RANK:
        raise ValueError(f"unknown role {minimum!r}")
    if not access.has_role(minimum):
        raise PermissionDenied(f"This needs the {minimum} role (you are {access.role}).")
    return access


def tenants_for_user(user: AbstractBaseUser) -> list[tuple[Tenant, str]]:
    """(tenant, role) the user may switch to: every tenant for staff, else their own."""
    if not user.is_authenticated:
        return []
    if user.is_staff:
        return [(t, OWNER) for t in Tenant.objects.order_by("name")]
    return [
        (m.tenant, m.role)
        for m in Membership.objects.select_related("tenant")
        .filter(user=user)
        .order_by("tenant__name")
    ]


def session_tenant_set(request: HttpRequest, *, tenant_name: str) -> TenantAccess:
    """Switch the session's current tenant (404 if the user may not act for it)."""
    if _tenant_name(tenant_name) is None:
        raise Http404("No such tenant.")
    request.session[SESSION_TENANT_KEY] = tenant_name
    if hasattr(request, _CACHE_ATTR):
        delattr(request, _CACHE_ATTR)
    try:
        return tenant_access_for(request)
    except (Http404, TenantNotSelected):
        request.session.pop(SESSION_TENANT_KEY, None)
        raise


# DRF permission classes --------------------------------------------------------------------


class _TenantRole(BasePermission):
    minimum = VIEWER

    def required_role(self, request) -> str:
        return self.minimum

    def has_permission(self, request, view) -> bool:
        if not (request.user and request.user.is_authenticated):
            return False  # DRF answers 401 / 403 for the anonymous
        access = tenant_access_for(request)
        view.access = access
        view.tenant = access.tenant
        if not access.has_role(self.required_role(request)):
            self.message = (
                f"This needs the {self.required_role(request)} role (you are {access.role})."
            )
            return False
        return True


class CanRead(_TenantRole):
    """Any member of the tenant: viewer, admin or owner (admin tokens: admin)."""

    minimum = VIEWER


class CanWrite(_TenantRole):
    """Admin or owner, whatever the method."""

    minimum = ADMIN


class IsOwner(_TenantRole):
    """Owners only (members and the audit log); staff act as owners."""

    minimum = OWNER


class ReadOrWrite(_TenantRole):
    """Viewers may read (GET, HEAD, OPTIONS); writing needs admin."""

    def required_role(self, request) -> str:
        return VIEWER if request.method in SAFE_METHODS else ADMIN


class EveryProject(BasePermission):
    """After a role class: tenant-wide data (alerts, webhooks) is not for a member narrowed
    to some projects (403, as require_every_project)."""

    message = "Tenant-wide settings need a role that sees every project (you see some)."

    def has_permission(self, request, view) -> bool:
        return view.access.sees_every_project


class ManagesKeys(_TenantRole):
    """Members read keys; writing needs the tenant's admin role or a project's (which
    project is the view's to check, with ``require_project_key_manager``)."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        if request.method in SAFE_METHODS or view.access.can_manage_some_keys:
            return True
        self.message = f"This needs the admin role (you are {view.access.role})."
        return False


class ManagesAdminTokens(_TenantRole):
    """Members read the token list; creating and revoking is ``can_manage_admin_tokens``."""

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        if request.method in SAFE_METHODS or can_manage_admin_tokens(view.access):
            return True
        self.message = "Only owners create and revoke admin tokens."
        return False


class IsStaff(BasePermission):
    """Platform operators (a staff user's session); never an admin token."""

    message = "Staff only."

    def has_permission(self, request, view) -> bool:
        if isinstance(getattr(request, "auth", None), AdminToken):
            return False
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)
