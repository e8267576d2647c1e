"""Write operations on inference keys. Every change reaches all gateway processes at once
through a Redis invalidation message published after the transaction commits, and is
recorded in the audit log (``actor``: the user or admin token acting; None = system)."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_changes, audit_record
from apps.catalog.models import Model
from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.gateway.protocol.attribution import AttributionInvalid, tags_validate
from apps.keys.hashing import secret_generate, secret_hash, secret_visible_prefix
from apps.keys.models import ApiKey
from apps.limits.blocks import LimitBlockInvalid, model_limits_validate
from apps.tenants.models import Tenant

# Rotation grace: 0 = the old secret is refused at once; at most 7 days.
MAX_ROTATION_GRACE_SECONDS = 7 * 24 * 3600


class ApiKeyError(ValueError):
    """A refused change; ``field`` names the offending input (None: the key as a whole)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _invalidate_on_commit(*key_hashes: str) -> None:
    """Every gateway process drops its entries under these hashes once we commit."""

    def send() -> None:
        for key_hash in key_hashes:
            publish(KEYS_INVALIDATE_CHANNEL, key_hash)

    transaction.on_commit(send)


def _checked_fields(fields: dict) -> dict:
    """``model_limits`` and ``default_tags`` in their stored form; an ApiKeyError names
    the offending entry (``model_limits.gemma-270m.rpm``)."""
    try:
        if "model_limits" in fields:
            fields["model_limits"] = model_limits_validate(
                fields["model_limits"],
                known_models=frozenset(Model.objects.values_list("name", flat=True)),
            )
        if "default_tags" in fields:
            fields["default_tags"] = tags_validate(fields["default_tags"])
    except LimitBlockInvalid as exc:
        raise ApiKeyError(exc.field, exc.message) from None
    except AttributionInvalid as exc:
        raise ApiKeyError(exc.param, exc.message) from None
    return fields


def _rotation_grace(grace_seconds: object) -> timedelta:
    if isinstance(grace_seconds, bool) or not isinstance(grace_seconds, int):
        raise ApiKeyError("grace_seconds", "must be a whole number of seconds")
    if not 0 <= grace_seconds <= MAX_ROTATION_GRACE_SECONDS:
        raise ApiKeyError(
            "grace_seconds", f"must be between 0 and {MAX_ROTATION_GRACE_SECONDS} (7 days)"
        )
    return timedelta(seconds=grace_seconds)


def _key_settings(api_key: ApiKey) -> dict:
    """What an audit event says about a key's settings (never its secret or hash)."""
    return {
        "name": api_key.name,
        "project": api_key.project.name,
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
    fields = _checked_fields(fields)
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
    _invalidate_on_commit(*api_key.secret_hashes())
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
def api_key_rotate(*, api_key: ApiKey, grace_seconds: int = 0, actor=None) -> tuple[ApiKey, str]:
    """Issue a new secret for the same key: its id, settings, limit counters and usage
    history stay. The old secret keeps working for ``grace_seconds`` (0: refused at once,
    at most 7 days), in every gateway process without a message at the grace's end. One
    previous secret at a time: rotating again inside a grace ends the older one at once.
    Returns the key and its new secret (shown once, never stored)."""
    grace = _rotation_grace(grace_seconds)
    # Two rotations at once must not both keep the same old secret.
    api_key.refresh_from_db(from_queryset=ApiKey.objects.select_for_update())
    if api_key.revoked_at is not None:
        raise ApiKeyError(None, "a revoked key cannot be rotated")
    now = timezone.now()
    cached_under = api_key.secret_hashes()
    ended_early = api_key.previous_prefix if api_key.previous_secret_valid_until(now) else None
    old_prefix = api_key.prefix
    if grace:
        api_key.previous_key_hash = api_key.key_hash
        api_key.previous_prefix = api_key.prefix
        api_key.previous_valid_until = now + grace
    else:
        api_key.previous_key_hash = None
        api_key.previous_prefix = ""
        api_key.previous_valid_until = None
    secret = secret_generate()
    api_key.key_hash = secret_hash(secret)
    api_key.prefix = secret_visible_prefix(secret)
    api_key.save(
        update_fields=[
            "key_hash",
            "prefix",
            "previous_key_hash",
            "previous_prefix",
            "previous_valid_until",
        ]
    )
    # The old hashes' entries change; a process may have cached "unknown" for the new one.
    _invalidate_on_commit(*cached_under, api_key.key_hash)
    details = {
        "name": api_key.name,
        "previous_prefix": old_prefix,
        "new_prefix": api_key.prefix,
        "grace_seconds": grace_seconds,
        "previous_secret_valid_until": api_key.previous_valid_until,
    }
    if ended_early:
        details["ended_early_prefix"] = ended_early
    audit_record(
        tenant=api_key.tenant,
        actor=actor,
        action="key.rotated",
        target=api_key,
        details=details,
    )
    return api_key, secret


@transaction.atomic
def api_key_update(*, api_key: ApiKey, actor=None, **changes) -> ApiKey:
    changes = _checked_fields(changes)
    diff = audit_changes(api_key, changes)
    if "project" in diff:  # moved: the log names the projects
        diff["project"] = {k: project.name for k, project in diff["project"].items()}
    for field, value in changes.items():
        setattr(api_key, field, value)
    api_key.save(update_fields=list(changes))
    _invalidate_on_commit(*api_key.secret_hashes())
    if diff:
        audit_record(
            tenant=api_key.tenant,
            actor=actor,
            action="key.updated",
            target=api_key,
            details={"changes": diff},
        )
    return api_key
