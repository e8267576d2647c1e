from apps.keys.hashing import secret_hash
from apps.tenants.models import ADMIN_TOKEN_PREFIX, AdminToken, Tenant


def admin_token_get_active(*, secret: str) -> AdminToken | None:
    """The active (not revoked) admin token with this secret, or None."""
    if not secret.startswith(ADMIN_TOKEN_PREFIX) or len(secret) > 128:
        return None
    return (
        AdminToken.objects.select_related("tenant")
        .filter(key_hash=secret_hash(secret), revoked_at__isnull=True)
        .first()
    )


def tenant_get_by_name(*, name: str) -> Tenant | None:
    return Tenant.objects.filter(name=name).first()
