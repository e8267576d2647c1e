"""Dashboard forms. They only clean input; writes go through the apps' services."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC
from typing import Any

from django import forms

from apps.catalog.models import Model
from apps.gateway.protocol.attribution import MAX_TAG_KEY, AttributionInvalid, tag_checked
from apps.limits.fields import BudgetPeriod
from apps.moderation.detectors.base import CATEGORIES, CATEGORIES_SEVERITY
from apps.moderation.policy import ACTIONS, DEFAULT_THRESHOLD, THRESHOLDS
from apps.tenants.models import Membership

ALL_MODELS = "*"
INHERIT = ""


def model_choices() -> list[tuple[str, str]]:
    names = Model.objects.filter(enabled=True).order_by("name").values_list("name", flat=True)
    return [(ALL_MODELS, "All models (*)")] + [(name, name) for name in names]


class TenantLimitsForm(forms.Form):
    """Rate limits and budget: a tenant's (over all its keys), and a key's own."""

    rpm = forms.IntegerField(required=False, min_value=1, label="Requests / minute")
    tpm = forms.IntegerField(required=False, min_value=1, label="Tokens / minute")
    max_concurrent = forms.IntegerField(required=False, min_value=1, label="Max concurrent")
    budget_amount = forms.DecimalField(
        required=False, min_value=0, max_digits=14, decimal_places=6, label="Budget (USD)"
    )
    budget_period = forms.ChoiceField(choices=BudgetPeriod.choices, initial=BudgetPeriod.MONTHLY)

    FIELDS = ("rpm", "tpm", "max_concurrent", "budget_amount", "budget_period")

    @classmethod
    def initial_of(cls, obj: Any) -> dict[str, Any]:
        return {name: getattr(obj, name) for name in cls.FIELDS}

    def service_fields(self) -> dict[str, Any]:
        return {name: self.cleaned_data[name] for name in self.FIELDS}


class LimitsForm(TenantLimitsForm):
    """Allowlist, limits, budget and expiry of a key (the create and the edit form)."""

    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="No model ticked: the key may call no model.",
    )
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires at (UTC)",
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
    )

    FIELDS = ("allowed_models", *TenantLimitsForm.FIELDS, "expires_at")
    field_order = list(FIELDS)

    def __init__(self, *args: Any, projects: Iterable[Any] = (), **kwargs: Any) -> None:
        """``projects``: the projects the key may go to (those the caller manages); with
        none given there is no project field (the key stays where it is)."""
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = model_choices()
        self.projects = {project.id: project for project in projects}
        if self.projects:
            self.fields["project"] = forms.TypedChoiceField(
                choices=[(p.id, p.name) for p in self.projects.values()],
                coerce=int,
                empty_value=None,
                required=False,
                help_text="The key's project: its allowlist and limits apply too. "
                "Left empty: the key's project, or for a new key the default project.",
            )
            self.order_fields(["name", "project", *self.FIELDS])
            if self.initial.get("project") is None:
                default = next((p.id for p in self.projects.values() if p.is_default), None)
                self.initial["project"] = default

    def clean_project(self) -> int:
        """Not sent: the initial project (the key's own; a new key's: the default)."""
        project_id = self.cleaned_data["project"]
        if project_id is None:
            project_id = self.initial.get("project")
        if project_id not in self.projects:
            raise forms.ValidationError("Choose a project whose keys you manage.")
        return project_id

    @classmethod
    def initial_of(cls, obj: Any) -> dict[str, Any]:
        return {**super().initial_of(obj), "project": obj.project_id}

    def service_fields(self) -> dict[str, Any]:
        fields = super().service_fields()
        if "project" in self.fields:
            fields["project"] = self.projects[self.cleaned_data["project"]]
        return fields

    def clean_allowed_models(self) -> list[str]:
        models = self.cleaned_data["allowed_models"]
        return [ALL_MODELS] if ALL_MODELS in models else sorted(models)

    def clean_expires_at(self):
        value = self.cleaned_data["expires_at"]
        return value.astimezone(UTC) if value is not None else None


class KeyCreateForm(LimitsForm):
    name = forms.CharField(max_length=100)

    field_order = ["name"]


class ProjectForm(TenantLimitsForm):
    """A project: name, allowlist (within the catalog), limits, budget, and its per-model
    and per-end-user limits as JSON blocks (checked by apps/projects/services.py)."""

    name = forms.SlugField(max_length=64)
    display_name = forms.CharField(max_length=200, required=False)
    allowed_models = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="No model ticked: the project's keys may call no model.",
    )
    model_limits = forms.JSONField(
        required=False,
        initial=dict,
        help_text='{"gemma-270m": {"rpm": 10, "tpm": 20000, "budget": {"amount": "1.00", '
        '"period": "daily"}}}',
        widget=forms.Textarea(attrs={"rows": 3}),
    )
    end_user_limits = forms.JSONField(
        required=False,
        initial=dict,
        help_text='Per end user: {"rpm": 20, "tpm": 40000, "budget": {"amount": "0.50", '
        '"period": "daily"}}',
        widget=forms.Textarea(attrs={"rows": 3}),
    )

    FIELDS = (
        "name",
        "display_name",
        "allowed_models",
        *TenantLimitsForm.FIELDS,
        "model_limits",
        "end_user_limits",
    )
    field_order = list(FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["allowed_models"].choices = model_choices()

    def clean_allowed_models(self) -> list[str]:
        models = self.cleaned_data["allowed_models"]
        return [ALL_MODELS] if ALL_MODELS in models else sorted(models)

    def clean_model_limits(self) -> dict[str, Any]:
        return self.cleaned_data["model_limits"] or {}

    def clean_end_user_limits(self) -> dict[str, Any]:
        return self.cleaned_data["end_user_limits"] or {}


class ProjectMemberForm(forms.Form):
    user = forms.CharField(max_length=254, label="Member (username or email)")
    role = forms.ChoiceField(choices=[("viewer", "viewer"), ("admin", "admin")])


class ContentPolicyForm(forms.Form):
    """A content policy: the tenant's, or a key's per-category override of it.

    Per category: prompt and completion action and the severity threshold. On a key, a
    category may stay on "tenant default" and is then not named in the key's policy; on
    the tenant, a category left off in both directions is not named either."""

    def __init__(
        self,
        *args: Any,
        policy: dict[str, Any] | None = None,
        tenant_default: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        policy = policy or {}
        self.moderation = policy.get("moderation")
        self.tenant_default = tenant_default
        self.unset = INHERIT if tenant_default else "off"
        actions = [(a, a) for a in ACTIONS]
        if tenant_default:
            actions.insert(0, (INHERIT, "tenant default"))
        for category in CATEGORIES:
            rule = policy.get(category) or {}
            for direction in ("prompt", "completion"):
                self.fields[f"{category}__{direction}"] = forms.ChoiceField(
                    choices=actions,
                    required=False,
                    initial=rule.get(direction, self.unset) if rule else self.unset,
                    label=direction,
                )
            if category in CATEGORIES_SEVERITY:
                self.fields[f"{category}__threshold"] = forms.ChoiceField(
                    choices=[(t, t) for t in THRESHOLDS],
                    initial=rule.get("threshold", DEFAULT_THRESHOLD),
                    label="threshold",
                )

    def rows(self) -> list[dict[str, Any]]:
        """Bound fields per category, for the template's table."""
        return [
            {
                "category": category,
                "prompt": self[f"{category}__prompt"],
                "completion": self[f"{category}__completion"],
                "threshold": self[f"{category}__threshold"]
                if category in CATEGORIES_SEVERITY
                else None,
            }
            for category in CATEGORIES
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        for category in CATEGORIES if self.tenant_default else ():
            prompt = data.get(f"{category}__prompt", INHERIT)
            completion = data.get(f"{category}__completion", INHERIT)
            if (prompt == INHERIT) != (completion == INHERIT):
                raise forms.ValidationError(
                    f"{category}: set both prompt and completion, or leave both on the "
                    "tenant default."
                )
        return data

    def policy(self) -> dict[str, Any]:
        data = self.cleaned_data
        policy: dict[str, Any] = {}
        for category in CATEGORIES:
            prompt = data.get(f"{category}__prompt") or self.unset
            completion = data.get(f"{category}__completion") or self.unset
            if prompt == INHERIT or prompt == completion == "off" and not self.tenant_default:
                continue
            rule = {"prompt": prompt, "completion": completion}
            if category in CATEGORIES_SEVERITY:
                rule["threshold"] = data[f"{category}__threshold"]
            policy[category] = rule
        if self.moderation:
            policy["moderation"] = self.moderation
        return policy


class UsageRangeForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        help_text="inclusive",
    )
    group = forms.ChoiceField(
        choices=[
            ("model", "by model"),
            ("key", "by key"),
            ("project", "by project"),
            ("user", "by end user"),
            ("tag", "by tag"),
        ],
        required=False,
        initial="model",
    )
    tag = forms.CharField(
        required=False,
        max_length=MAX_TAG_KEY,
        label="Tag key",
        help_text="with “by tag”: the key whose values split the usage",
    )

    def clean_tag(self) -> str:
        key = self.cleaned_data.get("tag") or ""
        if key:
            try:
                tag_checked(key, "v", "tag")
            except AttributionInvalid as exc:
                raise forms.ValidationError(exc.message) from None
        return key

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("group") == "tag" and not data.get("tag") and "tag" not in self.errors:
            self.add_error("tag", "Name the tag key to split by.")
        start, end = data.get("start"), data.get("end")
        if start and end and end < start:
            raise forms.ValidationError("The end is before the start.")
        if start and end and (end - start).days > 366:
            raise forms.ValidationError("Choose at most a year.")
        return data


INVITE_ROLES = [(Membership.Role.ADMIN, "admin"), (Membership.Role.VIEWER, "viewer")]


class InviteForm(forms.Form):
    email = forms.EmailField()
    role = forms.ChoiceField(choices=INVITE_ROLES, initial=Membership.Role.VIEWER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


ROTATION_GRACES = [
    (0, "None: the current secret stops working at once"),
    (3600, "1 hour"),
    (86400, "24 hours"),
    (7 * 86400, "7 days"),
]


class KeyRotateForm(forms.Form):
    grace_seconds = forms.TypedChoiceField(
        label="The current secret keeps working for",
        choices=ROTATION_GRACES,
        coerce=int,
        required=False,
        empty_value=0,
        initial=0,
    )


class AdminTokenForm(forms.Form):
    name = forms.CharField(max_length=100)


class GrantForm(forms.Form):
    """Staff: credit the tenant's balance (once per reference)."""

    amount = forms.DecimalField(min_value=0.000001, max_digits=18, decimal_places=6, label="USD")
    ref = forms.CharField(max_length=200, label="Reference", help_text="Once per reference")
    reason = forms.CharField(max_length=500)
