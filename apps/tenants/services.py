"""Write operations on tenants' admin tokens (management API credentials)."""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.keys.hashing import secret_generate, secret_hash, secret_visible_prefix
from apps.tenants.models import ADMIN_TOKEN_PREFIX, AdminToken, Tenant

# last_used_at is written at most this often per token (not on every API call).
LAST_USED_RESOLUTION = timedelta(minutes=1)


def admin_token_issue(*, tenant: Tenant, name: str) -> tuple[AdminToken, str]:
    """Create a token; the secret is returned once and never stored."""
    secret = secret_generate(ADMIN_TOKEN_PREFIX)
    token = AdminToken.objects.create(
        tenant=tenant,
        name=name,
        prefix=secret_visible_prefix(secret),
        key_hash=secret_hash(secret),
    )
    return token, secret


@transaction.atomic
def admin_token_revoke(*, admin_token: AdminToken) -> AdminToken:
    if admin_token.revoked_at is None:
        admin_token.revoked_at = timezone.now()
        admin_token.save(update_fields=["revoked_at"])
    return admin_token


def admin_token_mark_used(*, admin_token: AdminToken) -> None:
    now = timezone.now()
    last = admin_token.last_used_at
    if last is None or now - last >= LAST_USED_RESOLUTION:
        AdminToken.objects.filter(id=admin_token.id).update(last_used_at=now)
        admin_token.last_used_at = now
