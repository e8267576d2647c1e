"""Tenants as config as code: the ``tenants`` section of a document that ``config_apply``
applies as no change (``python manage.py export``). Each tenant with its settings, its
default project's active keys under ``keys``, and every project (the default one too,
by its name) with its settings and keys.

Left out, because applying leaves them alone when absent: admin tokens (their secrets are
never shown again), rate cards, grants, project roles (users are not config as code) and
revoked keys. Backends and models are not exported (a backend's credential is never
shown). A budget period set without a budget amount cannot be said in the file (a budget
needs its amount): such a key or project exports as monthly.
"""

from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from apps.keys.models import ApiKey
from apps.projects.models import Project
from apps.projects.selectors import project_default_get
from apps.tenants.models import BillingMode, Tenant


def _amount(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if "." in text else text + ".00"


def _limits(row) -> dict[str, Any]:
    """rpm, tpm, max_concurrent and budget as the file says them (unset: left out)."""
    out: dict[str, Any] = {
        name: getattr(row, name)
        for name in ("rpm", "tpm", "max_concurrent")
        if getattr(row, name) is not None
    }
    if row.budget_amount is not None:
        out["budget"] = {"amount": _amount(row.budget_amount), "period": row.budget_period}
    return out


def _when(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _key(api_key: ApiKey) -> dict[str, Any]:
    out: dict[str, Any] = {"name": api_key.name, "models": list(api_key.allowed_models)}
    if api_key.expires_at is not None:
        out["expires_at"] = _when(api_key.expires_at)
    out.update(_limits(api_key))
    if api_key.content_policy:
        out["content_policy"] = api_key.content_policy
    if api_key.model_limits:
        out["model_limits"] = api_key.model_limits
    if api_key.default_tags:
        out["default_tags"] = api_key.default_tags
    return out


def _project(project: Project, keys: list[ApiKey]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": project.name}
    if project.display_name:
        out["display_name"] = project.display_name
    out["models"] = list(project.allowed_models)
    out.update(_limits(project))
    if project.model_limits:
        out["model_limits"] = project.model_limits
    if project.end_user_limits:
        out["end_user_limits"] = project.end_user_limits
    out["keys"] = [_key(k) for k in keys]
    return out


def _tenant(tenant: Tenant) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tenant.name}
    if tenant.display_name:
        out["display_name"] = tenant.display_name
    out.update(_limits(tenant))
    if tenant.content_policy:
        out["content_policy"] = tenant.content_policy
    if tenant.byok_allowed:
        out["byok"] = True
    if tenant.billing_mode != BillingMode.POSTPAID:
        out["billing_mode"] = tenant.billing_mode
    keys: dict[int, list[ApiKey]] = {}
    for api_key in (
        ApiKey.objects.filter(tenant=tenant, revoked_at__isnull=True).order_by("name").iterator()
    ):
        keys.setdefault(api_key.project_id, []).append(api_key)
    default = project_default_get(tenant_id=tenant.id)
    projects = list(Project.objects.for_tenant(tenant).order_by("-is_default", "name"))
    out["keys"] = [_key(k) for k in keys.get(default.id, [])]
    out["projects"] = [_project(p, [] if p.is_default else keys.get(p.id, [])) for p in projects]
    return out


def config_export(*, tenant_names: Sequence[str] = ()) -> dict[str, Any]:
    """``{"tenants": [...]}`` of the tenants named (none named: every tenant), by name."""
    tenants = Tenant.objects.order_by("name")
    if tenant_names:
        tenants = tenants.filter(name__in=tenant_names)
    return {"tenants": [_tenant(t) for t in tenants]}
