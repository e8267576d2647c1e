from django.db import models

from apps.keys.models import ApiKey
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet


class UsageRecord(models.Model):
    """One row per request that reached the gateway with a valid key: the exact ledger."""

    class Protocol(models.TextChoices):
        OPENAI = "openai"
        ANTHROPIC = "anthropic"

    # Unique with created_at (the partition key on PostgreSQL, migration 0011): an event
    # replayed with its own timestamp lands once.
    request_id = models.CharField(max_length=64)
    # No single-column FK indexes: (tenant, created_at) and (api_key, created_at) cover them.
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+", db_index=False)
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+", db_index=False)
    model = models.CharField(max_length=128, help_text="Public model name (the one that served)")
    # The model asked for: ``model`` unless a fallback of it served (README, "Fallback
    # models"); always filled, so a report needs no COALESCE.
    requested_model = models.CharField(
        max_length=128,
        blank=True,
        default="",
        db_default="",
        help_text="Public model name the client asked for",
    )
    deployment = models.CharField(max_length=300, blank=True, help_text="backend/upstream_model")
    protocol = models.CharField(max_length=16, choices=Protocol.choices)
    endpoint = models.CharField(max_length=64, blank=True)
    stream = models.BooleanField(default=False)
    status = models.PositiveSmallIntegerField()
    outcome = models.CharField(max_length=40)
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    cached_tokens = models.PositiveIntegerField(default=0)
    tokens_estimated = models.BooleanField(default=False)
    # Inside prompt_tokens (cache writes by TTL) and completion_tokens (reasoning), as
    # cached_tokens is inside prompt_tokens.
    cache_write_5m_tokens = models.PositiveIntegerField(default=0, db_default=0)
    cache_write_1h_tokens = models.PositiveIntegerField(default=0, db_default=0)
    reasoning_tokens = models.PositiveIntegerField(default=0, db_default=0)
    # The upstream's, as it said it ("" when it did not).
    service_tier = models.CharField(max_length=32, blank=True, default="", db_default="")
    # Served with the caller's own upstream key (never stored; README, "Bring your own
    # upstream key").
    byok = models.BooleanField(default=False, db_default=False)
    # The request's budget reservation in tokens; the cost prices the counts capped at
    # these (NULL: no cap), so an upstream reporting more is recorded but not billed.
    prompt_tokens_bound = models.PositiveBigIntegerField(null=True, blank=True)
    completion_tokens_bound = models.PositiveBigIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    content_filter = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=False)
    # Set when the row lands; with a BRIN index (migration 0002, PostgreSQL) it finds the
    # hours touched by recently ingested (also late) events.
    ingested_at = models.DateTimeField(auto_now_add=True)
    # A prepaid tenant's request: its price is debited from the tenant's balance (this row
    # is the balance journal's usage debit, apps/wallet).
    prepaid = models.BooleanField(default=False, db_default=False)
    # Who it was for: the key's project (NULL: recorded before projects), the tenant's own
    # end-user id ("" = none given; apps/gateway/protocol/attribution.py bounds it) and
    # the request's tags merged with the key's default tags, {key: value} (NULL = none).
    project = models.ForeignKey(
        "projects.Project",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    end_user = models.CharField(max_length=256, blank=True, default="", db_default="")
    tags = models.JSONField(null=True, blank=True)
    # Exact amounts fixed when the request was settled (apps/billing/pricing.py): cost is
    # what the operator pays the upstream, price what the tenant pays (budgets,
    # statements and the tenant's reports count price).
    cost = models.DecimalField(max_digits=24, decimal_places=12, default=0)
    price = models.DecimalField(max_digits=24, decimal_places=12, default=0)
    # The rules used: the model's price version (NULL = no price for this model at that
    # time: cost 0, flagged), the tenant's rate card and its own rule for the model.
    cost_rule = models.ForeignKey(
        "catalog.Price",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    rate_card = models.ForeignKey(
        "billing.RateCard",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )
    price_rule = models.ForeignKey(
        "billing.RateCardPrice",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
    )

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["request_id", "created_at"], name="usage_request_once")
        ]
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="usage_tenant_time"),
            models.Index(fields=["api_key", "created_at"], name="usage_key_time"),
            models.Index(fields=["created_at"], name="usage_time"),
        ]

    def __str__(self) -> str:
        return self.request_id

    @property
    def unpriced(self) -> bool:
        return self.cost_rule_id is None and self.price_rule_id is None
