"""Configuration as code: apply a YAML document of backends, models, prices, tenants, their
projects and keys, and tenants' rate cards.

Idempotent (a second run changes nothing) and all-or-nothing (one transaction; an
invalid document changes nothing and the error names the field).
"""

import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from django.db import transaction
from django.db.models import ProtectedError
from django.utils.dateparse import parse_date, parse_datetime

from apps.billing.models import RateCard, RateCardPrice
from apps.billing.pricing import (
    RULE_FIELDS,
    PriceRuleInvalid,
    markup_validate,
    rule_fields_validate,
)
from apps.catalog.models import MODEL_FALLBACK_FIELDS, Backend, Deployment, Model, Price, Strategy
from apps.catalog.services import FallbacksInvalid, model_fallbacks_clean
from apps.core.redis import KEYS_INVALIDATE_CHANNEL, publish
from apps.gateway.backends import backend_kinds
from apps.gateway.protocol.attribution import AttributionInvalid, tags_validate
from apps.gateway.protocol.session import (
    DEFAULT_AFFINITY_KEY,
    AffinityKeyInvalid,
    affinity_source_parse,
)
from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue, api_key_update
from apps.limits.blocks import LimitBlockInvalid, end_user_limits_validate, model_limits_validate
from apps.limits.fields import BudgetPeriod
from apps.moderation.policy import PolicyError
from apps.moderation.services import content_policy_clean
from apps.projects.models import Project
from apps.projects.selectors import project_default_get
from apps.projects.services import (
    PROJECT_NAME,
    ProjectError,
    project_create,
    project_fields_validate,
    project_update,
)
from apps.tenants.models import AdminToken, BillingMode, Tenant
from apps.tenants.services import admin_token_issue
from apps.wallet.services import BalanceError, balance_entry_add

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def expand_env(value: Any, path: str = "") -> Any:
    """Replace ${VAR} (or ${VAR:-default}) in every string with the environment's value."""
    if isinstance(value, str):

        def substitute(match: re.Match) -> str:
            name, default = match.group(1), match.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(path, f"environment variable {name} is not set")

        return _ENV_PATTERN.sub(substitute, value)
    if isinstance(value, list):
        return [expand_env(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: expand_env(v, f"{path}.{k}" if path else str(k)) for k, v in value.items()}
    return value


@dataclass
class ApplyResult:
    keys_created: list[dict[str, str]] = field(default_factory=list)
    admin_tokens_created: list[dict[str, str]] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)

    def as_output(self) -> dict[str, Any]:
        return {
            "keys_created": self.keys_created,
            "admin_tokens_created": self.admin_tokens_created,
        }


class _Doc:
    """Typed accessors that name the offending field."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ConfigError(path or "(document)", "must be a mapping")
        self.data = data
        self.path = path

    def sub(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def check_keys(self, allowed: set[str]) -> None:
        for name in self.data:
            if name not in allowed:
                raise ConfigError(
                    self.sub(str(name)), f"unknown field (allowed: {sorted(allowed)})"
                )

    def text(self, name: str, *, required: bool = True, default: str | None = None) -> str | None:
        value = self.data.get(name, default)
        if value is None:
            if required:
                raise ConfigError(self.sub(name), "is required")
            return None
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(self.sub(name), "must be a string")
        return str(value)

    def number(self, name: str, default: float | None = None, *, integer: bool = False):
        value = self.data.get(name, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(self.sub(name), "must be a number")
        if integer and not float(value).is_integer():
            raise ConfigError(self.sub(name), "must be an integer")
        if value < 0:
            raise ConfigError(self.sub(name), "must not be negative")
        return int(value) if integer else float(value)

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name, default)
        if not isinstance(value, bool):
            raise ConfigError(self.sub(name), "must be true or false")
        return value

    def decimal(self, name: str) -> Decimal:
        value = self.data.get(name)
        if value is None:
            raise ConfigError(self.sub(name), "is required")
        if isinstance(value, float):
            raise ConfigError(self.sub(name), 'write money as a quoted string, e.g. "0.10"')
        try:
            result = Decimal(str(value))
        except InvalidOperation:
            raise ConfigError(self.sub(name), "must be a decimal number") from None
        if not result.is_finite() or result < 0:
            raise ConfigError(self.sub(name), "must be a non-negative decimal number")
        return result

    def seq(self, name: str) -> list[Any]:
        value = self.data.get(name) or []
        if not isinstance(value, list):
            raise ConfigError(self.sub(name), "must be a list")
        return value

    def str_list(self, name: str) -> list[str]:
        values = self.seq(name)
        for i, v in enumerate(values):
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{self.sub(name)}[{i}]", "must be a non-empty string")
        return values

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.data.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(self.sub(name), "must be a mapping")
        return value

    def when(self, name: str, *, required: bool = True) -> datetime | None:
        raw = self.data.get(name)
        if raw is None:
            if required:
                raise ConfigError(self.sub(name), "is required")
            return None
        if isinstance(raw, datetime):
            return raw if raw.tzinfo else raw.replace(tzinfo=UTC)
        text = str(raw)
        parsed = parse_datetime(text)
        if parsed is None:
            day = parse_date(text)
            if day is None:
                raise ConfigError(self.sub(name), "must be a date (YYYY-MM-DD) or datetime")
            parsed = datetime(day.year, day.month, day.day)
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _set_fields(instance, values: dict[str, Any]) -> bool:
    changed = False
    for name, value in values.items():
        if getattr(instance, name) != value:
            setattr(instance, name, value)
            changed = True
    return changed


# Extension points: later features register extra fields for keys and tenants here.
KEY_FIELD_HANDLERS: dict[str, Any] = {}
TENANT_FIELD_HANDLERS: dict[str, Any] = {}


def _content_policy_values(doc: _Doc, name: str) -> dict[str, Any]:
    """content_policy: {<category>: {prompt, completion, threshold}}; absent = {} (off on a
    tenant, the tenant's on a key). Stored in its normal form, so a re-apply changes nothing."""
    try:
        return {"content_policy": content_policy_clean(policy=doc.data.get(name))}
    except PolicyError as exc:
        path = f"{doc.sub(name)}.{exc.path}" if exc.path else doc.sub(name)
        raise ConfigError(path, exc.message) from None


KEY_FIELD_HANDLERS["content_policy"] = _content_policy_values
TENANT_FIELD_HANDLERS["content_policy"] = _content_policy_values


def _key_model_limits_values(doc: _Doc, name: str) -> dict[str, Any]:
    """model_limits: {<model>: {rpm, tpm, max_concurrent, budget: {amount, period}}} on
    this key alone (each a model of the catalog); absent = none."""
    known = frozenset(Model.objects.values_list("name", flat=True))
    try:
        limits = model_limits_validate(doc.data.get(name), field=doc.sub(name), known_models=known)
    except LimitBlockInvalid as exc:
        raise ConfigError(exc.field, exc.message) from None
    return {"model_limits": limits}


def _key_default_tags_values(doc: _Doc, name: str) -> dict[str, Any]:
    """default_tags: {<key>: <value>}, the tags of every request of the key (a request's
    own tags win for a key both name); absent = none."""
    try:
        return {"default_tags": tags_validate(doc.data.get(name), doc.sub(name))}
    except AttributionInvalid as exc:
        raise ConfigError(exc.param, exc.message) from None


KEY_FIELD_HANDLERS["model_limits"] = _key_model_limits_values
KEY_FIELD_HANDLERS["default_tags"] = _key_default_tags_values


def _byok_values(doc: _Doc, name: str) -> dict[str, Any]:
    """byok: true lets the tenant's callers send their own upstream key; absent = off."""
    return {"byok_allowed": doc.flag(name, False)}


TENANT_FIELD_HANDLERS["byok"] = _byok_values


def _billing_mode_values(doc: _Doc, name: str) -> dict[str, Any]:
    """billing_mode: postpaid (monthly statements, the default) or prepaid (a balance)."""
    mode = doc.text(name, default=BillingMode.POSTPAID)
    if mode not in BillingMode.values:
        raise ConfigError(doc.sub(name), f"must be one of {BillingMode.values}")
    return {"billing_mode": mode}


TENANT_FIELD_HANDLERS["billing_mode"] = _billing_mode_values


def _apply_grants(tenant: Tenant, doc: _Doc, result: ApplyResult) -> None:
    """grants: [{ref, amount, reason}]: each credited once per ref (a re-apply, or the same
    ref with another amount, changes nothing; a correction is a new ref)."""
    for i, raw in enumerate(doc.seq("grants")):
        grant = _Doc(raw, f"{doc.sub('grants')}[{i}]")
        grant.check_keys({"ref", "amount", "reason"})
        ref = grant.text("ref")
        amount = grant.decimal("amount")
        reason = grant.text("reason", required=False) or ""
        try:
            _entry, created = balance_entry_add(
                tenant=tenant, kind="grant", amount=amount, ref=ref, reason=reason
            )
        except BalanceError as exc:
            raise ConfigError(grant.sub(exc.field), exc.message) from None
        if created:
            result.changes.append(f"grant {tenant.name}/{ref} of {amount} credited")


# A backend's deadlines (seconds): field → (default, least, most); first_byte_timeout_s
# absent = none (only timeout_s, the overall deadline).
BACKEND_DEADLINES = {
    "timeout_s": (60.0, 0.001, 3600.0),
    "connect_timeout_s": (5.0, 0.001, 600.0),
    "first_byte_timeout_s": (None, 0.001, 3600.0),
}


def _backend_deadlines(doc: _Doc) -> dict[str, float | None]:
    values = {}
    for name, (default, least, most) in BACKEND_DEADLINES.items():
        value = doc.number(name, default)
        if value is not None and not least <= value <= most:
            raise ConfigError(doc.sub(name), f"must be between {least:g} and {most:g} seconds")
        values[name] = value
    return values


def _backend_breaker(doc: _Doc) -> dict[str, float | int]:
    """breaker: {failures: 3, cooldown_s: 30}: consecutive failures that open it, and
    the seconds it rests the backend before one probe; absent = those defaults."""
    breaker = _Doc(doc.mapping("breaker"), doc.sub("breaker"))
    breaker.check_keys({"failures", "cooldown_s"})
    failures = breaker.number("failures", 3, integer=True)
    if not 1 <= failures <= 1000:
        raise ConfigError(breaker.sub("failures"), "must be between 1 and 1000")
    cooldown = breaker.number("cooldown_s", 30.0)
    if not 0.1 <= cooldown <= 3600:
        raise ConfigError(breaker.sub("cooldown_s"), "must be between 0.1 and 3600 seconds")
    return {"breaker_failures": failures, "breaker_cooldown_s": cooldown}


def _apply_backends(items: list, result: ApplyResult) -> dict[str, Backend]:
    backends = {b.name: b for b in Backend.objects.all()}
    for i, raw in enumerate(items):
        doc = _Doc(raw, f"backends[{i}]")
        doc.check_keys(
            {
                "name",
                "kind",
                "base_url",
                "api_key",
                "timeout_s",
                "connect_timeout_s",
                "first_byte_timeout_s",
                "breaker",
                "extra_headers",
                "reports_stop_sequence",
                "byok",
                "enabled",
            }
        )
        name = doc.text("name")
        kind = doc.text("kind", default="openai")
        if kind not in backend_kinds():
            raise ConfigError(doc.sub("kind"), f"must be one of {list(backend_kinds())}")
        base_url = doc.text("base_url")
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(doc.sub("base_url"), "must be an http(s) URL")
        headers = doc.mapping("extra_headers")
        values = {
            "kind": kind,
            "base_url": base_url.rstrip("/"),
            **_backend_deadlines(doc),
            **_backend_breaker(doc),
            "extra_headers": {str(k): str(v) for k, v in headers.items()},
            "reports_stop_sequence": doc.flag("reports_stop_sequence", False),
            "byok_allowed": doc.flag("byok", False),
            "enabled": bool(doc.data.get("enabled", True)),
        }
        api_key = doc.text("api_key", required=False) or ""
        backend = backends.get(name)
        if backend is None:
            backend = Backend(name=name, **values)
            backend.credential = api_key
            backend.save()
            result.changes.append(f"backend {name} created")
        else:
            changed = _set_fields(backend, values)
            if backend.credential != api_key:
                backend.credential = api_key
                changed = True
            if changed:
                backend.save()
                result.changes.append(f"backend {name} updated")
        backends[name] = backend
    return backends


# Budget bounds of a model (apps/catalog/models.py): field → (default, least allowed).
MODEL_BOUNDS = {
    "prompt_allowance_per_request": (512, 0),
    "prompt_allowance_per_message": (32, 0),
    "image_token_bound": (4096, 0),
    "max_output_tokens": (4096, 1),
}
_MAX_BOUND = 2**31 - 1


def _model_bounds(doc: _Doc) -> dict[str, int]:
    """Absent = the default, so removing a field from the file restores it."""
    values = {}
    for name, (default, least) in MODEL_BOUNDS.items():
        value = doc.number(name, default, integer=True)
        if not least <= value <= _MAX_BOUND:
            raise ConfigError(doc.sub(name), f"must be between {least} and {_MAX_BOUND}")
        values[name] = value
    return values


def _model_balancing(doc: _Doc) -> dict[str, str]:
    """strategy (weighted, the default) and affinity_key (prompt_cache_key, the default);
    absent = the default, so removing a field from the file restores it."""
    strategy = doc.text("strategy", default=Strategy.WEIGHTED)
    if strategy not in Strategy.values:
        raise ConfigError(doc.sub("strategy"), f"must be one of {', '.join(Strategy.values)}")
    affinity_key = doc.data.get("affinity_key", DEFAULT_AFFINITY_KEY)
    try:
        source = affinity_source_parse(affinity_key)
    except AffinityKeyInvalid as exc:
        raise ConfigError(doc.sub("affinity_key"), str(exc)) from None
    return {"strategy": strategy, "affinity_key": source.setting}


def _apply_models(items: list, backends: dict[str, Backend], result: ApplyResult) -> None:
    applied: list[tuple[Model, _Doc]] = []
    for i, raw in enumerate(items):
        doc = _Doc(raw, f"models[{i}]")
        doc.check_keys(
            {
                "name",
                "aliases",
                "display_name",
                "deployments",
                "prices",
                "enabled",
                *MODEL_BOUNDS,
                *MODEL_FALLBACK_FIELDS,
                "strategy",
                "affinity_key",
            }
        )
        name = doc.text("name")
        values = {
            "aliases": doc.str_list("aliases"),
            "display_name": doc.text("display_name", required=False) or "",
            "enabled": bool(doc.data.get("enabled", True)),
            **_model_bounds(doc),
            **_model_balancing(doc),
        }
        model, created = Model.objects.get_or_create(name=name, defaults=values)
        if created:
            result.changes.append(f"model {name} created")
        elif _set_fields(model, values):
            model.save()
            result.changes.append(f"model {name} updated")
        applied.append((model, doc))
        wanted = set()
        for j, raw_dep in enumerate(doc.seq("deployments")):
            dep = _Doc(raw_dep, f"{doc.path}.deployments[{j}]")
            dep.check_keys({"backend", "upstream_model", "weight"})
            backend_name = dep.text("backend")
            if backend_name not in backends:
                raise ConfigError(dep.sub("backend"), f"unknown backend '{backend_name}'")
            upstream_model = dep.text("upstream_model")
            weight = dep.number("weight", 1, integer=True)
            deployment, created = Deployment.objects.get_or_create(
                model=model,
                backend=backends[backend_name],
                upstream_model=upstream_model,
                defaults={"weight": weight},
            )
            if not created and deployment.weight != weight:
                deployment.weight = weight
                deployment.save(update_fields=["weight"])
                result.changes.append(f"deployment {deployment} updated")
            elif created:
                result.changes.append(f"deployment {deployment} created")
            wanted.add(deployment.id)
        stale = model.deployments.exclude(id__in=wanted)
        if stale.exists():
            result.changes.append(f"model {name}: {stale.count()} deployments removed")
            stale.delete()
        for j, raw_price in enumerate(doc.seq("prices")):
            price_doc = _Doc(raw_price, f"{doc.path}.prices[{j}]")
            price_doc.check_keys({"effective_from", *RULE_FIELDS})
            effective_from = price_doc.when("effective_from")
            values = _rule_values(price_doc)
            price = Price.objects.filter(model=model, effective_from=effective_from).first()
            if price is None:
                Price.objects.create(model=model, effective_from=effective_from, **values)
                result.changes.append(f"price of {name} from {effective_from:%Y-%m-%d} created")
            elif _set_fields(price, values):
                price.save()
                result.changes.append(f"price of {name} from {effective_from:%Y-%m-%d} updated")
    _apply_fallbacks(applied, result)


def _apply_fallbacks(applied: list[tuple[Model, _Doc]], result: ApplyResult) -> None:
    """fallbacks / context_window_fallbacks: [model, …], once every model of the document
    exists (a model may fall back on one defined after it); absent = none."""
    known = set(Model.objects.values_list("name", flat=True))
    for model, doc in applied:
        values = {}
        for name in MODEL_FALLBACK_FIELDS:
            try:
                values[name] = model_fallbacks_clean(
                    model_name=model.name, field=name, value=doc.data.get(name), known=known
                )
            except FallbacksInvalid as exc:
                raise ConfigError(doc.sub(name), exc.message) from None
        if _set_fields(model, values):
            model.save(update_fields=list(MODEL_FALLBACK_FIELDS))
            result.changes.append(f"model {model.name}: fallbacks updated")


def _rule_values(doc: _Doc) -> dict[str, Any]:
    """A price rule's fields (apps/billing/pricing.py), checked and normalised; an error
    names the document path and the field, dotted inside tiers
    (``models[0].prices[1].tiers[0].input_per_mtok``)."""
    try:
        return rule_fields_validate({k: v for k, v in doc.data.items() if k in RULE_FIELDS})
    except PriceRuleInvalid as exc:
        raise ConfigError(doc.sub(exc.field), exc.message) from None


LIMIT_FIELDS = {"rpm", "tpm", "max_concurrent", "budget"}


def _limit_values(doc: _Doc) -> dict[str, Any]:
    """rpm, tpm, max_concurrent and budget: {amount: "5.00", period: monthly}; absent = none."""
    values: dict[str, Any] = {
        name: doc.number(name, integer=True) for name in ("rpm", "tpm", "max_concurrent")
    }
    budget = doc.data.get("budget")
    if budget is None:
        values.update(budget_amount=None, budget_period=BudgetPeriod.MONTHLY)
        return values
    budget_doc = _Doc(budget, doc.sub("budget"))
    budget_doc.check_keys({"amount", "period"})
    period = budget_doc.text("period", default=BudgetPeriod.MONTHLY)
    if period not in BudgetPeriod.values:
        raise ConfigError(budget_doc.sub("period"), f"must be one of {BudgetPeriod.values}")
    values.update(budget_amount=budget_doc.decimal("amount"), budget_period=period)
    return values


def _apply_keys(
    tenant: Tenant, doc: _Doc, result: ApplyResult, project: Project, seen: dict[str, str]
) -> None:
    """The keys listed in ``doc`` (a tenant: its default project's; a project: its own),
    created, updated, or moved into ``project``. ``seen``: key name -> the path that listed
    it, across the tenant (a key is in one project)."""
    for j, raw_key in enumerate(doc.seq("keys")):
        key_doc = _Doc(raw_key, f"{doc.path}.keys[{j}]")
        key_doc.check_keys({"name", "models", "expires_at", *LIMIT_FIELDS, *KEY_FIELD_HANDLERS})
        name = key_doc.text("name")
        if name in seen:
            raise ConfigError(key_doc.sub("name"), f"key '{name}' is also listed at {seen[name]}")
        seen[name] = key_doc.path
        allowed = key_doc.str_list("models")
        for k, model_name in enumerate(allowed):
            if model_name != "*" and not Model.objects.filter(name=model_name).exists():
                raise ConfigError(f"{key_doc.sub('models')}[{k}]", f"unknown model '{model_name}'")
        values: dict[str, Any] = {
            "project": project,
            "allowed_models": allowed,
            "expires_at": key_doc.when("expires_at", required=False),
            **_limit_values(key_doc),
        }
        for field_name, handler in KEY_FIELD_HANDLERS.items():
            values.update(handler(key_doc, field_name))
        api_key = ApiKey.objects.filter(tenant=tenant, name=name, revoked_at__isnull=True).first()
        if api_key is None:
            api_key, secret = api_key_issue(tenant=tenant, name=name, **values)
            result.keys_created.append(
                {"tenant": tenant.name, "project": project.name, "name": name, "secret": secret}
            )
            result.changes.append(f"key {tenant.name}/{name} created")
        else:
            changes = {k: v for k, v in values.items() if getattr(api_key, k) != v}
            if changes:
                api_key_update(api_key=api_key, **changes)
                result.changes.append(f"key {tenant.name}/{name} updated")


PROJECT_KEYS = {
    "name",
    "display_name",
    "models",
    "model_limits",
    "end_user_limits",
    "keys",
    *LIMIT_FIELDS,
}


def _project_values(doc: _Doc) -> dict[str, Any]:
    """A project's settings as the file says them, in their stored form; anything absent
    is unset (no limit; ``models`` absent: every model)."""
    values: dict[str, Any] = {
        "display_name": doc.text("display_name", required=False) or "",
        "allowed_models": doc.str_list("models") if "models" in doc.data else ["*"],
        **_limit_values(doc),
    }
    try:
        values["model_limits"] = model_limits_validate(
            doc.data.get("model_limits"), field=doc.sub("model_limits")
        )
        values["end_user_limits"] = end_user_limits_validate(
            doc.data.get("end_user_limits"), field=doc.sub("end_user_limits")
        )
    except LimitBlockInvalid as exc:
        raise ConfigError(exc.field, exc.message) from None
    try:
        return project_fields_validate(values)
    except ProjectError as exc:
        field = {"allowed_models": "models"}.get(exc.field, exc.field)
        if field.startswith("allowed_models["):
            field = "models" + field.removeprefix("allowed_models")
        elif field in ("budget_amount", "budget_period"):
            field = "budget." + field.removeprefix("budget_")
        raise ConfigError(doc.sub(field), exc.message) from None


def _apply_projects(tenant: Tenant, doc: _Doc, result: ApplyResult) -> None:
    """A tenant's keys (into its default project) and ``projects: [{name, models, rpm,
    tpm, max_concurrent, budget, model_limits, end_user_limits, keys}]``: each created, or
    updated to what the file says; a project named like the default configures it.
    Projects the file does not name are left alone."""
    seen_keys: dict[str, str] = {}
    _apply_keys(tenant, doc, result, project_default_get(tenant_id=tenant.id), seen_keys)
    seen: dict[str, str] = {}
    for i, raw in enumerate(doc.seq("projects")):
        project_doc = _Doc(raw, f"{doc.sub('projects')}[{i}]")
        project_doc.check_keys(PROJECT_KEYS)
        name = project_doc.text("name")
        if not PROJECT_NAME.match(name):
            raise ConfigError(project_doc.sub("name"), "use 1 to 64 letters, digits, '-' and '_'")
        if name in seen:
            raise ConfigError(project_doc.sub("name"), f"project '{name}' is also at {seen[name]}")
        seen[name] = project_doc.path
        values = _project_values(project_doc)
        project = Project.objects.filter(tenant=tenant, name=name).first()
        if project is None:
            project = project_create(tenant=tenant, name=name, **values)
            result.changes.append(f"project {tenant.name}/{name} created")
        else:
            changes = {k: v for k, v in values.items() if getattr(project, k) != v}
            if changes:
                project_update(project=project, **changes)
                result.changes.append(f"project {tenant.name}/{name} updated")
        _apply_keys(tenant, project_doc, result, project, seen_keys)


def _apply_admin_tokens(tenant: Tenant, doc: _Doc, result: ApplyResult) -> None:
    """Management API tokens: created when no active token has the name (secret printed once);
    tokens not listed are left alone (revoke them from the dashboard or admin)."""
    seen: set[str] = set()
    for j, raw_token in enumerate(doc.seq("admin_tokens")):
        token_doc = _Doc(raw_token, f"{doc.path}.admin_tokens[{j}]")
        token_doc.check_keys({"name"})
        name = token_doc.text("name")
        if not name.strip() or len(name) > 100:
            raise ConfigError(token_doc.sub("name"), "must be 1 to 100 characters")
        if name in seen:
            raise ConfigError(token_doc.sub("name"), f"duplicate admin token '{name}'")
        seen.add(name)
        if AdminToken.objects.filter(tenant=tenant, name=name, revoked_at__isnull=True).exists():
            continue
        _token, secret = admin_token_issue(tenant=tenant, name=name)
        result.admin_tokens_created.append({"tenant": tenant.name, "name": name, "secret": secret})
        result.changes.append(f"admin token {tenant.name}/{name} created")


def _rate_card_docs(doc: _Doc) -> list[_Doc]:
    """``rate_card: {…}`` (one version) and/or ``rate_cards: [{…}, …]``."""
    docs = []
    if doc.data.get("rate_card") is not None:
        docs.append(_Doc(doc.data["rate_card"], doc.sub("rate_card")))
    for j, raw in enumerate(doc.seq("rate_cards")):
        docs.append(_Doc(raw, f"{doc.sub('rate_cards')}[{j}]"))
    return docs


def _apply_rate_cards(tenant: Tenant, doc: _Doc, result: ApplyResult) -> None:
    """A tenant's rate card versions, as prices: the version from ``effective_from`` is
    created, or updated in place (markup and its model overrides as the file says them);
    versions the file does not name are left alone."""
    seen: set[datetime] = set()
    for card_doc in _rate_card_docs(doc):
        card_doc.check_keys({"effective_from", "markup_percent", "models"})
        effective_from = card_doc.when("effective_from")
        if effective_from in seen:
            raise ConfigError(card_doc.sub("effective_from"), "two rate cards from this time")
        seen.add(effective_from)
        try:
            markup = markup_validate(card_doc.data.get("markup_percent"))
        except PriceRuleInvalid as exc:
            raise ConfigError(card_doc.sub(exc.field), exc.message) from None
        models_doc = _Doc(card_doc.mapping("models"), card_doc.sub("models"))
        overrides: dict[Model, dict[str, Any]] = {}
        for model_name, raw_rule in models_doc.data.items():
            rule_doc = _Doc(raw_rule, models_doc.sub(str(model_name)))
            model = Model.objects.filter(name=str(model_name)).first()
            if model is None:
                raise ConfigError(rule_doc.path, f"unknown model '{model_name}'")
            rule_doc.check_keys(set(RULE_FIELDS))
            overrides[model] = _rule_values(rule_doc)
        label = f"rate card of {tenant.name} from {effective_from:%Y-%m-%d %H:%M}"
        card, created = RateCard.objects.get_or_create(
            tenant=tenant, effective_from=effective_from, defaults={"markup_percent": markup}
        )
        changed = created
        if not created and card.markup_percent != markup:
            card.markup_percent = markup
            card.save(update_fields=["markup_percent"])
            changed = True
        existing = {p.model_id: p for p in card.prices.all()}
        for model, values in overrides.items():
            override = existing.pop(model.id, None)
            if override is None:
                RateCardPrice.objects.create(rate_card=card, model=model, **values)
                changed = True
            elif _set_fields(override, values):
                override.save()
                changed = True
        for override in existing.values():
            try:
                with transaction.atomic():
                    override.delete()
            except ProtectedError:
                raise ConfigError(
                    models_doc.sub(override.model.name),
                    "billed requests were priced by this override: it cannot be removed "
                    "(add a new rate card version instead)",
                ) from None
            changed = True
        if changed:
            result.changes.append(f"{label} {'created' if created else 'updated'}")


def _apply_tenants(items: list, result: ApplyResult) -> None:
    for i, raw in enumerate(items):
        doc = _Doc(raw, f"tenants[{i}]")
        doc.check_keys(
            {
                "name",
                "display_name",
                "keys",
                "projects",
                "admin_tokens",
                "rate_card",
                "rate_cards",
                "grants",
                *LIMIT_FIELDS,
                *TENANT_FIELD_HANDLERS,
            }
        )
        name = doc.text("name")
        if not re.fullmatch(r"[-a-zA-Z0-9_]+", name):
            raise ConfigError(doc.sub("name"), "use letters, digits, '-' and '_' only")
        values: dict[str, Any] = {
            "display_name": doc.text("display_name", required=False) or "",
            **_limit_values(doc),
        }
        for field_name, handler in TENANT_FIELD_HANDLERS.items():
            values.update(handler(doc, field_name))
        tenant, created = Tenant.objects.get_or_create(name=name, defaults=values)
        if created:
            result.changes.append(f"tenant {name} created")
        elif _set_fields(tenant, values):
            tenant.save()
            result.changes.append(f"tenant {name} updated")
            # Keys carry their tenant's limits in every gateway's cache.
            transaction.on_commit(lambda: publish(KEYS_INVALIDATE_CHANNEL, "*"))
        _apply_projects(tenant, doc, result)
        _apply_admin_tokens(tenant, doc, result)
        _apply_rate_cards(tenant, doc, result)
        _apply_grants(tenant, doc, result)


@transaction.atomic
def config_apply(*, document: Any) -> ApplyResult:
    root = _Doc(document if document is not None else {}, "")
    root.check_keys({"backends", "models", "tenants"})
    data = expand_env(root.data)
    root = _Doc(data, "")
    result = ApplyResult()
    backends = _apply_backends(root.seq("backends"), result)
    _apply_models(root.seq("models"), backends, result)
    _apply_tenants(root.seq("tenants"), result)
    if result.changes:
        from apps.catalog.services import catalog_invalidate

        catalog_invalidate()
    return result
