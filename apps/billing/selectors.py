"""Reads for tenant reports. Every function takes the tenant and reads through
``for_tenant(tenant)``: nothing here can return another tenant's rows."""

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncMinute

from apps.billing.models import RateCard, Statement, UsageRollup
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant

BUCKET_WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
_SUMS = {
    "num_model_requests": Sum("requests"),
    "input_tokens": Sum("prompt_tokens"),
    "output_tokens": Sum("completion_tokens"),
    "input_cached_tokens": Sum("cached_tokens"),
    "price": Sum("price"),
}
_LEDGER_SUMS = {
    "num_model_requests": Count("id"),
    "input_tokens": Sum("prompt_tokens"),
    "output_tokens": Sum("completion_tokens"),
    "input_cached_tokens": Sum("cached_tokens"),
    "price": Sum("price"),
}
GROUP_FIELDS = {"model": "model", "api_key_id": "api_key_id"}

RECORD_COLUMNS = (
    "request_id",
    "created_at",
    "api_key_id",
    "model",
    "requested_model",
    "deployment",
    "protocol",
    "endpoint",
    "stream",
    "status",
    "outcome",
    "prompt_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "completion_tokens",
    "reasoning_tokens",
    "tokens_estimated",
    "service_tier",
    "byok",
    "latency_ms",
    "ttft_ms",
    "price",
    # Attribution, after the older columns so their positions stay.
    "project_id",
    "end_user",
    "tags",
)
# The CSV headers of those columns: a tenant's "cost" is what it pays, the ledger's price
# (as ``usage.cost`` on answers); the operator's cost is never shown to a tenant.
RECORD_HEADERS = tuple("cost" if c == "price" else c for c in RECORD_COLUMNS)
ROLLUP_COLUMNS = (
    "bucket_start",
    "api_key_id",
    "model",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "price",
)
ROLLUP_HEADERS = tuple("cost" if c == "price" else c for c in ROLLUP_COLUMNS)


def api_key_ids_for_tenant(*, tenant: Tenant, ids: Sequence[int]) -> set[int]:
    return set(ApiKey.objects.filter(tenant=tenant, id__in=ids).values_list("id", flat=True))


def usage_aggregate(
    *,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    width: str,
    group_by: Sequence[str] = (),
    api_key_ids: Sequence[int] = (),
    models: Sequence[str] = (),
) -> dict[datetime, list[dict[str, Any]]]:
    """Totals per bucket start (and per group) over [start, end), bucket-aligned bounds.

    1h and 1d read the rollups (hour/day rows); 1m reads the ledger itself.
    """
    groups = [GROUP_FIELDS[g] for g in group_by]
    if width == "1m":
        rows = UsageRecord.objects.for_tenant(tenant).filter(
            created_at__gte=start, created_at__lt=end
        )
        bucket = TruncMinute("created_at", tzinfo=UTC)
        sums = _LEDGER_SUMS
    else:
        granularity = UsageRollup.Granularity.HOUR if width == "1h" else UsageRollup.Granularity.DAY
        rows = UsageRollup.objects.for_tenant(tenant).filter(
            granularity=granularity, bucket_start__gte=start, bucket_start__lt=end
        )
        bucket = None
        sums = _SUMS
    if api_key_ids:
        rows = rows.filter(api_key_id__in=api_key_ids)
    if models:
        rows = rows.filter(model__in=models)
    rows = rows.order_by()
    if bucket is not None:
        rows = rows.annotate(bucket=bucket).values("bucket", *groups)
        key = "bucket"
    else:
        rows = rows.values("bucket_start", *groups)
        key = "bucket_start"
    result: dict[datetime, list[dict[str, Any]]] = {}
    for row in rows.annotate(**sums).order_by(key, *groups):
        row["price"] = Decimal(row["price"] or 0)
        result.setdefault(row.pop(key), []).append(row)
    return result


def usage_records_iter(
    *, tenant: Tenant, start: datetime, end: datetime, chunk_size: int = 5000
) -> Iterator[tuple]:
    """Raw ledger rows of the tenant in [start, end), oldest first, from a server-side cursor."""
    return (
        UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=start, created_at__lt=end)
        .order_by("created_at", "id")
        .values_list(*RECORD_COLUMNS)
        .iterator(chunk_size=chunk_size)
    )


def rollups_iter(
    *, tenant: Tenant, start: datetime, end: datetime, granularity: str, chunk_size: int = 5000
) -> Iterator[tuple]:
    return (
        UsageRollup.objects.for_tenant(tenant)
        .filter(granularity=granularity, bucket_start__gte=start, bucket_start__lt=end)
        .order_by("bucket_start", "api_key_id", "model")
        .values_list(*ROLLUP_COLUMNS)
        .iterator(chunk_size=chunk_size)
    )


def ledger_totals(*, tenant: Tenant, start: datetime, end: datetime) -> dict[str, Any]:
    """The ledger's own totals for a tenant and range (what every report must equal)."""
    totals = (
        UsageRecord.objects.for_tenant(tenant)
        .filter(created_at__gte=start, created_at__lt=end)
        .aggregate(
            requests=Count("id"),
            errors=Count("id", filter=Q(status__gte=400)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cached_tokens=Sum("cached_tokens"),
            price=Sum("price"),
        )
    )
    return {k: (v or 0) if k != "price" else Decimal(v or 0) for k, v in totals.items()}


def statement_list(*, tenant: Tenant):
    return Statement.objects.for_tenant(tenant).order_by("-period_start")


def statement_get(*, tenant: Tenant, statement_id: int) -> Statement | None:
    return (
        Statement.objects.for_tenant(tenant)
        .prefetch_related("lines")
        .filter(id=statement_id)
        .first()
    )


def rate_card_list(*, tenant: Tenant) -> QuerySet[RateCard]:
    """The tenant's rate card versions, oldest first, with their overrides (staff reads:
    a tenant never sees its rate card, only what it pays)."""
    return (
        RateCard.objects.for_tenant(tenant)
        .select_related("tenant")
        .prefetch_related("prices__model")
        .order_by("effective_from")
    )


def rate_card_get(*, tenant: Tenant, rate_card_id: int) -> RateCard | None:
    return rate_card_list(tenant=tenant).filter(id=rate_card_id).first()
