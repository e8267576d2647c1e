from decimal import Decimal

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from apps.catalog.crypto import credential_decrypt, credential_encrypt
from apps.gateway.backends import backend_kind_choices
from apps.gateway.protocol.session import (
    DEFAULT_AFFINITY_KEY,
    AffinityKeyInvalid,
    affinity_source_parse,
)

# A backend's settings as staff edit them (admin form, management API service); the
# credential is edited apart, as it is stored encrypted.
BACKEND_SETTINGS = (
    "name",
    "kind",
    "base_url",
    "timeout_s",
    "connect_timeout_s",
    "first_byte_timeout_s",
    "breaker_failures",
    "breaker_cooldown_s",
    "extra_headers",
    "reports_stop_sequence",
    "byok_allowed",
    "enabled",
)

# A model's lists of other models to serve a request it could not.
MODEL_FALLBACK_FIELDS = ("fallbacks", "context_window_fallbacks")


class Backend(models.Model):
    name = models.SlugField(max_length=64, unique=True)
    # The kinds are the gateway's registered adapters (a callable: a new kind needs no
    # migration); a kind outside them is refused by every form, serializer and config.
    kind = models.CharField(max_length=16, choices=backend_kind_choices, default="openai")
    base_url = models.URLField(max_length=500)
    # Fernet token of the upstream API key; never stored or logged in clear.
    credential_encrypted = models.TextField(blank=True, default="")
    timeout_s = models.FloatField(default=60.0)
    connect_timeout_s = models.FloatField(default=5.0)
    # Resilience (apps/gateway/upstream/health.py): a request that gets nothing back
    # (no headers, no first stream chunk) within first_byte_timeout_s goes to the next
    # deployment; breaker_failures consecutive failures rest it for breaker_cooldown_s.
    first_byte_timeout_s = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.001), MaxValueValidator(3600)],
        help_text="Seconds to the first byte (a stream's first chunk) before the next "
        "deployment is tried; empty: only the overall timeout",
    )
    breaker_failures = models.PositiveIntegerField(
        default=3,
        db_default=3,
        validators=[MinValueValidator(1), MaxValueValidator(1000)],
        help_text="Consecutive failures (connect errors, timeouts, 5xx) that open the breaker",
    )
    breaker_cooldown_s = models.FloatField(
        default=30.0,
        db_default=30.0,
        validators=[MinValueValidator(0.1), MaxValueValidator(3600)],
        help_text="Seconds an open breaker rests the backend before one probe request",
    )
    extra_headers = models.JSONField(default=dict, blank=True)
    # Whether the server names the stop string it stopped on (vLLM's choices[].stop_reason).
    # Servers that do not (llama.cpp, Ollama, …) are not sent the client's stop strings
    # on the Messages API: the gateway matches them itself, so it can say which one ended
    # the answer.
    reports_stop_sequence = models.BooleanField(default=False)
    # Whether a caller of an opted-in tenant may send its own upstream key for this
    # backend (README, "Bring your own upstream key"); its deployments serve such a
    # request with that key in place of the backend's credential.
    byok_allowed = models.BooleanField(
        default=False,
        db_default=False,
        verbose_name="accepts a caller's own key",
        help_text="A caller of a tenant that allows it may send its own upstream key "
        "(openai_api_key, x-upstream-authorization), used instead of this backend's",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    @property
    def credential(self) -> str:
        return credential_decrypt(self.credential_encrypted)

    @credential.setter
    def credential(self, value: str) -> None:
        self.credential_encrypted = credential_encrypt(value) if value else ""


class Strategy(models.TextChoices):
    """How a model's deployments are ordered for a request (apps/gateway/upstream/balancing.py)."""

    WEIGHTED = "weighted", "weighted (random, by weight)"
    LEAST_BUSY = "least-busy", "least busy (fewest requests in flight)"
    LATENCY = "latency", "latency (fastest time to first token)"
    AFFINITY = "affinity", "affinity (a conversation stays on one deployment)"


def validate_affinity_key(value: str) -> None:
    from django.core.exceptions import ValidationError

    try:
        affinity_source_parse(value)
    except AffinityKeyInvalid as exc:
        raise ValidationError(str(exc)) from None


class Model(models.Model):
    name = models.CharField(max_length=128, unique=True)
    aliases = models.JSONField(default=list, blank=True)
    # Other models' names, tried in order when every deployment of this one failed, or
    # when an upstream said the prompt is too long for it (one level: a fallback's own
    # fallbacks are not followed); checked by catalog.services.model_fallbacks_clean.
    fallbacks = models.JSONField(
        default=list,
        blank=True,
        db_default=[],
        help_text="Models tried in order when every deployment of this one fails",
    )
    context_window_fallbacks = models.JSONField(
        default=list,
        blank=True,
        db_default=[],
        help_text="Models tried in order when an upstream says the prompt is too long",
    )
    display_name = models.CharField(max_length=200, blank=True)
    enabled = models.BooleanField(default=True)
    # Budget bounds: a budget reserves the most a request can cost, i.e. its text's UTF-8
    # bytes (a token is at least a byte) plus these allowances for what the text does not
    # show; billing never exceeds that reservation (README, "Limits and budgets").
    prompt_allowance_per_request = models.PositiveIntegerField(
        default=512,
        help_text="Prompt tokens the chat template may add per request (default system "
        "prompt, tool instructions)",
    )
    prompt_allowance_per_message = models.PositiveIntegerField(
        default=32, help_text="Prompt tokens the chat template may add per message"
    )
    image_token_bound = models.PositiveIntegerField(
        default=4096, help_text="The most prompt tokens one image can cost"
    )
    max_output_tokens = models.PositiveIntegerField(
        default=4096,
        help_text="The most tokens one answer can have: reserved when a request sets no "
        "max_tokens, and the cap of a larger max_tokens",
    )
    strategy = models.CharField(
        max_length=16,
        choices=Strategy.choices,
        default=Strategy.WEIGHTED,
        db_default=Strategy.WEIGHTED,
        help_text="How a request picks among the deployments; the others are its failover",
    )
    # prompt_cache_key by default: the field clients set precisely to say "these requests
    # share a prefix"; a request without it falls back to the prefix hash anyway.
    affinity_key = models.CharField(
        max_length=80,
        default=DEFAULT_AFFINITY_KEY,
        db_default=DEFAULT_AFFINITY_KEY,
        validators=[validate_affinity_key],
        help_text="With the affinity strategy, a request's session key: prompt_cache_key, "
        "user, header:<name> (e.g. header:x-session-id) or prefix (system prompt and first "
        "message); a request without it falls back to prefix",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from apps.catalog.services import FallbacksInvalid, model_fallbacks_clean

        for name in MODEL_FALLBACK_FIELDS:
            try:
                value = model_fallbacks_clean(
                    model_name=self.name, field=name, value=getattr(self, name)
                )
            except FallbacksInvalid as exc:
                raise ValidationError({name: exc.message}) from None
            setattr(self, name, value)


class Deployment(models.Model):
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="deployments")
    backend = models.ForeignKey(Backend, on_delete=models.PROTECT, related_name="deployments")
    upstream_model = models.CharField(max_length=200)
    weight = models.PositiveIntegerField(default=1)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["model", "backend", "upstream_model"], name="deployment_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.model} → {self.backend}/{self.upstream_model}"


RATE = {"max_digits": 14, "decimal_places": 6}


class PriceFields(models.Model):
    """A price rule's fields (apps/billing/pricing.py prices them): per million tokens
    unless said; an empty optional rate follows its default (cached input, cache writes →
    input; reasoning → output)."""

    input_per_mtok = models.DecimalField(**RATE)
    cached_input_per_mtok = models.DecimalField(**RATE, null=True, blank=True)
    cache_write_5m_per_mtok = models.DecimalField(**RATE, null=True, blank=True)
    cache_write_1h_per_mtok = models.DecimalField(**RATE, null=True, blank=True)
    output_per_mtok = models.DecimalField(**RATE, default=Decimal(0))
    reasoning_per_mtok = models.DecimalField(**RATE, null=True, blank=True)
    request_fee = models.DecimalField(
        **RATE, default=Decimal(0), db_default=Decimal(0), help_text="Per request"
    )
    tiers = models.JSONField(
        default=list,
        db_default=[],
        blank=True,
        help_text='Long-context tiers: [{"above_prompt_tokens": 200000, "input_per_mtok": "…", '
        "…}]; above N prompt tokens the whole request is priced at the tier's rates",
    )
    service_tiers = models.JSONField(
        default=dict,
        db_default={},
        blank=True,
        help_text='Multipliers of the token charges per upstream service tier: {"flex": "0.5"}',
    )
    byok_fee_percent = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="A caller-keyed (BYOK) request is charged this percentage of its token price",
    )
    byok_request_fee = models.DecimalField(
        **RATE, default=Decimal(0), db_default=Decimal(0), help_text="Per BYOK request"
    )

    class Meta:
        abstract = True

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from apps.billing.pricing import RULE_FIELDS, PriceRuleInvalid, rule_fields_validate

        try:
            clean = rule_fields_validate({f: getattr(self, f) for f in RULE_FIELDS})
        except PriceRuleInvalid as exc:
            field = exc.field.split(".")[0].split("[")[0]
            raise ValidationError({field: f"{exc.field}: {exc.message}"}) from None
        self.tiers, self.service_tiers = clean["tiers"], clean["service_tiers"]


class Price(PriceFields):
    """The model's price rule (what the operator pays the upstream), in force from
    effective_from until the next version."""

    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="prices")
    effective_from = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["model", "effective_from"], name="price_version")
        ]
        ordering = ["model", "effective_from"]

    def __str__(self) -> str:
        return f"{self.model} from {self.effective_from:%Y-%m-%d}"
