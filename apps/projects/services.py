"""Write operations on projects and project memberships. Every change is checked here
(an error names the field), recorded in the audit log (``actor``: the user, admin token
or TenantAccess acting; None = system), and reaches every gateway process through the
project's signals (apps/projects/signals.py), which drop its keys from their caches."""

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import IntegrityError, transaction

from apps.audit.services import audit_changes, audit_record
from apps.catalog.models import Model
from apps.limits.blocks import (
    MAX_BUDGET,
    MAX_LIMIT,
    LimitBlockInvalid,
    end_user_limits_validate,
    model_limits_validate,
)
from apps.limits.fields import BudgetPeriod
from apps.projects.models import Project, ProjectMembership
from apps.projects.selectors import project_default_get
from apps.tenants.models import Membership, Tenant

PROJECT_NAME = re.compile(r"\A[-a-zA-Z0-9_]{1,64}\Z")
MAX_DISPLAY_NAME = 200
MAX_ALLOWED_MODELS = 500
# What project_create / project_update accept besides ``name``.
PROJECT_FIELDS = frozenset(
    {
        "display_name",
        "allowed_models",
        "rpm",
        "tpm",
        "max_concurrent",
        "budget_amount",
        "budget_period",
        "model_limits",
        "end_user_limits",
    }
)


class ProjectError(ValueError):
    """A refused change; ``field`` names the offending input (None: the project as a
    whole, e.g. deleting the default project)."""

    def __init__(self, field: str | None, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


def _known_models() -> frozenset[str]:
    """The tenant's models: every model of the catalog (tenants have no allowlist of
    their own; a project narrows the catalog, a key narrows its project)."""
    return frozenset(Model.objects.values_list("name", flat=True))


def _name(value: Any) -> str:
    if not isinstance(value, str) or not PROJECT_NAME.match(value):
        raise ProjectError("name", "1 to 64 letters, digits, '-' or '_'")
    return value


def _display_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_DISPLAY_NAME or "\x00" in value:
        raise ProjectError("display_name", f"a text of at most {MAX_DISPLAY_NAME} characters")
    return value


def _allowed_models(value: Any, known: frozenset[str]) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > MAX_ALLOWED_MODELS:
        raise ProjectError("allowed_models", f"a list of at most {MAX_ALLOWED_MODELS} names")
    for i, name in enumerate(value):
        if not isinstance(name, str) or not name:
            raise ProjectError(f"allowed_models[{i}]", "must be a model name")
        if name != "*" and name not in known:
            raise ProjectError(f"allowed_models[{i}]", f"unknown model '{name[:128]}'")
    if "*" in value:
        return ["*"]
    return sorted(set(value))


def _count(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LIMIT:
        raise ProjectError(field, f"must be a whole number between 0 and {MAX_LIMIT}")
    return value


def _budget_amount(value: Any) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, float | bool) or not isinstance(value, Decimal | str | int):
        raise ProjectError("budget_amount", 'must be a decimal string ("5.00")')
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise ProjectError("budget_amount", "must be a decimal number") from None
    if not amount.is_finite() or amount < 0 or amount > MAX_BUDGET:
        raise ProjectError("budget_amount", f"must be between 0 and {MAX_BUDGET}")
    if amount.as_tuple().exponent < -6:
        raise ProjectError("budget_amount", "at most 6 decimal places")
    return amount


def _budget_period(value: Any) -> str:
    if value not in BudgetPeriod.values:
        raise ProjectError("budget_period", f"must be one of {', '.join(BudgetPeriod.values)}")
    return value


def project_fields_validate(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields in their stored form; ProjectError names the first offending one
    (``model_limits.gemma-270m.rpm``). Only the fields given are checked."""
    unknown = sorted(set(fields) - PROJECT_FIELDS - {"name"})
    if unknown:
        raise ProjectError(unknown[0], "unknown field")
    checked: dict[str, Any] = {}
    known = _known_models() if {"allowed_models", "model_limits"} & set(fields) else None
    for name, value in fields.items():
        if name == "name":
            checked[name] = _name(value)
        elif name == "display_name":
            checked[name] = _display_name(value)
        elif name == "allowed_models":
            checked[name] = _allowed_models(value, known)
        elif name in ("rpm", "tpm", "max_concurrent"):
            checked[name] = _count(value, name)
        elif name == "budget_amount":
            checked[name] = _budget_amount(value)
        elif name == "budget_period":
            checked[name] = _budget_period(value)
        else:
            try:
                if name == "model_limits":
                    checked[name] = model_limits_validate(value, known_models=known)
                else:
                    checked[name] = end_user_limits_validate(value)
            except LimitBlockInvalid as exc:
                raise ProjectError(exc.field, exc.message) from None
    return checked


def _settings(project: Project) -> dict[str, Any]:
    """What an audit event says about a project's settings."""
    return {
        "name": project.name,
        "allowed_models": project.allowed_models,
        "rpm": project.rpm,
        "tpm": project.tpm,
        "max_concurrent": project.max_concurrent,
        "budget_amount": project.budget_amount,
        "budget_period": project.budget_period,
        "model_limits": project.model_limits,
        "end_user_limits": project.end_user_limits,
    }


def _name_taken(tenant_id: int, name: str, exclude_id: int | None = None) -> bool:
    projects = Project.objects.filter(tenant_id=tenant_id, name=name)
    if exclude_id is not None:
        projects = projects.exclude(id=exclude_id)
    return projects.exists()


@transaction.atomic
def project_create(*, tenant: Tenant, name: str, actor=None, **fields: Any) -> Project:
    """A new (non-default) project of the tenant; unset limits are unlimited, an unset
    allowlist allows every model."""
    checked = project_fields_validate({"name": name, **fields})
    if _name_taken(tenant.id, checked["name"]):
        raise ProjectError("name", "a project of this tenant has this name")
    try:
        with transaction.atomic():
            project = Project.objects.create(tenant=tenant, **checked)
    except IntegrityError:
        raise ProjectError("name", "a project of this tenant has this name") from None
    audit_record(
        tenant=tenant,
        actor=actor,
        action="project.created",
        target=project,
        details=_settings(project),
    )
    return project


@transaction.atomic
def project_update(*, project: Project, actor=None, **changes: Any) -> Project:
    """Change a project's name, allowlist, limits or budget; its keys are dropped from
    every gateway's cache once this commits."""
    checked = project_fields_validate(changes)
    if "name" in checked and _name_taken(project.tenant_id, checked["name"], project.id):
        raise ProjectError("name", "a project of this tenant has this name")
    diff = audit_changes(project, checked)
    if not diff:
        return project
    for field, value in checked.items():
        setattr(project, field, value)
    try:
        with transaction.atomic():
            project.save(update_fields=list(checked))
    except IntegrityError:
        raise ProjectError("name", "a project of this tenant has this name") from None
    audit_record(
        tenant=project.tenant,
        actor=actor,
        action="project.updated",
        target=project,
        details={"changes": diff},
    )
    return project


@transaction.atomic
def project_delete(*, project: Project, actor=None) -> None:
    """Delete a project without active keys. The default project cannot be deleted; its
    revoked keys move to the default project (their history stays with them)."""
    project = Project.objects.select_for_update().get(id=project.id)
    if project.is_default:
        raise ProjectError(None, "the default project cannot be deleted")
    from apps.keys.models import ApiKey

    active = ApiKey.objects.filter(project=project, revoked_at__isnull=True).count()
    if active:
        raise ProjectError(
            None, f"the project still has {active} active key(s): move or revoke them first"
        )
    default = project_default_get(tenant_id=project.tenant_id)
    ApiKey.objects.filter(project=project).update(project=default)
    audit_record(
        tenant=project.tenant,
        actor=actor,
        action="project.deleted",
        target=project,
        details={"name": project.name},
    )
    project.delete()


def _role(role: Any) -> str:
    if role not in ProjectMembership.Role.values:
        raise ProjectError("role", f"must be one of {', '.join(ProjectMembership.Role.values)}")
    return role


@transaction.atomic
def project_membership_set(
    *, project: Project, user: AbstractBaseUser, role: str, actor=None
) -> ProjectMembership:
    """Give a member of the project's tenant a role in the project (or change it). A
    tenant viewer with a project role sees only the projects they have a role in."""
    role = _role(role)
    if not Membership.objects.filter(tenant_id=project.tenant_id, user=user).exists():
        raise ProjectError("user", "is not a member of this tenant")
    membership, created = ProjectMembership.objects.get_or_create(
        project=project, user=user, defaults={"role": role}
    )
    if not created and membership.role == role:
        return membership
    old = None if created else membership.role
    if not created:
        membership.role = role
        membership.save(update_fields=["role"])
    audit_record(
        tenant=project.tenant,
        actor=actor,
        action="project.member_set",
        target=project,
        details={"user": user.get_username(), "role": {"from": old, "to": role}},
    )
    return membership


@transaction.atomic
def project_membership_remove(*, membership: ProjectMembership, actor=None) -> None:
    project = membership.project
    audit_record(
        tenant=project.tenant,
        actor=actor,
        action="project.member_removed",
        target=project,
        details={"user": membership.user.get_username(), "role": membership.role},
    )
    membership.delete()
