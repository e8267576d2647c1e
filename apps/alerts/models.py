from django.conf import settings
from django.db import models

from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet

DEFAULT_BUDGET_PERCENTS = [50, 80, 95, 100]


def _default_percents() -> list[int]:
    return list(DEFAULT_BUDGET_PERCENTS)


class AlertSettings(models.Model):
    """A tenant's thresholds. A tenant without a row has the defaults (budgets at 50, 80,
    95 and 100 %, no balance thresholds, email on)."""

    tenant = models.OneToOneField(Tenant, on_delete=models.CASCADE, related_name="alert_settings")
    # Percent of a budget (the tenant's and each key's) spent in its period.
    budget_percents = models.JSONField(default=_default_percents)
    # Decimal strings: "the prepaid balance fell below this amount".
    balance_below = models.JSONField(default=list, blank=True)
    email_enabled = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TenantScopedQuerySet.as_manager()

    def __str__(self) -> str:
        return f"alert settings of {self.tenant}"


class AlertEvent(models.Model):
    """One alert (or test event), raised exactly once per (tenant, dedupe_key); the
    outbox its webhook deliveries and its email are sent from."""

    class Email(models.TextChoices):
        NONE = "none"  # no email for this event (test events, email off, no recipients)
        PENDING = "pending"
        SENDING = "sending"
        SENT = "sent"
        FAILED = "failed"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alert_events")
    public_id = models.CharField(max_length=40, unique=True)  # "evt_…", the body's "id"
    type = models.CharField(max_length=64)
    dedupe_key = models.CharField(max_length=200)
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    email_status = models.CharField(max_length=8, choices=Email.choices, default=Email.NONE)
    email_attempts = models.PositiveSmallIntegerField(default=0)
    email_claimed_at = models.DateTimeField(null=True, blank=True)
    email_recipients = models.PositiveSmallIntegerField(default=0)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "dedupe_key"], name="alert_event_once")
        ]
        indexes = [
            models.Index(fields=["tenant", "-created_at"], name="alert_event_time"),
            models.Index(
                fields=["email_status"],
                condition=models.Q(email_status__in=["pending", "sending"]),
                name="alert_event_email_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.type} ({self.public_id})"


class AlertFired(models.Model):
    """That a threshold fired for a scope in a period: the once-only state, in Postgres so
    that a restart never resends. ``scope`` is "tenant", "key:<id>" or "balance";
    ``period_id`` the budget period ("m202606", "d20260601", "life") or, for a balance
    threshold, its episode ("e0", "e1", … a new one after each re-arm)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts_fired")
    scope = models.CharField(max_length=40)
    threshold = models.CharField(max_length=40)
    period_id = models.CharField(max_length=40)
    event = models.ForeignKey(AlertEvent, null=True, on_delete=models.SET_NULL, related_name="+")
    fired_at = models.DateTimeField(auto_now_add=True)
    # Balance thresholds: when the balance rose back above it (the next fall fires again).
    rearmed_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "scope", "threshold", "period_id"], name="alert_fired_once"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.scope} {self.threshold} {self.period_id}"


class WebhookEndpoint(models.Model):
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.URLField(max_length=500)
    description = models.CharField(max_length=200, blank=True)
    # Fernet-encrypted (apps/catalog/crypto.py); shown once, when created or rotated.
    secret_encrypted = models.TextField()
    secret_prefix = models.CharField(max_length=16)
    enabled = models.BooleanField(default=True)
    # Event types it receives; ["*"] = every type.
    event_types = models.JSONField(default=list)
    # Staff only: plain http, and addresses the SSRF guard refuses (loopback, private, …).
    allow_http = models.BooleanField(default=False)
    allow_internal = models.BooleanField(default=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        ordering = ["tenant", "id"]

    def __str__(self) -> str:
        return f"{self.tenant} webhook #{self.pk}"

    def receives(self, event_type: str) -> bool:
        return "*" in self.event_types or event_type in self.event_types


class WebhookDelivery(models.Model):
    """One event to one endpoint: retried with backoff until it succeeds or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SUCCEEDED = "succeeded"
        FAILED = "failed"  # gave up (retry window over)

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+")
    event = models.ForeignKey(AlertEvent, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the next attempt is due; while an attempt runs, the end of its lease.
    next_attempt_at = models.DateTimeField()
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="webhook_delivery_once")
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="pending"),
                name="webhook_delivery_due",
            ),
            models.Index(fields=["endpoint", "-created_at"], name="webhook_delivery_log"),
        ]

    def __str__(self) -> str:
        return f"{self.event} → {self.endpoint} ({self.status})"


class WebhookAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="log")
    number = models.PositiveSmallIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="webhook_attempt_once")
        ]
        ordering = ["delivery", "number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
