"""Content policies on tenants and keys: validation against the catalog, writes that reach
every gateway process (cache invalidation), and the effective policy a key is served with.

The policy format, defaults and merge rule are in apps/moderation/policy.py.
"""

from typing import Any

from django.db import transaction

from apps.audit.services import audit_record
from apps.catalog.models import Backend
from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.keys.models import ApiKey
from apps.moderation.policy import (
    EffectivePolicy,
    PolicyError,
    RemoteSpec,
    policy_clean,
    policy_compile,
    policy_merge,
)
from apps.tenants.models import Tenant


def content_policy_clean(*, policy: Any) -> dict[str, Any]:
    """The policy's normal form; PolicyError names the field (``hate.prompt: …``), also
    when ``moderation.backend`` names no Backend."""
    cleaned = policy_clean(policy)
    moderation = cleaned.get("moderation")
    if moderation and not Backend.objects.filter(name=moderation["backend"]).exists():
        raise PolicyError("moderation.backend", f"unknown backend '{moderation['backend']}'")
    return cleaned


@transaction.atomic
def content_policy_set(
    *, tenant: Tenant | None = None, api_key: ApiKey | None = None, policy: Any, actor=None
) -> dict[str, Any]:
    """Set the content policy of a tenant (the default of its keys) or of one key (its
    per-category override). Returns the stored normal form; caches are invalidated in
    every gateway process once the transaction commits."""
    if (tenant is None) == (api_key is None):
        raise ValueError("give exactly one of tenant or api_key")
    cleaned = content_policy_clean(policy=policy)
    target = tenant if tenant is not None else api_key
    if target.content_policy != cleaned:
        previous = target.content_policy
        target.content_policy = cleaned
        target.save(update_fields=["content_policy"])
        audit_record(
            tenant=tenant if tenant is not None else api_key.tenant,
            actor=actor,
            action="policy.changed",
            target=target,
            details={"from": previous, "to": cleaned},
        )
    # A tenant's policy is in every one of its keys' cache entries.
    messages = ["*"] if tenant is not None else api_key.secret_hashes()

    def send() -> None:
        for message in messages:
            publish(KEYS_INVALIDATE_CHANNEL, message)

    transaction.on_commit(send)
    return cleaned


def _remote_spec(moderation: dict[str, Any]) -> RemoteSpec | None:
    backend = Backend.objects.filter(name=moderation["backend"], enabled=True).first()
    if backend is None:
        return None  # removed or disabled since: the built-in detector serves
    headers = {str(k): str(v) for k, v in (backend.extra_headers or {}).items()}
    if backend.credential:
        headers["Authorization"] = f"Bearer {backend.credential}"
    return RemoteSpec(
        backend=backend.name,
        url=backend.base_url.rstrip("/") + "/moderations",
        headers=tuple(headers.items()),
        model=moderation["model"],
        timeout_s=float(moderation["timeout_s"]),
    )


def content_policy_effective(*, api_key: ApiKey) -> EffectivePolicy | None:
    """The compiled policy the gateway applies for this key (None: no filtering at all).

    Stored policies are re-validated: one that no longer validates (edited by hand in the
    database) applies the tenant's, or nothing, rather than failing every request."""
    try:
        tenant_policy = policy_clean(api_key.tenant.content_policy)
    except PolicyError:
        tenant_policy = {}
    try:
        key_policy = policy_clean(api_key.content_policy)
    except PolicyError:
        key_policy = {}
    merged = policy_merge(tenant_policy, key_policy)
    if not any(k != "moderation" for k in merged):
        return None
    moderation = merged.get("moderation")
    remote = _remote_spec(moderation) if moderation else None
    return policy_compile(merged, remote)
