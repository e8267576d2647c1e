"""Serializers of the management API. Input is validated strictly: unknown fields, NUL
characters, out-of-range numbers and invalid policies are 400s naming the field."""

import math
import re
from decimal import Decimal
from typing import Any

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.billing.pricing import (
    RATE_FIELDS,
    RULE_FIELDS,
    PriceRuleInvalid,
    markup_validate,
    rule_fields_validate,
)
from apps.catalog.models import Backend, Model, Strategy
from apps.gateway.backends import backend_kind_choices
from apps.gateway.protocol.session import AffinityKeyInvalid, affinity_source_parse
from apps.keys.models import ApiKey
from apps.limits.fields import BudgetPeriod
from apps.moderation.policy import PolicyError
from apps.moderation.services import content_policy_clean
from apps.projects.models import ProjectMembership
from apps.tenants.models import BillingMode, Membership

MAX_INT = 2_147_483_647  # PostgreSQL integer
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}")
MODEL_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}\Z")
SLUG = re.compile(r"\A[-a-zA-Z0-9_]{1,64}\Z")


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not be silently ignored)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


def _limit_field() -> serializers.IntegerField:
    return serializers.IntegerField(min_value=0, max_value=MAX_INT, allow_null=True, required=False)


def _budget_amount_field() -> serializers.DecimalField:
    return serializers.DecimalField(
        max_digits=14,
        decimal_places=6,
        min_value=Decimal(0),
        allow_null=True,
        required=False,
        help_text="USD per budget period; null = no budget",
    )


class LimitsWriteSerializer(StrictSerializer):
    """The limits a key, a project and a tenant each take: rpm, tpm, max_concurrent and a
    budget (checked by the services, naming the field)."""

    rpm = _limit_field()
    tpm = _limit_field()
    max_concurrent = _limit_field()
    budget_amount = _budget_amount_field()
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, required=False)


class PolicyField(serializers.JSONField):
    """A content policy (apps/moderation/policy.py), stored in its normal form."""

    def to_internal_value(self, data):
        data = super().to_internal_value(data)
        if _has_nul(data):
            raise serializers.ValidationError("must not contain NUL characters")
        try:
            return content_policy_clean(policy=data)
        except PolicyError as exc:
            raise serializers.ValidationError(str(exc)) from None


class FiniteFloatField(serializers.FloatField):
    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not math.isfinite(value):
            raise serializers.ValidationError("must be a finite number")
        return value


def _model_names(names: list[str]) -> list[str]:
    known = set(
        Model.objects.filter(name__in=[n for n in names if n != "*"]).values_list("name", flat=True)
    )
    unknown = [n for n in names if n != "*" and n not in known]
    if unknown:
        raise serializers.ValidationError(f"unknown model '{unknown[0]}'")
    return list(dict.fromkeys(names))


# Keys --------------------------------------------------------------------------------------


def key_status(api_key: ApiKey) -> str:
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= timezone.now():
        return "expired"
    return "active"


class ApiKeySerializer(serializers.ModelSerializer):
    status = serializers.SerializerMethodField()
    project_name = serializers.CharField(
        source="project.name", read_only=True, help_text="The name of the key's project"
    )
    created_by = serializers.SerializerMethodField()
    previous_secret_valid_until = serializers.SerializerMethodField(
        help_text="While the secret a rotation replaced still works: when it stops; else null"
    )
    previous_prefix = serializers.SerializerMethodField(
        help_text="The visible start of that previous secret, while it works; else null"
    )

    class Meta:
        model = ApiKey
        fields = [
            "id",
            "name",
            "prefix",
            "status",
            "project",
            "project_name",
            "allowed_models",
            "rpm",
            "tpm",
            "max_concurrent",
            "budget_amount",
            "budget_period",
            "model_limits",
            "default_tags",
            "content_policy",
            "expires_at",
            "created_at",
            "created_by",
            "last_used_at",
            "revoked_at",
            "previous_prefix",
            "previous_secret_valid_until",
        ]
        read_only_fields = fields

    def get_status(self, obj: ApiKey) -> str:
        return key_status(obj)

    @extend_schema_field(OpenApiTypes.DATETIME)
    def get_previous_secret_valid_until(self, obj: ApiKey) -> str | None:
        until = obj.previous_secret_valid_until()
        return serializers.DateTimeField().to_representation(until) if until else None

    def get_previous_prefix(self, obj: ApiKey) -> str | None:
        return obj.previous_prefix if obj.previous_secret_valid_until() else None

    def get_created_by(self, obj: ApiKey) -> str | None:
        return obj.created_by.get_username() if obj.created_by_id else None


class ApiKeyWithSecretSerializer(ApiKeySerializer):
    secret = serializers.SerializerMethodField(help_text="Shown once; only its hash is stored.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields

    def get_secret(self, obj: ApiKey) -> str:
        return self.context["secret"]


class WholeNumberField(serializers.IntegerField):
    """An integer sent as a JSON number: no strings, booleans or fractions."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            raise serializers.ValidationError("must be a whole number")
        return super().to_internal_value(data)


class KeyRotateSerializer(StrictSerializer):
    grace_seconds = WholeNumberField(
        required=False,
        help_text="How long the old secret keeps working: 0 (the default) = refused at once, "
        "at most 604800 (7 days). A rotation inside a grace ends the older secret at once.",
    )


class ApiKeyWriteSerializer(LimitsWriteSerializer):
    """Create (name required) and PATCH (every field optional) of a key."""

    name = serializers.CharField(max_length=100, trim_whitespace=True)
    project = serializers.IntegerField(
        min_value=1,
        max_value=MAX_INT,
        required=False,
        help_text="The id of the key's project (one the caller manages); on create, "
        "absent = the tenant's default project; on PATCH, moves the key",
    )
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=128),
        max_length=500,
        required=False,
        help_text='Model names this key may call; [] = none, ["*"] = every model',
    )
    expires_at = serializers.DateTimeField(allow_null=True, required=False)
    content_policy = PolicyField(
        required=False, help_text="Per-category override of the tenant's content policy"
    )
    model_limits = serializers.JSONField(
        required=False,
        help_text="This key's own limits per model: {model: {rpm, tpm, max_concurrent, budget: "
        '{amount: "1.00", period}}}; {} = none',
    )
    default_tags = serializers.JSONField(
        required=False,
        help_text="Tags of every request of the key ({key: value}, at most 10; a request's "
        "own tags win for a key both name); {} = none",
    )

    def validate_allowed_models(self, value: list[str]) -> list[str]:
        return _model_names(value)

    def validate(self, attrs):
        if _has_nul(attrs.get("model_limits")) or _has_nul(attrs.get("default_tags")):
            raise serializers.ValidationError("must not contain NUL characters")
        return attrs

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value

    def validate_name(self, value: str) -> str:
        if not value:
            raise serializers.ValidationError("must not be empty")
        return value


class ProjectKeyWriteSerializer(ApiKeyWriteSerializer):
    """A key issued into the project of the URL."""

    project = None


# Projects ----------------------------------------------------------------------------------


class ProjectSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    display_name = serializers.CharField(read_only=True)
    is_default = serializers.BooleanField(read_only=True)
    allowed_models = serializers.ListField(
        child=serializers.CharField(), read_only=True, help_text='[] = none, ["*"] = every model'
    )
    rpm = serializers.IntegerField(read_only=True, allow_null=True)
    tpm = serializers.IntegerField(read_only=True, allow_null=True)
    max_concurrent = serializers.IntegerField(read_only=True, allow_null=True)
    budget_amount = serializers.DecimalField(
        max_digits=14, decimal_places=6, read_only=True, allow_null=True
    )
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, read_only=True)
    model_limits = serializers.JSONField(read_only=True)
    end_user_limits = serializers.JSONField(read_only=True)
    role = serializers.SerializerMethodField(
        help_text="The caller's role in this project: admin (manages its keys) or viewer"
    )
    created_at = serializers.DateTimeField(read_only=True)

    def get_role(self, obj) -> str:
        return self.context["access"].project_role(obj.id) or "viewer"


class ProjectWriteSerializer(LimitsWriteSerializer):
    """Create (name required) and PATCH (every field optional) of a project. Limits and
    blocks are checked by apps/projects/services.py, naming the field."""

    name = serializers.RegexField(SLUG, max_length=64, help_text="letters, digits, - and _")
    display_name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    allowed_models = serializers.ListField(
        child=serializers.CharField(max_length=128),
        max_length=500,
        required=False,
        help_text='A subset of the tenant\'s models; [] = none, ["*"] = every model',
    )
    model_limits = serializers.JSONField(
        required=False,
        help_text='{model: {rpm, tpm, max_concurrent, budget: {amount: "1.00", period}}}',
    )
    end_user_limits = serializers.JSONField(
        required=False,
        help_text='Per end user: {rpm, tpm, budget: {amount: "1.00", period: daily|monthly}}',
    )

    def validate(self, attrs):
        if _has_nul(attrs.get("model_limits")) or _has_nul(attrs.get("end_user_limits")):
            raise serializers.ValidationError("must not contain NUL characters")
        return attrs


class ProjectMemberSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=ProjectMembership.Role.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class ProjectMemberWriteSerializer(StrictSerializer):
    user = serializers.CharField(
        max_length=254, help_text="A member of the tenant: their username or email"
    )
    role = serializers.ChoiceField(choices=ProjectMembership.Role.choices)


class ProjectMemberRoleSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=ProjectMembership.Role.choices)


# Admin tokens ------------------------------------------------------------------------------


class AdminTokenSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    prefix = serializers.CharField(read_only=True)
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(read_only=True)
    last_used_at = serializers.DateTimeField(read_only=True, allow_null=True)
    revoked_at = serializers.DateTimeField(read_only=True, allow_null=True)

    def get_status(self, obj) -> str:
        return "revoked" if obj.revoked_at else "active"


class AdminTokenWithSecretSerializer(AdminTokenSerializer):
    secret = serializers.SerializerMethodField(help_text="Shown once; only its hash is stored.")

    def get_secret(self, obj) -> str:
        return self.context["secret"]


class AdminTokenCreateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, trim_whitespace=True)


# Members -----------------------------------------------------------------------------------


class MembershipSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    user_id = serializers.IntegerField(read_only=True)
    username = serializers.CharField(source="user.username", read_only=True)
    email = serializers.CharField(source="user.email", read_only=True)
    role = serializers.ChoiceField(choices=Membership.Role.choices, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class InvitationSerializer(MembershipSerializer):
    user_created = serializers.BooleanField(read_only=True)
    set_password_path = serializers.CharField(
        read_only=True,
        allow_null=True,
        help_text="One-time link for a new member to set a password (show it once).",
    )


class MemberInviteSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254)
    role = serializers.ChoiceField(choices=Membership.Role.choices)


class MemberRoleSerializer(StrictSerializer):
    role = serializers.ChoiceField(choices=Membership.Role.choices)


# Audit -------------------------------------------------------------------------------------


class AuditEventSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    action = serializers.CharField(read_only=True)
    actor = serializers.CharField(source="actor_label", read_only=True)
    actor_type = serializers.SerializerMethodField()
    actor_user_id = serializers.IntegerField(read_only=True, allow_null=True)
    actor_token_id = serializers.IntegerField(read_only=True, allow_null=True)
    target_type = serializers.CharField(read_only=True)
    target_id = serializers.CharField(read_only=True)
    target_label = serializers.CharField(read_only=True)
    details = serializers.JSONField(read_only=True)

    def get_actor_type(self, obj) -> str:
        if obj.actor_token_id:
            return "admin_token"
        if obj.actor_user_id:
            return "user"
        return "system"


# Tenant settings ---------------------------------------------------------------------------


class TenantSettingsSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    display_name = serializers.CharField(read_only=True)
    rpm = serializers.IntegerField(read_only=True, allow_null=True)
    tpm = serializers.IntegerField(read_only=True, allow_null=True)
    max_concurrent = serializers.IntegerField(read_only=True, allow_null=True)
    budget_amount = serializers.DecimalField(
        max_digits=14, decimal_places=6, read_only=True, allow_null=True
    )
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, read_only=True)
    content_policy = serializers.JSONField(read_only=True)
    role = serializers.SerializerMethodField(help_text="The caller's role in this tenant")

    def get_role(self, obj) -> str:
        return self.context["access"].role


class TenantSettingsWriteSerializer(LimitsWriteSerializer):
    content_policy = PolicyField(required=False, help_text="The default of the tenant's keys")


# Staff: tenants ----------------------------------------------------------------------------


class TenantSerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.CharField(read_only=True)
    display_name = serializers.CharField(read_only=True)
    rpm = serializers.IntegerField(read_only=True, allow_null=True)
    tpm = serializers.IntegerField(read_only=True, allow_null=True)
    max_concurrent = serializers.IntegerField(read_only=True, allow_null=True)
    budget_amount = serializers.DecimalField(
        max_digits=14, decimal_places=6, read_only=True, allow_null=True
    )
    budget_period = serializers.ChoiceField(choices=BudgetPeriod.choices, read_only=True)
    content_policy = serializers.JSONField(read_only=True)
    byok_allowed = serializers.BooleanField(read_only=True)
    billing_mode = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class TenantWriteSerializer(LimitsWriteSerializer):
    name = serializers.RegexField(SLUG, max_length=64, help_text="letters, digits, - and _")
    display_name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    byok_allowed = serializers.BooleanField(
        required=False,
        help_text="The tenant's callers may send their own upstream key (openai_api_key, "
        "x-upstream-authorization) to backends that accept one",
    )


class TenantUpdateSerializer(TenantWriteSerializer):
    name = None
    billing_mode = serializers.ChoiceField(
        choices=BillingMode.choices,
        required=False,
        help_text="postpaid: monthly statements; prepaid: requests debit the balance",
    )


# Staff: catalog ----------------------------------------------------------------------------


class BreakerSerializer(StrictSerializer):
    """A backend's circuit breaker, as config-as-code writes it: ``breaker: {failures,
    cooldown_s}``."""

    failures = serializers.IntegerField(
        source="breaker_failures",
        min_value=1,
        max_value=1000,
        required=False,
        help_text="Consecutive failures (connect errors, timeouts, 5xx) that open the breaker",
    )
    cooldown_s = FiniteFloatField(
        source="breaker_cooldown_s",
        min_value=0.1,
        max_value=3600,
        required=False,
        help_text="Seconds an open breaker rests the backend before one probe request",
    )


class BackendSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.RegexField(SLUG, max_length=64)
    kind = serializers.ChoiceField(choices=backend_kind_choices(), required=False)
    base_url = serializers.URLField(max_length=500)
    credential = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=4000,
        help_text='Upstream API key: write-only, stored encrypted; "" clears it',
    )
    has_credential = serializers.SerializerMethodField()
    timeout_s = FiniteFloatField(min_value=0.001, max_value=3600, required=False)
    connect_timeout_s = FiniteFloatField(min_value=0.001, max_value=600, required=False)
    first_byte_timeout_s = FiniteFloatField(
        min_value=0.001,
        max_value=3600,
        required=False,
        allow_null=True,
        help_text="Seconds to the first byte (a stream's first chunk) before the next "
        "deployment is tried; null: only timeout_s, the overall deadline",
    )
    breaker = BreakerSerializer(source="*", required=False)
    extra_headers = serializers.DictField(
        child=serializers.CharField(max_length=2000, allow_blank=True), required=False
    )
    reports_stop_sequence = serializers.BooleanField(
        required=False,
        help_text="The server names the stop string it matched (vLLM); else the gateway "
        "matches the stop strings of Messages requests itself",
    )
    byok_allowed = serializers.BooleanField(
        required=False,
        help_text="Callers of tenants that allow it may send their own upstream key, used "
        "instead of this backend's credential",
    )
    enabled = serializers.BooleanField(required=False)
    deployment_count = serializers.IntegerField(read_only=True, required=False)
    created_at = serializers.DateTimeField(read_only=True)

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # The registry as it is now, not as it was when this module was imported.
        fields["kind"].choices = backend_kind_choices()
        return fields

    def get_has_credential(self, obj) -> bool:
        return bool(obj.credential_encrypted)

    def validate_base_url(self, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise serializers.ValidationError("must be an http(s) URL")
        return value.rstrip("/")

    def validate_extra_headers(self, value: dict[str, str]) -> dict[str, str]:
        if len(value) > 50:
            raise serializers.ValidationError("at most 50 headers")
        for name, header_value in value.items():
            if not HEADER_NAME.fullmatch(name):
                raise serializers.ValidationError(f"'{name[:100]}' is not a header name")
            if any(c in header_value for c in "\r\n\x00"):
                raise serializers.ValidationError(f"{name}: invalid characters in the value")
        return dict(value)

    def validate_name(self, value: str) -> str:
        others = Backend.objects.filter(name=value)
        if self.instance is not None:
            others = others.exclude(id=self.instance.id)
        if others.exists():
            raise serializers.ValidationError(f"a backend named '{value}' exists")
        return value


class ModelSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    name = serializers.RegexField(MODEL_NAME, max_length=128)
    aliases = serializers.ListField(
        child=serializers.RegexField(MODEL_NAME, max_length=128), max_length=50, required=False
    )
    fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        help_text="Other models, tried in order when every deployment of this one fails",
    )
    context_window_fallbacks = serializers.ListField(
        child=serializers.CharField(max_length=128),
        required=False,
        help_text="Other models, tried in order when an upstream says the prompt is too long",
    )
    display_name = serializers.CharField(max_length=200, allow_blank=True, required=False)
    enabled = serializers.BooleanField(required=False)
    prompt_allowance_per_request = serializers.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        help_text="Budget bound: prompt tokens the chat template may add per request",
    )
    prompt_allowance_per_message = serializers.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        help_text="Budget bound: prompt tokens the chat template may add per message",
    )
    image_token_bound = serializers.IntegerField(
        min_value=0,
        max_value=MAX_INT,
        required=False,
        help_text="Budget bound: the most prompt tokens one image can cost",
    )
    max_output_tokens = serializers.IntegerField(
        min_value=1,
        max_value=MAX_INT,
        required=False,
        help_text="The most tokens one answer can have (reserved without max_tokens)",
    )
    strategy = serializers.ChoiceField(
        choices=Strategy.values,
        required=False,
        help_text="How a request picks among the deployments: weighted, least-busy, latency "
        "or affinity",
    )
    affinity_key = serializers.CharField(
        max_length=80,
        required=False,
        help_text="With affinity, a request's session key: prompt_cache_key, user, "
        "header:<name> or prefix (a request without it falls back to prefix)",
    )
    created_at = serializers.DateTimeField(read_only=True)

    def validate_affinity_key(self, value: str) -> str:
        try:
            return affinity_source_parse(value).setting
        except AffinityKeyInvalid as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        from apps.catalog.selectors import model_name_taken

        exclude = self.instance.id if self.instance is not None else None
        name = attrs.get("name")
        if name is not None and model_name_taken(name=name, exclude_id=exclude):
            raise serializers.ValidationError({"name": [f"'{name}' is taken by another model"]})
        for alias in attrs.get("aliases", []):
            if model_name_taken(name=alias, exclude_id=exclude):
                raise serializers.ValidationError(
                    {"aliases": [f"'{alias}' is taken by another model"]}
                )
        if "aliases" in attrs:
            attrs["aliases"] = list(dict.fromkeys(attrs["aliases"]))
        return attrs


@extend_schema_field(OpenApiTypes.STR)
class _NameField(serializers.Field):
    """A catalog object by its name (model or backend)."""

    default_error_messages = {"invalid": "must be a name (a string of at most 128 characters)"}

    def __init__(self, model_class, **kwargs) -> None:
        self.model_class = model_class
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str) or not data or len(data) > 128 or "\x00" in data:
            self.fail("invalid")
        found = self.model_class.objects.filter(name=data).first()
        if found is None:
            raise serializers.ValidationError(f"unknown {self.model_class.__name__.lower()}")
        return found

    def to_representation(self, value):
        return value.name


class DeploymentSerializer(StrictSerializer):
    id = serializers.IntegerField(read_only=True)
    model = _NameField(Model, help_text="The public model name")
    backend = _NameField(Backend, help_text="The backend's name")
    upstream_model = serializers.CharField(max_length=200)
    weight = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        from apps.catalog.models import Deployment

        instance = self.instance
        model = attrs.get("model", getattr(instance, "model", None))
        backend = attrs.get("backend", getattr(instance, "backend", None))
        upstream = attrs.get("upstream_model", getattr(instance, "upstream_model", None))
        same = Deployment.objects.filter(model=model, backend=backend, upstream_model=upstream)
        if instance is not None:
            same = same.exclude(id=instance.id)
        if same.exists():
            raise serializers.ValidationError("this deployment exists")
        return attrs


# Staff: price rules and rate cards -----------------------------------------------------------


def price_rule_error(exc: PriceRuleInvalid) -> serializers.ValidationError:
    """The pricing module's error keyed as DRF keys nested errors: ``tiers[0].input_per_mtok``
    → ``{"tiers": {"0": {"input_per_mtok": [message]}}}``."""
    detail: Any = [exc.message]
    for part in reversed(re.findall(r"[^.\[\]]+", exc.field) or ["non_field_errors"]):
        detail = {part: detail}
    return serializers.ValidationError(detail)


@extend_schema_field({"type": "string", "format": "decimal", "example": "0.50"})
class _AmountField(serializers.Field):
    """A decimal string (a JSON number is refused: money is never a float); checked with
    the rule's other fields by ``rule_fields_validate``."""

    def to_internal_value(self, data):
        return data

    def to_representation(self, value):
        return None if value is None else str(value)


@extend_schema_field({"type": "string", "format": "decimal", "nullable": True, "example": "0.50"})
class _OptionalAmountField(_AmountField):
    """An optional rate or fee: null (or left out) follows its default."""


TIER_SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {
            "above_prompt_tokens": {"type": "integer", "minimum": 1},
            **{name: {"type": "string", "format": "decimal"} for name in RATE_FIELDS},
        },
        "required": ["above_prompt_tokens"],
    },
    "description": "Long-context tiers: above N prompt tokens the whole request is priced "
    "at the tier's rates (a rate left out is the rule's)",
}
SERVICE_TIER_SCHEMA = {
    "type": "object",
    "additionalProperties": {"type": "string", "format": "decimal"},
    "description": 'Multipliers of the token charges per upstream service tier: {"flex": "0.5"}',
    "example": {"flex": "0.5", "priority": "2.0"},
}


@extend_schema_field(TIER_SCHEMA)
class _TiersField(serializers.JSONField):
    pass


@extend_schema_field(SERVICE_TIER_SCHEMA)
class _ServiceTiersField(serializers.JSONField):
    pass


def _optional_amount(help_text: str) -> _OptionalAmountField:
    return _OptionalAmountField(required=False, allow_null=True, help_text=help_text)


class PriceRuleSerializer(StrictSerializer):
    """A price rule's fields (apps/billing/pricing.py): USD per million tokens unless said;
    an optional rate left out or null follows its default."""

    input_per_mtok = _AmountField(help_text="USD per 1M uncached prompt tokens")
    cached_input_per_mtok = _optional_amount("Cached prompt tokens read (default: input)")
    cache_write_5m_per_mtok = _optional_amount("Prompt tokens written to a 5-minute cache")
    cache_write_1h_per_mtok = _optional_amount("Prompt tokens written to a 1-hour cache")
    output_per_mtok = _optional_amount("Completion tokens (default: 0)")
    reasoning_per_mtok = _optional_amount("Reasoning tokens (default: output)")
    request_fee = _optional_amount("USD per request (default: 0)")
    tiers = _TiersField(required=False)
    service_tiers = _ServiceTiersField(required=False)
    byok_fee_percent = _optional_amount(
        "A caller-keyed (BYOK) request is charged this percentage of its token price"
    )
    byok_request_fee = _optional_amount("USD per BYOK request (default: 0)")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        # A NUL anywhere is refused by the rule's own checks (not a decimal, not a tier
        # name, not a tier field).
        try:
            clean = rule_fields_validate({k: v for k, v in attrs.items() if k in RULE_FIELDS})
        except PriceRuleInvalid as exc:
            raise price_rule_error(exc) from None
        return {**{k: v for k, v in attrs.items() if k not in RULE_FIELDS}, **clean}


class PriceSerializer(PriceRuleSerializer):
    """A model's price rule version (what a request costs the operator), in force from
    ``effective_from`` until the next; append-only."""

    id = serializers.IntegerField(read_only=True)
    model = _NameField(Model, help_text="The public model name")
    effective_from = serializers.DateTimeField()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        from apps.catalog.models import Price

        attrs = super().validate(attrs)
        if Price.objects.filter(
            model=attrs["model"], effective_from=attrs["effective_from"]
        ).exists():
            raise serializers.ValidationError(
                {
                    "effective_from": [
                        "a price version from this time exists (prices are append-only)"
                    ]
                }
            )
        return attrs


MAX_OVERRIDES = 500


class _OverridesField(serializers.DictField):
    """``{model name: rule fields}`` in, ``{Model: clean fields}`` out (the schema: an
    object of PriceRule)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(child=PriceRuleSerializer(), **kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("must be an object of model name: price rule")
        if len(data) > MAX_OVERRIDES:
            raise serializers.ValidationError(f"at most {MAX_OVERRIDES} models")
        found = {m.name: m for m in Model.objects.filter(name__in=[str(k) for k in data])}
        clean, errors = {}, {}
        for name, fields in data.items():
            label = str(name)[:128]
            if name not in found:
                errors[label] = ["unknown model"]
                continue
            rule = PriceRuleSerializer(data=fields)
            if not rule.is_valid():
                errors[label] = rule.errors
                continue
            clean[found[name]] = dict(rule.validated_data)
        if errors:
            raise serializers.ValidationError(errors)
        return clean

    def to_representation(self, value):
        return {p.model.name: PriceRuleSerializer(p).data for p in value.all()}


class RateCardSerializer(StrictSerializer):
    """A tenant's rate card version (what the tenant pays), in force from
    ``effective_from`` until the next; append-only."""

    id = serializers.IntegerField(read_only=True)
    tenant = serializers.CharField(source="tenant.name", read_only=True)
    effective_from = serializers.DateTimeField()
    markup_percent = _AmountField(
        required=False,
        help_text="Percent added to every model's price rule; negative: a discount (at least -100)",
    )
    models = _OverridesField(
        source="prices",
        required=False,
        help_text="Per-model override rules {model name: price rule}; no markup applies to them",
    )
    created_at = serializers.DateTimeField(read_only=True)

    def validate_markup_percent(self, value):
        try:
            return markup_validate(value)
        except PriceRuleInvalid as exc:
            raise serializers.ValidationError(exc.message) from None


class PipelineSerializer(serializers.Serializer):
    stream_length = serializers.IntegerField(allow_null=True)
    pending = serializers.IntegerField(allow_null=True)
    lag_seconds = serializers.FloatField(allow_null=True)
    dead_letters = serializers.IntegerField(allow_null=True)
    last_ingest_at = serializers.DateTimeField(allow_null=True)
    beat_last_tick_at = serializers.DateTimeField(allow_null=True)
    ingest = serializers.CharField(help_text='"ok", or why ingest is stalled (as /readyz)')
    beat = serializers.CharField(help_text='"ok", or how long beat has been silent')


# Prepaid balance ---------------------------------------------------------------------------


class BalanceSerializer(serializers.Serializer):
    billing_mode = serializers.CharField(read_only=True)
    balance = serializers.DecimalField(
        max_digits=24,
        decimal_places=12,
        read_only=True,
        help_text="The journal's sum, exact: credits less the price of prepaid usage",
    )
    currency = serializers.CharField(read_only=True, default="USD")


class BalanceEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    kind = serializers.CharField(read_only=True)
    amount = serializers.DecimalField(max_digits=24, decimal_places=12, read_only=True)
    ref = serializers.CharField(read_only=True)
    reason = serializers.CharField(read_only=True)


class GrantWriteSerializer(StrictSerializer):
    amount = serializers.DecimalField(
        max_digits=18, decimal_places=6, help_text='USD, e.g. "10.00"; positive'
    )
    ref = serializers.CharField(
        max_length=200, help_text="Idempotency key: a second grant with this ref changes nothing"
    )
    reason = serializers.CharField(max_length=500, help_text="Why (shown in the journal)")
