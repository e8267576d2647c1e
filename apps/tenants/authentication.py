"""Management API (/api/) authentication and the caller's tenant.

Two kinds of callers: a tenant admin token (``Authorization: Bearer tga-…``), which is
bound to its tenant, and a Django user with a session (staff may name any tenant with
``?tenant=<name>``; other users see the tenants they are members of).
"""

from dataclasses import dataclass

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from apps.tenants.models import ADMIN_TOKEN_PREFIX, Tenant
from apps.tenants.selectors import admin_token_get_active
from apps.tenants.services import admin_token_mark_used


@dataclass(frozen=True)
class TenantPrincipal:
    """request.user for an admin-token caller: authenticated, never staff, one tenant."""

    tenant: Tenant
    token_name: str
    is_authenticated: bool = True
    is_active: bool = True
    is_staff: bool = False
    is_superuser: bool = False
    is_anonymous: bool = False

    @property
    def pk(self) -> None:
        return None

    def __str__(self) -> str:
        return f"admin-token {self.tenant.name}/{self.token_name}"


class AdminTokenAuthentication(BaseAuthentication):
    keyword = "bearer"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Send 'Authorization: Bearer tga-…'.")
        secret = parts[1].decode("latin-1")
        if not secret.startswith(ADMIN_TOKEN_PREFIX):
            raise exceptions.AuthenticationFailed(
                "The management API takes a tenant admin token (tga-…), not an inference key."
            )
        token = admin_token_get_active(secret=secret)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked admin token.")
        admin_token_mark_used(admin_token=token)
        return TenantPrincipal(tenant=token.tenant, token_name=token.name), token

    def authenticate_header(self, request) -> str:
        return 'Bearer realm="api"'


def tenant_for_request(request) -> Tenant:
    """The one tenant this request may read. Anything else is a 404, never another's data.
    (Resolved by apps.tenants.access, the one place that decides tenant and role.)"""
    from apps.tenants.access import tenant_access_for

    return tenant_access_for(request).tenant
