from django.db import transaction

from apps.audit.services import audit_changes, audit_record
from apps.billing.pricing import RULE_FIELDS, rule_fields_validate
from apps.catalog.models import BACKEND_SETTINGS, Backend, Deployment, Model, Price
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


@transaction.atomic
def model_create(*, actor=None, **fields) -> Model:
    _check_fields(fields, _MODEL_FIELDS)
    model = Model.objects.create(**fields)
    _audit(actor, "model.created", model, fields)
    return model


@transaction.atomic
def model_update(*, model: Model, actor=None, **fields) -> Model:
    _check_fields(fields, _MODEL_FIELDS)
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
