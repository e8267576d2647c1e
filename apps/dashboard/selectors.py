"""Reads for the dashboard pages. Tenant reads take the tenant and go through it (or
through apps.billing.selectors, which read ``for_tenant(tenant)``); staff reads are
platform-wide and only called from staff views."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from django.db import connection
from django.db.models import Count, Q, QuerySet, Sum
from django.http import Http404
from django.utils import timezone

from apps.billing import selectors as billing
from apps.billing.models import RateCard, UsageRollup
from apps.catalog.models import Backend, Model
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.ledger.selectors import ledger_last_ingest, ledger_pipeline_health
from apps.projects.models import Project
from apps.tenants.access import TenantAccess
from apps.tenants.models import AdminToken, Membership, Tenant

# Keys ------------------------------------------------------------------------------------


def key_status(api_key: ApiKey, now: datetime | None = None) -> str:
    if api_key.revoked_at is not None:
        return "revoked"
    if api_key.expires_at is not None and api_key.expires_at <= (now or timezone.now()):
        return "expired"
    return "active"


def key_list(
    *,
    access: TenantAccess,
    include_revoked: bool = False,
    search: str = "",
    project_id: int | None = None,
) -> QuerySet[ApiKey]:
    """The keys the caller may see (their tenant's, of the projects they see), active
    first then by name; ``search`` matches name or prefix; ``project_id``: one project's."""
    keys = ApiKey.objects.for_access(access).select_related("project")
    if project_id is not None:
        keys = keys.filter(project_id=project_id)
    if not include_revoked:
        keys = keys.filter(revoked_at__isnull=True)
    if search:
        keys = keys.filter(Q(name__icontains=search) | Q(prefix__startswith=search))
    return keys.order_by("revoked_at", "name", "-created_at")


def key_statuses(keys: Iterable[ApiKey], access: TenantAccess | None = None) -> None:
    """Set ``status`` (active / expired / revoked) on each key, ``previous_until`` (when
    the secret its last rotation replaced stops working; None once it has), and with
    ``access`` ``manageable`` (the caller may change it), for display."""
    now = timezone.now()
    for api_key in keys:
        api_key.status = key_status(api_key, now)
        api_key.previous_until = api_key.previous_secret_valid_until(now)
        if access is not None:
            api_key.manageable = access.can_manage_keys_of(api_key.project_id)


def key_get(*, access: TenantAccess, key_id: int) -> ApiKey:
    """The key or 404: another tenant's key, or one of a project the caller does not
    see, does not exist here."""
    api_key = (
        ApiKey.objects.for_access(access)
        .filter(id=key_id)
        .select_related("tenant", "project")
        .first()
    )
    if api_key is None:
        raise Http404("No such key.")
    key_statuses([api_key], access)
    return api_key


# Usage -----------------------------------------------------------------------------------


@dataclass
class UsageCharts:
    days: list[str]
    group: str
    requests: dict[str, list[int]] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    cost: dict[str, list[float]] = field(default_factory=dict)
    totals: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "days": self.days,
            "group": self.group,
            "requests": self.requests,
            "tokens": self.tokens,
            "cost": self.cost,
        }


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


# The usage page's splits: its query value → the report's group_by (tag: + the tag key).
USAGE_SPLITS = {
    "model": "model",
    "key": "api_key_id",
    "project": "project_id",
    "user": "user_id",
    "tag": "tag",
}
# Series drawn per chart; the rest are folded into one (the table lists them all).
MAX_SERIES = 20
OTHER = "(other)"
NONE_LABELS = {"user": "(no end user)", "tag": "(untagged)", "project": "(no project)"}


def _split_labels(tenant: Tenant, group: str, values: set[Any]) -> dict[Any, str]:
    if group == "key":
        names = dict(ApiKey.objects.filter(tenant=tenant, id__in=values).values_list("id", "name"))
        return {i: f"{names.get(i, '?')} (#{i})" for i in values}
    if group == "project":
        names = dict(
            Project.objects.for_tenant(tenant).filter(id__in=values).values_list("id", "name")
        )
        return {i: f"{names[i]} (#{i})" if i in names else NONE_LABELS[group] for i in values}
    return {v: NONE_LABELS[group] if v is None else str(v) for v in values}


def usage_charts(
    *,
    tenant: Tenant,
    start: date,
    end: date,
    group: str,
    tag_key: str = "",
    project_ids: Sequence[int] = (),
) -> UsageCharts:
    """Requests, tokens and cost per day over [start, end] (whole UTC days, inclusive),
    split by model, key, project, end user or the value of the tag ``tag_key``, from
    apps.billing.selectors (daily rollups; end users and tags from the ledger);
    ``project_ids``: only those projects' usage ([]: the whole tenant's)."""
    group_by = USAGE_SPLITS[group] if group != "tag" else billing.TAG_GROUP + tag_key
    results = billing.usage_aggregate(
        tenant=tenant,
        start=_midnight(start),
        end=_midnight(end + timedelta(days=1)),
        width="1d",
        group_by=[group_by],
        project_ids=project_ids,
    )

    def value(row: dict[str, Any]) -> Any:
        return row["tags"][tag_key] if group == "tag" else row[USAGE_SPLITS[group]]

    labels = _split_labels(tenant, group, {value(r) for rows in results.values() for r in rows})
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    charts = UsageCharts(days=[d.isoformat() for d in days], group=group)
    totals: dict[str, dict[str, Any]] = {}
    daily: dict[str, list[dict[str, Any]]] = {}
    index = {_midnight(d): n for n, d in enumerate(days)}
    for bucket, rows in results.items():
        n = index.get(bucket)
        if n is None:
            continue
        for row in rows:
            name = labels[value(row)]
            requests = row["num_model_requests"] or 0
            tokens = (row["input_tokens"] or 0) + (row["output_tokens"] or 0)
            # What the tenant pays (its price; the operator's cost is for staff only).
            daily.setdefault(name, []).append(
                {"n": n, "requests": requests, "tokens": tokens, "cost": row["price"]}
            )
            total = totals.setdefault(
                name,
                {
                    "name": name,
                    "requests": 0,
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cost": Decimal(0),
                },
            )
            total["requests"] += requests
            total["input_tokens"] += row["input_tokens"] or 0
            total["output_tokens"] += row["output_tokens"] or 0
            total["cost"] += row["price"]
    drawn = sorted(totals, key=lambda name: (-totals[name]["cost"], name))
    kept = set(drawn[:MAX_SERIES] if len(drawn) > MAX_SERIES else drawn)
    cost: dict[str, list[Decimal]] = {}
    for name, points in daily.items():
        series = name if name in kept else OTHER
        for chart in (charts.requests, charts.tokens):
            chart.setdefault(series, [0] * len(days))
        cost.setdefault(series, [Decimal(0)] * len(days))
        for point in points:
            charts.requests[series][point["n"]] += point["requests"]
            charts.tokens[series][point["n"]] += point["tokens"]
            cost[series][point["n"]] += point["cost"]
    charts.cost = {series: [float(v) for v in values] for series, values in cost.items()}
    charts.totals = sorted(totals.values(), key=lambda t: t["name"])
    return charts


def period_start(period: str, now: datetime) -> datetime | None:
    """Start of the budget period in force (UTC); None for lifetime."""
    if period == "daily":
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return None


@dataclass
class BudgetLine:
    label: str
    period: str
    budget: Decimal
    spent: Decimal

    @property
    def percent(self) -> int:
        if not self.budget:
            return 100 if self.spent else 0
        return min(100, int(self.spent * 100 / self.budget))


def _spend(records: QuerySet, since: datetime | None) -> Decimal:
    if since is not None:
        records = records.filter(created_at__gte=since)
    return Decimal(records.aggregate(total=Sum("price"))["total"] or 0)


def budgets(
    *, tenant: Tenant, now: datetime | None = None, project_ids: Sequence[int] = ()
) -> tuple[Decimal, list[BudgetLine]]:
    """This month's spend of the tenant, and the current period's spend against each
    budget (the tenant's and its active keys'), from the ledger. ``project_ids``: the
    spend of those projects only, against their keys' budgets (not the tenant's)."""
    now = now or timezone.now()
    records = UsageRecord.objects.for_tenant(tenant)
    keys = ApiKey.objects.filter(tenant=tenant)
    if project_ids:
        records = records.annotate(g_project=billing.ledger_project()).filter(
            g_project__in=project_ids
        )
        keys = keys.filter(project_id__in=project_ids)
    month_spend = _spend(records, period_start("monthly", now))
    lines = []
    if tenant.budget_amount is not None and not project_ids:
        lines.append(
            BudgetLine(
                label=f"tenant {tenant.name}",
                period=tenant.budget_period,
                budget=tenant.budget_amount,
                spent=_spend(records, period_start(tenant.budget_period, now)),
            )
        )
    for api_key in keys.filter(revoked_at__isnull=True, budget_amount__isnull=False).order_by(
        "name"
    ):
        lines.append(
            BudgetLine(
                label=f"key {api_key.name} ({api_key.prefix}…)",
                period=api_key.budget_period,
                budget=api_key.budget_amount,
                spent=_spend(
                    records.filter(api_key=api_key), period_start(api_key.budget_period, now)
                ),
            )
        )
    return month_spend, lines


def recent_requests(
    *, tenant: Tenant, limit: int = 20, project_ids: Sequence[int] = ()
) -> list[dict[str, Any]]:
    """The tenant's latest ledger rows (what just happened, before any rollup);
    ``project_ids``: of those projects only."""
    records = UsageRecord.objects.for_tenant(tenant)
    if project_ids:
        records = records.annotate(g_project=billing.ledger_project()).filter(
            g_project__in=project_ids
        )
    rows = records.order_by("-created_at", "-id").values(
        "request_id",
        "created_at",
        "api_key__name",
        "model",
        "status",
        "outcome",
        "prompt_tokens",
        "completion_tokens",
        "latency_ms",
        "price",
        "project__name",
        "end_user",
        "tags",
    )[:limit]
    # Tags as one text (a template's ``tags.items`` would read a tag named "items").
    return [
        {**row, "tags": " ".join(f"{k}:{v}" for k, v in sorted((row["tags"] or {}).items()))}
        for row in rows
    ]


# Members and tokens ----------------------------------------------------------------------


def member_list(*, tenant: Tenant) -> list[Membership]:
    return list(
        Membership.objects.filter(tenant=tenant).select_related("user").order_by("user__username")
    )


def member_get(*, tenant: Tenant, membership_id: int) -> Membership:
    membership = (
        Membership.objects.filter(tenant=tenant, id=membership_id).select_related("user").first()
    )
    if membership is None:
        raise Http404("No such member.")
    return membership


def admin_token_list(*, tenant: Tenant) -> list[AdminToken]:
    return list(AdminToken.objects.filter(tenant=tenant).order_by("revoked_at", "name"))


def admin_token_get(*, tenant: Tenant, token_id: int) -> AdminToken:
    token = AdminToken.objects.filter(tenant=tenant, id=token_id).first()
    if token is None:
        raise Http404("No such token.")
    return token


# Staff -----------------------------------------------------------------------------------


def staff_tenants() -> list[Tenant]:
    """Every tenant with its active keys, members and this month's price (what it
    pays), cost (what its upstreams cost) and margin, from the ledger."""
    month = period_start("monthly", timezone.now())
    spend = {
        tenant_id: (price, cost)
        for tenant_id, price, cost in UsageRecord.objects.filter(created_at__gte=month)
        .order_by()
        .values("tenant_id")
        .annotate(price=Sum("price"), cost=Sum("cost"))
        .values_list("tenant_id", "price", "cost")
    }
    tenants = list(
        Tenant.objects.annotate(
            active_keys=Count(
                "api_keys", filter=Q(api_keys__revoked_at__isnull=True), distinct=True
            ),
            members=Count("memberships", distinct=True),
        ).order_by("name")
    )
    for tenant in tenants:
        price, cost = spend.get(tenant.id) or (0, 0)
        tenant.month_spend = Decimal(price or 0)
        tenant.month_cost = Decimal(cost or 0)
        tenant.month_margin = tenant.month_spend - tenant.month_cost
    return tenants


def _deployment_stats(since: datetime) -> dict[str, dict[str, Any]]:
    """Per deployment label ("backend/upstream_model"): requests, errors and latency
    percentiles of the ledger rows since ``since``."""
    records = UsageRecord.objects.filter(created_at__gte=since)
    stats: dict[str, dict[str, Any]] = {
        row["deployment"]: {"requests": row["n"], "errors": row["errors"]}
        for row in records.order_by()
        .values("deployment")
        .annotate(n=Count("id"), errors=Count("id", filter=Q(status__gte=500)))
    }
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT deployment,"
                " percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),"
                " percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms)"
                f" FROM {UsageRecord._meta.db_table} WHERE created_at >= %s GROUP BY deployment",
                [since],
            )
            for label, p50, p95 in cursor.fetchall():
                stats.setdefault(label, {}).update(p50_ms=p50, p95_ms=p95)
    else:  # the embedded SQLite default: few rows
        latencies: dict[str, list[int]] = defaultdict(list)
        for label, latency in records.values_list("deployment", "latency_ms"):
            latencies[label].append(latency)
        for label, values in latencies.items():
            values.sort()
            stats[label].update(
                p50_ms=values[len(values) // 2], p95_ms=values[int(len(values) * 0.95)]
            )
    for value in stats.values():
        requests = value.get("requests") or 0
        value["error_rate"] = (value.get("errors", 0) / requests) if requests else None
    return stats


def _breakers() -> dict[int, dict[str, Any]] | None:
    """Each deployment's circuit breaker as Redis holds it now (absent: closed, no
    failures); None when Redis does not answer."""
    import redis

    from apps.core.redis import sync_client
    from apps.gateway.upstream.health import breakers_read

    try:
        views = breakers_read(sync_client())
    except (redis.RedisError, OSError):
        return None
    now = datetime.now(UTC).timestamp()
    return {
        deployment_id: {
            "state": view.state.replace("_", "-"),
            "fails": view.fails,
            "reopens_in_s": max(view.until - now, 0.0) if view.state == "open" else None,
        }
        for deployment_id, view in views.items()
    }


def staff_backends(*, window: timedelta = timedelta(hours=1)) -> list[dict[str, Any]]:
    """Backends with their deployments, each deployment's health over ``window`` and its
    breaker now (``breaker`` None: Redis did not answer)."""
    stats = _deployment_stats(timezone.now() - window)
    breakers = _breakers()
    closed = {"state": "closed", "fails": 0, "reopens_in_s": None}
    result = []
    for backend in Backend.objects.order_by("name").prefetch_related("deployments__model"):
        deployments = []
        totals = {"requests": 0, "errors": 0}
        for deployment in backend.deployments.all():
            label = f"{backend.name}/{deployment.upstream_model}"
            health = stats.get(label, {})
            totals["requests"] += health.get("requests", 0)
            totals["errors"] += health.get("errors", 0)
            breaker = None if breakers is None else breakers.get(deployment.id, closed)
            deployments.append({"deployment": deployment, "health": health, "breaker": breaker})
        requests = totals["requests"]
        result.append(
            {
                "backend": backend,
                "deployments": deployments,
                "requests": requests,
                "errors": totals["errors"],
                "error_rate": totals["errors"] / requests if requests else None,
            }
        )
    return result


def staff_models() -> list[dict[str, Any]]:
    now = timezone.now()
    result = []
    models = Model.objects.order_by("name").prefetch_related("deployments__backend", "prices")
    for model in models:
        prices = list(model.prices.all())
        current = None
        for price in prices:
            if price.effective_from <= now:
                current = price
        result.append({"model": model, "prices": prices, "current": current})
    return result


@dataclass
class MarginLine:
    """What a tenant paid (price) and what its upstreams cost, for one model (or a
    total), in exact ledger amounts."""

    tenant: str
    model: str
    requests: int
    cost: Decimal
    price: Decimal

    @property
    def margin(self) -> Decimal:
        return self.price - self.cost

    @property
    def margin_percent(self) -> Decimal | None:
        """Margin as a share of the price (None without a price)."""
        if not self.price:
            return None
        return (self.margin * 100 / self.price).quantize(Decimal("0.1"))


def staff_margins(*, month: date) -> tuple[list[MarginLine], MarginLine]:
    """Per tenant and model, the month's (UTC) requests, cost, price and margin from the
    day rollups, and their total."""
    start = _midnight(month.replace(day=1))
    end = _midnight((month.replace(day=1) + timedelta(days=32)).replace(day=1))
    rows = (
        UsageRollup.objects.filter(
            granularity=UsageRollup.Granularity.DAY, bucket_start__gte=start, bucket_start__lt=end
        )
        .order_by()
        .values("tenant__name", "model")
        .annotate(requests=Sum("requests"), cost=Sum("cost"), price=Sum("price"))
        .order_by("tenant__name", "model")
    )
    lines = [
        MarginLine(
            tenant=row["tenant__name"],
            model=row["model"],
            requests=row["requests"] or 0,
            cost=Decimal(row["cost"] or 0),
            price=Decimal(row["price"] or 0),
        )
        for row in rows
    ]
    total = MarginLine(
        tenant="",
        model="",
        requests=sum(line.requests for line in lines),
        cost=sum((line.cost for line in lines), Decimal(0)),
        price=sum((line.price for line in lines), Decimal(0)),
    )
    return lines, total


def staff_rate_cards(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Every tenant that has rate cards, with its versions (oldest first) and the one in
    force now."""
    now = now or timezone.now()
    by_tenant: dict[int, dict[str, Any]] = {}
    cards = (
        RateCard.objects.select_related("tenant")
        .prefetch_related("prices__model")
        .order_by("tenant__name", "effective_from")
    )
    for card in cards:
        entry = by_tenant.setdefault(
            card.tenant_id, {"tenant": card.tenant, "cards": [], "current": None}
        )
        entry["cards"].append(card)
        if card.effective_from <= now:
            entry["current"] = card
    return list(by_tenant.values())


def staff_pipeline() -> dict[str, Any]:
    state = ledger_pipeline_health()
    state["last_ingest"] = ledger_last_ingest()
    state["records_last_hour"] = UsageRecord.objects.filter(
        ingested_at__gte=timezone.now() - timedelta(hours=1)
    ).count()
    return state
