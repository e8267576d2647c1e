"""Billing: rollups of the ledger, monthly statements, reconciliation runs.

Money columns hold exact sums of ledger amounts (12 decimal places, see pricing.py); the
only rounding is a closed statement's ``amount_due`` (to the cent). ``cost`` is what the
operator pays upstreams, ``price`` what the tenant pays (its rate card); statements bill
price.
"""

from decimal import Decimal

from django.db import models

from apps.catalog.models import Model, PriceFields
from apps.keys.models import ApiKey
from apps.tenants.models import Tenant
from apps.tenants.scoping import TenantScopedQuerySet

MONEY = {"max_digits": 28, "decimal_places": 12}


class UsageRollup(models.Model):
    """Ledger totals per bucket (hour or day, UTC) × tenant × project × key × model.

    Rebuilt, never incremented: a bucket's rows are deleted and re-inserted from the
    ledger (hours) or from the hour rows (days) in one transaction, so recomputing gives
    the same rows.
    """

    class Granularity(models.TextChoices):
        HOUR = "hour"
        DAY = "day"

    granularity = models.CharField(max_length=4, choices=Granularity.choices)
    bucket_start = models.DateTimeField()
    # Lookups go through the indexes below; no separate FK indexes.
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The ledger row's project; a row recorded before projects counts in its key's
    # project (services._rollup_hour_rebuild), so NULL only for a key without one.
    project = models.ForeignKey(
        "projects.Project", null=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    model = models.CharField(max_length=128)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0, help_text="Records with status >= 400")
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=0)
    price = models.DecimalField(**MONEY, default=0, db_default=Decimal(0))
    # The price of the prepaid records among them (paid from the balance): what an open
    # statement's amount due leaves out.
    prepaid_price = models.DecimalField(**MONEY, default=0, db_default=Decimal(0))

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["granularity", "bucket_start", "tenant", "project", "api_key", "model"],
                name="rollup_bucket_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [
            models.Index(fields=["tenant", "granularity", "bucket_start"], name="rollup_tenant"),
            models.Index(fields=["granularity", "bucket_start"], name="rollup_bucket"),
        ]

    def __str__(self) -> str:
        return (
            f"{self.granularity} {self.bucket_start:%Y-%m-%d %H:%M} "
            f"{self.tenant_id}/{self.project_id}/{self.api_key_id}/{self.model}"
        )


class _DayMeasures(models.Model):
    """A tenant's day (UTC) and project with the measures of UsageRollup, for the
    attribution rollups below."""

    bucket_start = models.DateTimeField(help_text="The UTC day")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="+", db_index=False)
    # The ledger row's project, or its key's (as UsageRollup's).
    project = models.ForeignKey(
        "projects.Project", null=True, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    cost = models.DecimalField(**MONEY, default=0)
    price = models.DecimalField(**MONEY, default=0)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        abstract = True


class _AttributionMeasures(_DayMeasures):
    model = models.CharField(max_length=128)

    class Meta:
        abstract = True


class EndUserRollup(_AttributionMeasures):
    """Ledger totals per day (UTC) × tenant × project × end user × model ("" = none given).

    Unlike UsageRollup these are added to, once per ledger id range: the rollup job adds
    the records with ids above the rollup cursor's high-water mark (late ones included) in
    the transaction that moves the mark, so a re-run adds nothing twice; a repair rebuilds
    a whole day from the ledger (services.rollup_buckets_recompute).
    """

    end_user = models.CharField(max_length=256)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "bucket_start", "project", "end_user", "model"],
                name="end_user_rollup_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [
            models.Index(
                fields=["tenant", "end_user", "bucket_start"], name="end_user_rollup_user"
            ),
            models.Index(fields=["bucket_start"], name="end_user_rollup_day"),
        ]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} {self.tenant_id}/{self.project_id}/{self.end_user}"


class EndUserDayTotal(_DayMeasures):
    """EndUserRollup summed over models: day × tenant × project × end user, the rows of a
    report by end user (and project) without a model in its groups or filters, read
    without aggregating them again. Built with EndUserRollup, from the same ledger id
    ranges. On PostgreSQL a covering index (end_user_day_total_report_by_user, migration
    0007: end user before project) serves those reports from the index alone, in its
    order."""

    end_user = models.CharField(max_length=256)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "bucket_start", "project", "end_user"],
                name="end_user_day_total_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["bucket_start"], name="end_user_day_total_day")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} {self.tenant_id}/{self.project_id}/{self.end_user}"


class TagRollup(_AttributionMeasures):
    """Ledger totals per day (UTC) × tenant × project × key × model × (tag key, value): a
    record counts once under each of its tags (never twice under one key: a record's tags
    are a {key: value} object). Built like EndUserRollup."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+", db_index=False)
    tag_key = models.CharField(max_length=64)
    tag_value = models.CharField(max_length=128)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=[
                    "tenant",
                    "bucket_start",
                    "tag_key",
                    "tag_value",
                    "project",
                    "api_key",
                    "model",
                ],
                name="tag_rollup_unique",
                nulls_distinct=False,
            )
        ]
        indexes = [models.Index(fields=["bucket_start"], name="tag_rollup_day")]

    def __str__(self) -> str:
        return f"{self.bucket_start:%Y-%m-%d} {self.tenant_id} {self.tag_key}:{self.tag_value}"


class BillingCursor(models.Model):
    """Progress markers of the billing jobs (e.g. rollups: ingested_at handled so far, and
    the ledger high-water id every rollup row covers exactly)."""

    name = models.CharField(max_length=64, primary_key=True)
    position = models.DateTimeField(null=True, blank=True)
    high_water = models.BigIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.position}"


class Statement(models.Model):
    """A tenant's monthly statement (UTC calendar month).

    Open: its lines are refreshed from the ledger. Closed: frozen. It bills the ledger
    records with id <= ``ledger_high_water`` (taken at close) that are either of its month
    or late usage of earlier, already-closed months (see services.statement_lines_compute).
    """

    class Status(models.TextChoices):
        OPEN = "open"
        CLOSED = "closed"

    tenant = models.ForeignKey(Tenant, on_delete=models.PROTECT, related_name="statements")
    period_start = models.DateField(help_text="First day of the month (UTC)")
    period_end = models.DateField(help_text="First day of the next month (exclusive)")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    currency = models.CharField(max_length=3, default="usd")
    total = models.DecimalField(**MONEY, default=0, help_text="Exact sum of the lines")
    amount_due = models.DecimalField(
        max_digits=20, decimal_places=2, null=True, blank=True, help_text="total to the cent"
    )
    ledger_high_water = models.BigIntegerField(
        null=True, blank=True, help_text="Highest ledger record id billed (set at close)"
    )
    refreshed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # The balance journal over the month (apps/wallet), for a tenant that has a balance
    # (prepaid now, or any journal entry); null otherwise. opening + credits − usage =
    # closing, each equal to the journal at the month's bounds. Usage paid from the
    # balance is not in amount_due.
    opening_balance = models.DecimalField(**MONEY, null=True, blank=True)
    balance_credits = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="Grants, top-ups, refunds and adjustments"
    )
    balance_usage = models.DecimalField(
        **MONEY, null=True, blank=True, help_text="The month's prepaid usage (its price)"
    )
    closing_balance = models.DecimalField(**MONEY, null=True, blank=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "period_start"], name="statement_month")
        ]
        ordering = ["tenant", "period_start"]

    def __str__(self) -> str:
        return f"{self.tenant} {self.period_start:%Y-%m} ({self.status})"

    @property
    def is_closed(self) -> bool:
        return self.status == self.Status.CLOSED


class StatementLine(models.Model):
    class Kind(models.TextChoices):
        USAGE = "usage"
        LATE_USAGE = "late_usage"

    statement = models.ForeignKey(Statement, on_delete=models.CASCADE, related_name="lines")
    kind = models.CharField(max_length=12, choices=Kind.choices, default=Kind.USAGE)
    model = models.CharField(max_length=128)
    usage_period = models.DateField(help_text="Month the usage happened in")
    description = models.CharField(max_length=200)
    requests = models.BigIntegerField(default=0)
    prompt_tokens = models.BigIntegerField(default=0)
    completion_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    amount = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["statement", "kind", "usage_period", "model"]
        constraints = [
            models.UniqueConstraint(
                fields=["statement", "kind", "usage_period", "model"], name="statement_line_unique"
            )
        ]

    def __str__(self) -> str:
        return self.description


class ReconciliationRun(models.Model):
    """One run of the reconciliation task; ``differences`` lists every mismatch found."""

    started_at = models.DateTimeField(auto_now_add=True)
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    checked = models.JSONField(default=dict)
    differences = models.JSONField(default=list)
    ok = models.BooleanField(default=True)

    class Meta:
        ordering = ["-started_at"]

    def __str__(self) -> str:
        return f"reconciliation {self.started_at:%Y-%m-%d %H:%M} {'ok' if self.ok else 'DIFF'}"


class RateCard(models.Model):
    """What a tenant pays, in force from ``effective_from`` until its next version: the
    models' own price rules with ``markup_percent`` added (negative: a discount), except
    the models the card prices itself (``prices``: RateCardPrice). Append-only like
    prices, so a change prices only later requests."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="rate_cards")
    effective_from = models.DateTimeField()
    markup_percent = models.DecimalField(
        max_digits=12,
        decimal_places=6,
        default=Decimal(0),
        help_text="Percent added to every model's price rule (negative: a discount)",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantScopedQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "effective_from"], name="rate_card_version")
        ]
        ordering = ["tenant", "effective_from"]

    def __str__(self) -> str:
        return f"{self.tenant} rate card from {self.effective_from:%Y-%m-%d %H:%M}"

    def clean(self) -> None:
        from django.core.exceptions import ValidationError

        from apps.billing.pricing import PriceRuleInvalid, markup_validate

        try:
            markup_validate(self.markup_percent)
        except PriceRuleInvalid as exc:
            raise ValidationError({"markup_percent": exc.message}) from None


class RateCardPrice(PriceFields):
    """A rate card's own price rule for one model (no markup applied to it)."""

    rate_card = models.ForeignKey(RateCard, on_delete=models.CASCADE, related_name="prices")
    model = models.ForeignKey(Model, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rate_card", "model"], name="rate_card_model")
        ]

    def __str__(self) -> str:
        return f"{self.rate_card}: {self.model}"
