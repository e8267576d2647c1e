"""Recording audit events. Called by every write service (keys, admin tokens, content
policies, memberships, tenant settings, the catalog) inside its own transaction, so an
event exists exactly when the change does."""

from collections.abc import Mapping
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models

from apps.audit.models import AuditEvent
from apps.tenants.models import AdminToken, Tenant

# Field names whose values never go into the log, at any depth of ``details``.
SECRET_FIELDS = frozenset(
    {"secret", "password", "credential", "api_key", "key_hash", "token", "authorization"}
)
REDACTED = "[redacted]"

# Short, stable names for the objects the log talks about.
TARGET_TYPES = {
    "keys.apikey": "api_key",
    "tenants.admintoken": "admin_token",
    "tenants.membership": "membership",
    "tenants.tenant": "tenant",
    "catalog.backend": "backend",
    "catalog.model": "model",
    "catalog.deployment": "deployment",
    "catalog.price": "price",
    "billing.ratecard": "rate_card",
    "projects.project": "project",
}

Actor = AbstractBaseUser | AdminToken | str | None


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): REDACTED if str(k).lower() in SECRET_FIELDS else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(v) for v in value]
    return value


def actor_fields(actor: Any) -> dict[str, Any]:
    """The user / admin token columns and the display label of whoever acted.

    ``actor`` may be a user, an AdminToken, anything with an ``actor`` attribute (a
    TenantAccess), a plain label ("system"), or None (= "system")."""
    if actor is not None and hasattr(actor, "actor") and not isinstance(actor, models.Model):
        actor = actor.actor
    if isinstance(actor, AdminToken):
        return {
            "actor_token": actor,
            "actor_label": f"admin-token {actor.name} ({actor.prefix}…)"[:200],
        }
    if actor is None or isinstance(actor, AnonymousUser):
        return {"actor_label": "system"}
    if isinstance(actor, str):
        return {"actor_label": actor[:200] or "system"}
    if isinstance(actor, AbstractBaseUser) and actor.pk is not None:
        label = getattr(actor, "email", "") or actor.get_username()
        return {"actor_user": actor, "actor_label": str(label)[:200]}
    return {"actor_label": str(actor)[:200]}


def audit_record(
    *,
    tenant: Tenant | None,
    actor: Actor,
    action: str,
    target: models.Model | None = None,
    details: Mapping[str, Any] | None = None,
) -> AuditEvent:
    """Append one event. ``details`` says what changed (``{"rpm": {"from": 60, "to": 120}}``);
    any field named like a secret is replaced by "[redacted]" whatever the caller passed."""
    target_fields: dict[str, Any] = {}
    if target is not None:
        label = target._meta.label_lower
        target_fields = {
            "target_type": TARGET_TYPES.get(label, label),
            "target_id": str(target.pk or "")[:64],
            "target_label": str(target)[:200],
        }
    return AuditEvent.objects.create(
        tenant=tenant,
        action=action,
        details=_scrub(dict(details or {})),
        **actor_fields(actor),
        **target_fields,
    )


def audit_changes(instance: models.Model, changes: Mapping[str, Any]) -> dict[str, Any]:
    """``{field: {"from": old, "to": new}}`` for the fields whose value differs (call it
    before assigning the new values)."""
    diff = {}
    for name, new in changes.items():
        old = getattr(instance, name)
        if old != new:
            diff[name] = {"from": old, "to": new}
    return diff
