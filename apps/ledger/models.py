from django.db import models

from apps.keys.models import ApiKey
from apps.tenants.models import Tenant


class UsageRecord(models.Model):
    """One row per request that reached the gateway with a valid key: the exact ledger."""

    class Protocol(models.TextChoices):
        OPENAI = "openai"
        ANTHROPIC = "anthropic"

    request_id = models.CharField(max_length=64, unique=True)
    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="+")
    api_key = models.ForeignKey(ApiKey, on_delete=models.PROTECT, related_name="+")
    model = models.CharField(max_length=128, help_text="Public model name")
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
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    content_filter = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=False)
    ingested_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "created_at"], name="usage_tenant_time"),
            models.Index(fields=["api_key", "created_at"], name="usage_key_time"),
            models.Index(fields=["created_at"], name="usage_time"),
        ]

    def __str__(self) -> str:
        return self.request_id
