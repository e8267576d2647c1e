"""Write operations on inference keys. Every change reaches all gateway processes at once
through a Redis invalidation message published after the transaction commits, and is
recorded in the audit log (``actor``: the user or admin token acting; None = system)."""

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_changes, audit_record
from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.keys.hashing import secret_generate, secret_hash, secret_visible_prefix
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant


def _invalidate_on_commit(key_hash: str) -> None:
    transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, key_hash))


def _key_settings(api_key: ApiKey) -> dict:
    """What an audit event says about a key's settings (never its secret or hash)."""
    return {
        "name": api_key.name,
        "allowed_models": api_key.allowed_models,
        "expires_at": api_key.expires_at,
        "rpm": api_key.rpm,
        "tpm": api_key.tpm,
        "max_concurrent": api_key.max_concurrent,
        "budget_amount": api_key.budget_amount,
        "budget_period": api_key.budget_period,
    }


def _issue(
    *,
    tenant: Tenant,
    name: str,
    allowed_models: Iterable[str],
    expires_at: datetime | None,
    created_by,
    **fields,
) -> tuple[ApiKey, str]:
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


def _revoke(api_key: ApiKey) -> bool:
    """Revoke; True if the key was active until now."""
    changed = api_key.revoked_at is None
    if changed:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    _invalidate_on_commit(api_key.key_hash)
    return changed


def _user_or_none(actor):
    """The user to store as ``created_by`` (an admin token or label is not a user)."""
    actor = getattr(actor, "actor", actor)
    return (
        actor if getattr(actor, "is_authenticated", False) and getattr(actor, "pk", None) else None
    )


@transaction.atomic
def api_key_issue(
    *,
    tenant: Tenant,
    name: str,
    allowed_models: Iterable[str] = (),
    expires_at: datetime | None = None,
    created_by=None,
    actor=None,
    **fields,
) -> tuple[ApiKey, str]:
    """Create a key; the secret is returned once and never stored."""
    api_key, secret = _issue(
        tenant=tenant,
        name=name,
        allowed_models=allowed_models,
        expires_at=expires_at,
        created_by=created_by or _user_or_none(actor),
        **fields,
    )
    audit_record(
        tenant=tenant,
        actor=actor,
        action="key.issued",
        target=api_key,
        details=_key_settings(api_key),
    )
    return api_key, secret


@transaction.atomic
def api_key_revoke(*, api_key: ApiKey, actor=None) -> ApiKey:
    if _revoke(api_key):
        audit_record(
            tenant=api_key.tenant,
            actor=actor,
            action="key.revoked",
            target=api_key,
            details={"name": api_key.name},
        )
    return api_key


@transaction.atomic
def api_key_rotate(*, api_key: ApiKey, created_by=None, actor=None) -> tuple[ApiKey, str]:
    """Revoke the key and issue a new secret with the same name and settings."""
    _revoke(api_key)
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
    new_key, secret = _issue(
        tenant=api_key.tenant,
        name=api_key.name,
        allowed_models=api_key.allowed_models,
        expires_at=api_key.expires_at,
        created_by=created_by or _user_or_none(actor) or api_key.created_by,
        **copied,
    )
    audit_record(
        tenant=api_key.tenant,
        actor=actor,
        action="key.rotated",
        target=new_key,
        details={
            "name": api_key.name,
            "replaced_key_id": api_key.id,
            "replaced_prefix": api_key.prefix,
            "new_prefix": new_key.prefix,
        },
    )
    return new_key, secret


@transaction.atomic
def api_key_update(*, api_key: ApiKey, actor=None, **changes) -> ApiKey:
    diff = audit_changes(api_key, changes)
    for field, value in changes.items():
        setattr(api_key, field, value)
    api_key.save(update_fields=list(changes))
    _invalidate_on_commit(api_key.key_hash)
    if diff:
        audit_record(
            tenant=api_key.tenant,
            actor=actor,
            action="key.updated",
            target=api_key,
            details={"changes": diff},
        )
    return api_key
