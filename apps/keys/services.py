"""Write operations on inference keys. Every change reaches all gateway processes at once
through a Redis invalidation message published after the transaction commits."""

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.keys.hashing import secret_generate, secret_hash, secret_visible_prefix
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant


def _invalidate_on_commit(key_hash: str) -> None:
    transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, key_hash))


def api_key_issue(
    *,
    tenant: Tenant,
    name: str,
    allowed_models: Iterable[str] = (),
    expires_at: datetime | None = None,
    created_by=None,
    **fields,
) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned once and never stored."""
    secret = secret_generate()
    api_key = ApiKey.objects.create(
        tenant=tenant,
        name=name,
        prefix=secret_visible_prefix(secret),
        key_hash=secret_hash(secret),
        allowed_models=list(allowed_models),
        expires_at=expires_at,
        created_by=created_by,
        **fields,
    )
    # A process may have cached "unknown key" for this hash.
    _invalidate_on_commit(api_key.key_hash)
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    _invalidate_on_commit(api_key.key_hash)
    return api_key


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, created_by=None) -> tuple[ApiKey, str]:
    """Revoke the key and issue a new secret with the same name and settings."""
    api_key_revoke(api_key=api_key)
    copied = {
        f.name: getattr(api_key, f.name)
        for f in ApiKey._meta.concrete_fields
        if f.name
        not in {
            "id",
            "tenant",
            "name",
            "prefix",
            "key_hash",
            "allowed_models",
            "expires_at",
            "revoked_at",
            "created_by",
            "created_at",
            "last_used_at",
        }
    }
    return api_key_issue(
        tenant=api_key.tenant,
        name=api_key.name,
        allowed_models=api_key.allowed_models,
        expires_at=api_key.expires_at,
        created_by=created_by or api_key.created_by,
        **copied,
    )


@transaction.atomic
def api_key_update(*, api_key: ApiKey, **changes) -> ApiKey:
    for field, value in changes.items():
        setattr(api_key, field, value)
    api_key.save(update_fields=list(changes))
    _invalidate_on_commit(api_key.key_hash)
    return api_key
