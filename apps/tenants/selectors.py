from apps.keys.hashing import secret_hash
from apps.tenants.models import ADMIN_TOKEN_PREFIX, AdminToken, Membership, Tenant


def admin_token_get_active(*, secret: str) -> AdminToken | None:
    """The active (not revoked) admin token with this secret, or None."""
    if not secret.startswith(ADMIN_TOKEN_PREFIX) or len(secret) > 128:
        return None
    return (
        AdminToken.objects.select_related("tenant", "created_by")
        .filter(key_hash=secret_hash(secret), revoked_at__isnull=True)
        .first()
    )


def tenant_get_by_name(*, name: str) -> Tenant | None:
    return Tenant.objects.filter(name=name).first()


def admin_token_list(*, tenant: Tenant):
    return AdminToken.objects.filter(tenant=tenant).order_by("-created_at", "-id")


def admin_token_get(*, tenant: Tenant, token_id: int) -> AdminToken | None:
    return AdminToken.objects.select_related("tenant").filter(tenant=tenant, id=token_id).first()


def admin_token_name_taken(*, tenant: Tenant, name: str) -> bool:
    return AdminToken.objects.filter(tenant=tenant, name=name, revoked_at__isnull=True).exists()


def membership_list(*, tenant: Tenant):
    return (
        Membership.objects.filter(tenant=tenant)
        .select_related("user", "tenant")
        .order_by("created_at", "id")
    )


def membership_get(*, tenant: Tenant, membership_id: int) -> Membership | None:
    return membership_list(tenant=tenant).filter(id=membership_id).first()


def tenant_list():
    return Tenant.objects.order_by("name")
