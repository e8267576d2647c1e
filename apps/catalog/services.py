from collections.abc import Collection
from typing import Any

from django.db import transaction

from apps.audit.services import audit_changes, audit_record
from apps.billing.pricing import RULE_FIELDS, rule_fields_validate
from apps.catalog.models import (
    BACKEND_SETTINGS,
    MODEL_FALLBACK_FIELDS,
    Backend,
    Deployment,
    Model,
    Price,
)
from apps.core.redis import CATALOG_INVALIDATE_CHANNEL, publish


def catalog_invalidate() -> None:
    """Tell every gateway process to reload the catalog once this transaction commits."""
    transaction.on_commit(lambda: publish(CATALOG_INVALIDATE_CHANNEL, "*"))


# Staff writes (management API). The catalog signals reload every gateway's catalog; each
# write is in the audit log as a platform-wide event (tenant NULL). Credentials are never
# logged: the audit only says whether one is set.

_BACKEND_FIELDS = frozenset(BACKEND_SETTINGS)
_MODEL_FIELDS = frozenset(
    {
        "name",
        "aliases",
        *MODEL_FALLBACK_FIELDS,
        "display_name",
        "enabled",
        "prompt_allowance_per_request",
        "prompt_allowance_per_message",
        "image_token_bound",
        "max_output_tokens",
        "strategy",
        "affinity_key",
    }
)
_DEPLOYMENT_FIELDS = frozenset({"model", "backend", "upstream_model", "weight"})


def _audit(actor, action: str, target, details: dict) -> None:
    audit_record(tenant=None, actor=actor, action=action, target=target, details=details)


def _check_fields(fields: dict, allowed: frozenset) -> None:
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"unknown fields: {sorted(unknown)}")


def _apply(instance, fields: dict) -> dict:
    diff = audit_changes(instance, fields)
    for name in diff:
        setattr(instance, name, fields[name])
    return diff


@transaction.atomic
def backend_create(*, actor=None, credential: str = "", **fields) -> Backend:
    _check_fields(fields, _BACKEND_FIELDS)
    backend = Backend(**fields)
    backend.credential = credential
    backend.save()
    _audit(actor, "backend.created", backend, {**fields, "credential_set": bool(credential)})
    return backend


@transaction.atomic
def backend_update(*, backend: Backend, actor=None, credential: str | None = None, **fields):
    """``credential``: None keeps it, "" clears it, anything else replaces it."""
    _check_fields(fields, _BACKEND_FIELDS)
    diff = _apply(backend, fields)
    if credential is not None and credential != backend.credential:
        backend.credential = credential
        diff["credential"] = "cleared" if not credential else "replaced"
    if diff:
        backend.save()
        _audit(actor, "backend.updated", backend, {"changes": diff})
    return backend


@transaction.atomic
def backend_delete(*, backend: Backend, actor=None) -> None:
    """Raises django.db.models.ProtectedError while deployments use the backend."""
    _audit(actor, "backend.deleted", backend, {"name": backend.name})
    backend.delete()


MAX_FALLBACKS = 8


class FallbacksInvalid(ValueError):
    """A model's ``fallbacks`` or ``context_window_fallbacks`` refused; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def model_fallbacks_clean(
    *, model_name: str, field: str, value: Any, known: Collection[str] | None = None
) -> list[str]:
    """``value`` as a model's fallback list: other models' names (not aliases), in order,
    none twice, at most MAX_FALLBACKS. ``known``: the model names that exist (None: the
    database's). Raises FallbacksInvalid naming ``field``."""
    if value is None:
        return []
    if not isinstance(value, list | tuple):
        raise FallbacksInvalid(field, "must be a list of model names")
    if len(value) > MAX_FALLBACKS:
        raise FallbacksInvalid(field, f"at most {MAX_FALLBACKS} models")
    names: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item or len(item) > 128:
            raise FallbacksInvalid(field, "must be a list of model names")
        if item == model_name:
            raise FallbacksInvalid(field, f"'{item}' is the model itself")
        if item in names:
            raise FallbacksInvalid(field, f"'{item}' is named twice")
        names.append(item)
    if known is None:
        known = set(Model.objects.filter(name__in=names).values_list("name", flat=True))
    for item in names:
        if item not in known:
            raise FallbacksInvalid(field, f"unknown model '{item[:128]}'")
    return names


def _clean_fallbacks(model_name: str, fields: dict) -> None:
    for name in MODEL_FALLBACK_FIELDS:
        if name in fields:
            fields[name] = model_fallbacks_clean(
                model_name=model_name, field=name, value=fields[name]
            )


@transaction.atomic
def model_create(*, actor=None, **fields) -> Model:
    """Raises FallbacksInvalid for a wrong fallback list."""
    _check_fields(fields, _MODEL_FIELDS)
    _clean_fallbacks(fields.get("name", ""), fields)
    model = Model.objects.create(**fields)
    _audit(actor, "model.created", model, fields)
    return model


@transaction.atomic
def model_update(*, model: Model, actor=None, **fields) -> Model:
    """Raises FallbacksInvalid for a wrong fallback list."""
    _check_fields(fields, _MODEL_FIELDS)
    _clean_fallbacks(fields.get("name", model.name), fields)
    diff = _apply(model, fields)
    if diff:
        model.save()
        _audit(actor, "model.updated", model, {"changes": diff})
    return model


@transaction.atomic
def deployment_create(*, actor=None, **fields) -> Deployment:
    _check_fields(fields, _DEPLOYMENT_FIELDS)
    deployment = Deployment.objects.create(**fields)
    _audit(
        actor,
        "deployment.created",
        deployment,
        {
            "model": deployment.model.name,
            "backend": deployment.backend.name,
            "upstream_model": deployment.upstream_model,
            "weight": deployment.weight,
        },
    )
    return deployment


@transaction.atomic
def deployment_update(*, deployment: Deployment, actor=None, **fields) -> Deployment:
    _check_fields(fields, _DEPLOYMENT_FIELDS)
    diff = _apply(deployment, fields)
    if diff:
        deployment.save()
        diff = {k: {"from": str(v["from"]), "to": str(v["to"])} for k, v in diff.items()}
        _audit(actor, "deployment.updated", deployment, {"changes": diff})
    return deployment


@transaction.atomic
def deployment_delete(*, deployment: Deployment, actor=None) -> None:
    _audit(actor, "deployment.deleted", deployment, {"deployment": str(deployment)})
    deployment.delete()


@transaction.atomic
def price_create(*, model: Model, effective_from, actor=None, **fields) -> Price:
    """Prices are append-only versions: a new version from ``effective_from`` on. Stored
    costs never change (each usage record keeps the price it was costed with).
    ``fields``: the rule's (apps/billing/pricing.py ``RULE_FIELDS``); raises
    ``PriceRuleInvalid`` naming a wrong one."""
    _check_fields(fields, frozenset(RULE_FIELDS))
    clean = rule_fields_validate(fields)
    price = Price.objects.create(model=model, effective_from=effective_from, **clean)
    _audit(
        actor,
        "price.created",
        price,
        {"model": model.name, "effective_from": price.effective_from, **clean},
    )
    return price
