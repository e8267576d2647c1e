"""Billing jobs: rollups, monthly statements and reconciliation, all built from the ledger;
and the staff's rate card writes.

Rollups (hour and day × tenant × project × key × model) are rebuilt, never incremented: a bucket's
rows are deleted and re-inserted in one transaction, so a run killed half-way leaves the
previous rows and the next run writes the same rows again. Which hours to rebuild comes
from the ledger's ``ingested_at``: every hour touched by a record ingested since the last
run (minus an overlap for transactions that were still open) — a late event lands in its
own hour.

Statements: one per tenant and UTC month, contiguous from the tenant's first usage. The
late-event rule: a record belongs to the statement of the month it happened in, unless
that statement was already closed when the record reached the ledger; then it is billed
on the first statement still open, as a separate "late usage from <month>" line. Closing
records the ledger's high-water id under a brief SHARE lock (no insert in flight), so
"reached the ledger before the close" is exactly ``id <= ledger_high_water``.
"""

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour, TruncMonth
from django.utils import timezone

from apps.audit.services import audit_record
from apps.billing.models import (
    BillingCursor,
    RateCard,
    RateCardPrice,
    ReconciliationRun,
    Statement,
    StatementLine,
    UsageRollup,
)
from apps.billing.pricing import PriceRuleInvalid, markup_validate, rule_fields_validate
from apps.billing.selectors import ledger_project
from apps.catalog.models import Model
from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from apps.wallet.selectors import balance_credits, balance_entries, balance_usage

log = logging.getLogger(__name__)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
CENT = Decimal("0.01")
ZERO = Decimal(0)
ROLLUP_CURSOR = "rollups"
_LOCK_IDS = {"rollups": 0x70_6C_6C_01}

# The measures a rollup row carries, and how each is computed from ledger rows.
_LEDGER_MEASURES: dict[str, Any] = {
    "requests": Count("id"),
    "errors": Count("id", filter=Q(status__gte=400)),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "cached_tokens": Sum("cached_tokens"),
    "cost": Sum("cost"),
    "price": Sum("price"),
}
MEASURES = tuple(_LEDGER_MEASURES)
_ROLLUP_MEASURES = {name: Sum(name) for name in MEASURES}


def _advisory_lock(name: str) -> None:
    """Serialize one billing job across workers (released at the end of the transaction)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_IDS[name]])


def _measures(row: dict[str, Any]) -> dict[str, Any]:
    values = {name: row.get(name) or 0 for name in MEASURES}
    values["cost"] = Decimal(values["cost"])
    values["price"] = Decimal(values["price"])
    return values


def hour_floor(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def day_floor(when: datetime) -> datetime:
    return when.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(when: datetime | date) -> date:
    return date(when.year, when.month, 1)


def month_next(first: date) -> date:
    return date(first.year + (first.month == 12), first.month % 12 + 1, 1)


def _midnight(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


# Rollups ---------------------------------------------------------------------------------


def _rollup_replace(granularity: str, bucket_start: datetime, rows) -> int:
    """Replace one bucket's rollup rows with these aggregates (idempotent)."""
    new = [
        UsageRollup(
            granularity=granularity,
            bucket_start=bucket_start,
            tenant_id=row["tenant_id"],
            project_id=row["project_id"],
            api_key_id=row["api_key_id"],
            model=row["model"],
            **_measures(row),
        )
        for row in rows
    ]
    UsageRollup.objects.filter(granularity=granularity, bucket_start=bucket_start).delete()
    UsageRollup.objects.bulk_create(new, batch_size=2000)
    return len(new)


def _rollup_hour_rebuild(hour: datetime) -> int:
    """An hour from the ledger itself; a record from before projects counts in its key's
    project (ledger_project)."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=hour, created_at__lt=hour + HOUR)
        .order_by()
        .annotate(rollup_project=ledger_project())
        .values("tenant_id", "rollup_project", "api_key_id", "model")
        .annotate(**_LEDGER_MEASURES)
    )
    rows = [{**row, "project_id": row.pop("rollup_project")} for row in rows]
    return _rollup_replace(UsageRollup.Granularity.HOUR, hour, rows)


def _rollup_day_rebuild(day: datetime) -> int:
    """A day from its 24 hour rows."""
    rows = (
        UsageRollup.objects.filter(
            granularity=UsageRollup.Granularity.HOUR,
            bucket_start__gte=day,
            bucket_start__lt=day + DAY,
        )
        .order_by()
        .values("tenant_id", "project_id", "api_key_id", "model")
        .annotate(**_ROLLUP_MEASURES)
    )
    return _rollup_replace(UsageRollup.Granularity.DAY, day, rows)


@dataclass
class RollupResult:
    hours: list[datetime]
    days: list[datetime]
    rows: int

    def as_dict(self) -> dict[str, Any]:
        return {"hours": len(self.hours), "days": len(self.days), "rows": self.rows}


def rollup_buckets_recompute(*, hours: Iterable[datetime]) -> RollupResult:
    """Rebuild the given hours and the days containing them, in one transaction."""
    hour_set = sorted({hour_floor(h) for h in hours})
    day_set = sorted({day_floor(h) for h in hour_set})
    with transaction.atomic():
        _advisory_lock("rollups")
        rows = sum(_rollup_hour_rebuild(h) for h in hour_set)
        rows += sum(_rollup_day_rebuild(d) for d in day_set)
    return RollupResult(hour_set, day_set, rows)


def rollup_window_recompute(*, start: datetime, end: datetime) -> RollupResult:
    """Rebuild every hour in [start, end) (rounded out to whole hours)."""
    hour, hours = hour_floor(start), []
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return rollup_buckets_recompute(hours=hours)


def _hours_touched(since: datetime | None) -> list[datetime]:
    records = UsageRecord.objects.all()
    if since is not None:
        records = records.filter(ingested_at__gte=since)
    return list(
        records.order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values_list("hour", flat=True)
        .distinct()
    )


def rollup_sync(*, now: datetime | None = None) -> RollupResult:
    """The beat job: rebuild every hour touched by records ingested since the last run."""
    now = now or timezone.now()
    overlap = timedelta(seconds=settings.BILLING_ROLLUP_OVERLAP_S)
    with transaction.atomic():
        _advisory_lock("rollups")
        cursor, _ = BillingCursor.objects.select_for_update().get_or_create(name=ROLLUP_CURSOR)
        since = None if cursor.position is None else cursor.position - overlap
        result = rollup_buckets_recompute(hours=_hours_touched(since))
        cursor.position = now
        cursor.save(update_fields=["position", "updated_at"])
    if result.hours:
        log.info("rollups: %s", result.as_dict())
    return result


# Statements ------------------------------------------------------------------------------


def ledger_high_water_capture() -> int:
    """The highest ledger id such that every record with a lower or equal id is committed
    and every record committed later gets a higher one.

    SHARE mode waits for inserts in flight to commit and blocks new ones for the instant
    the max is read; ids come from a sequence, so later rows are above the mark.
    """
    with transaction.atomic():
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(f"LOCK TABLE {UsageRecord._meta.db_table} IN SHARE MODE")
        return UsageRecord.objects.aggregate(m=Max("id"))["m"] or 0


def _previous(statement: Statement) -> Statement | None:
    return (
        Statement.objects.filter(
            tenant_id=statement.tenant_id, period_start__lt=statement.period_start
        )
        .order_by("-period_start")
        .first()
    )


def statement_lines_compute(*, statement: Statement, high_water: int) -> list[StatementLine]:
    """The lines of a statement billing the ledger up to `high_water` (not saved).

    Its own month's records, plus — when the previous statement is closed (or there is
    none) — the records of earlier months that reached the ledger after that close.
    """
    start, end = _midnight(statement.period_start), _midnight(statement.period_end)
    records = UsageRecord.objects.for_tenant(statement.tenant_id).filter(id__lte=high_water)
    lines = []
    own = (
        records.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("model")
        .annotate(**_LEDGER_MEASURES)
    )
    for row in own:
        lines.append(
            _line(statement, StatementLine.Kind.USAGE, row["model"], statement.period_start, row)
        )
    previous = _previous(statement)
    if previous is None or previous.is_closed:
        late = records.filter(created_at__lt=start)
        if previous is not None:
            late = late.filter(id__gt=previous.ledger_high_water)
        rows = (
            late.order_by()
            .annotate(month=TruncMonth("created_at", tzinfo=UTC))
            .values("model", "month")
            .annotate(**_LEDGER_MEASURES)
        )
        for row in rows:
            month = month_start(row["month"])
            lines.append(_line(statement, StatementLine.Kind.LATE_USAGE, row["model"], month, row))
    lines.sort(key=lambda line: (line.kind, line.usage_period, line.model))
    return lines


def _line(statement: Statement, kind: str, model: str, month: date, row: dict) -> StatementLine:
    values = _measures(row)
    description = (
        model if kind == StatementLine.Kind.USAGE else f"{model}: late usage from {month:%Y-%m}"
    )
    return StatementLine(
        statement=statement,
        kind=kind,
        model=model,
        usage_period=month,
        description=description[:200],
        requests=values["requests"],
        prompt_tokens=values["prompt_tokens"],
        completion_tokens=values["completion_tokens"],
        cached_tokens=values["cached_tokens"],
        amount=values["price"],
    )


def statement_ensure(*, tenant: Tenant, month: date) -> Statement:
    first = month_start(month)
    statement, _ = Statement.objects.get_or_create(
        tenant=tenant, period_start=first, defaults={"period_end": month_next(first)}
    )
    return statement


def statement_refresh(*, statement: Statement, high_water: int | None = None) -> Statement:
    """Recompute an open statement's lines from the ledger; a closed one is left as it is."""
    high_water = ledger_high_water_capture() if high_water is None else high_water
    with transaction.atomic():
        statement = Statement.objects.select_for_update().get(id=statement.id)
        if not statement.is_closed:
            _statement_write(statement, high_water)
    return statement


def _billed_prepaid(statement: Statement, high_water: int) -> Decimal:
    """The price of the prepaid records among those the statement's lines bill (the
    balance paid for them: not due again)."""
    start = _midnight(statement.period_start)
    records = UsageRecord.objects.for_tenant(statement.tenant_id).filter(
        id__lte=high_water, prepaid=True
    )
    billed = Q(created_at__gte=start, created_at__lt=_midnight(statement.period_end))
    previous = _previous(statement)
    if previous is None or previous.is_closed:
        late = Q(created_at__lt=start)
        if previous is not None:
            late &= Q(id__gt=previous.ledger_high_water)
        billed |= late
    return records.filter(billed).aggregate(total=Sum("price"))["total"] or ZERO


def statement_balance_compute(*, statement: Statement) -> None:
    """The month's balance summary from the journal (not saved): null for a tenant that
    never had a balance."""
    tenant = statement.tenant
    if not tenant.prepaid and not balance_entries(tenant=tenant).exists():
        statement.opening_balance = statement.balance_credits = None
        statement.balance_usage = statement.closing_balance = None
        return
    start, end = _midnight(statement.period_start), _midnight(statement.period_end)
    opening_credits = balance_credits(tenant=tenant, before=start)
    opening_usage = balance_usage(tenant=tenant, before=start)
    statement.opening_balance = opening_credits - opening_usage
    statement.balance_credits = balance_credits(tenant=tenant, before=end) - opening_credits
    statement.balance_usage = balance_usage(tenant=tenant, before=end) - opening_usage
    statement.closing_balance = (
        statement.opening_balance + statement.balance_credits - statement.balance_usage
    )


def _statement_write(statement: Statement, high_water: int) -> None:
    lines = statement_lines_compute(statement=statement, high_water=high_water)
    statement.lines.all().delete()
    StatementLine.objects.bulk_create(lines)
    statement.total = sum((line.amount for line in lines), ZERO)
    due = statement.total - _billed_prepaid(statement, high_water)
    statement.amount_due = due.quantize(CENT, rounding=ROUND_HALF_UP)
    statement_balance_compute(statement=statement)
    statement.ledger_high_water = high_water
    statement.refreshed_at = timezone.now()
    statement.save()


class StatementError(ValueError):
    pass


def statement_close(
    *, statement: Statement, now: datetime | None = None, high_water: int | None = None
) -> Statement:
    """Bill the ledger as it is now and freeze the statement. Months close in order."""
    now = now or timezone.now()
    # Taken before the transaction so the SHARE lock on the ledger lasts an instant.
    high_water = ledger_high_water_capture() if high_water is None else high_water
    with transaction.atomic():
        statement = Statement.objects.select_for_update().get(id=statement.id)
        if statement.is_closed:
            return statement
        if _midnight(statement.period_end) > now:
            raise StatementError(f"{statement} cannot close before its month ends")
        previous = _previous(statement)
        if previous is not None and not previous.is_closed:
            raise StatementError(f"close {previous} first: statements close in order")
        _statement_write(statement, high_water)
        statement.status = Statement.Status.CLOSED
        statement.closed_at = now
        statement.save(update_fields=["status", "closed_at"])
    log.info("statement closed: %s total=%s", statement, statement.total)
    return statement


def statements_sync(*, now: datetime | None = None) -> dict[str, int]:
    """The beat job: make sure every tenant with usage has its statements (contiguous
    months from its first), close months that ended more than the grace period ago, and
    refresh the open ones — all against one ledger high-water mark."""
    now = now or timezone.now()
    grace = timedelta(hours=settings.BILLING_STATEMENT_CLOSE_GRACE_H)
    created = closed = refreshed = 0
    # Per tenant: first and last day with usage, from the (small) day rollups.
    span = (
        UsageRollup.objects.filter(granularity=UsageRollup.Granularity.DAY)
        .order_by()
        .values("tenant_id")
        .annotate(first=Min("bucket_start"), last=Max("bucket_start"))
    )
    for row in span:
        tenant_id = row["tenant_id"]
        existing = Statement.objects.filter(tenant_id=tenant_id).aggregate(
            first=Min("period_start")
        )["first"]
        month = existing or month_start(row["first"])
        last = max(month_start(row["last"]), month_start(now))
        while month <= last:
            _, was_created = Statement.objects.get_or_create(
                tenant_id=tenant_id, period_start=month, defaults={"period_end": month_next(month)}
            )
            created += was_created
            month = month_next(month)
    high_water = ledger_high_water_capture()
    for statement in Statement.objects.filter(status=Statement.Status.OPEN).order_by(
        "tenant_id", "period_start"
    ):
        if _midnight(statement.period_end) + grace <= now:
            statement_close(statement=statement, now=now, high_water=high_water)
            closed += 1
        else:
            statement_refresh(statement=statement, high_water=high_water)
            refreshed += 1
    return {"created": created, "closed": closed, "refreshed": refreshed}


# Reconciliation --------------------------------------------------------------------------


def _compare(kind: str, expected: dict, actual: dict, differences: list[dict]) -> int:
    for key in sorted(set(expected) | set(actual), key=str):
        want, got = expected.get(key), actual.get(key)
        if want != got:
            differences.append(
                {
                    "check": kind,
                    "key": [str(part) for part in key],
                    "ledger": {k: str(v) for k, v in (want or {}).items()},
                    "billing": {k: str(v) for k, v in (got or {}).items()},
                }
            )
    return len(expected)


def _by_bucket(rows: Iterable[dict], *key_fields: str) -> dict[tuple, dict]:
    return {tuple(row[f] for f in key_fields): _measures(row) for row in rows}


def reconcile_run(
    *, window_start: datetime | None = None, window_end: datetime | None = None
) -> ReconciliationRun:
    """Compare the ledger with rollups and statements over a window; record and log any
    difference (none expected)."""
    window_end = window_end or hour_floor(timezone.now())
    window_start = window_start or window_end - timedelta(days=settings.BILLING_RECONCILE_DAYS)
    start_day, differences, checked = day_floor(window_start), [], {}
    fields = ("bucket", "tenant_id", "rollup_project", "api_key_id", "model")
    for granularity, trunc, start in (
        (UsageRollup.Granularity.HOUR, TruncHour, hour_floor(window_start)),
        (UsageRollup.Granularity.DAY, TruncDay, start_day),
    ):
        end = window_end if granularity == "hour" else day_floor(window_end)
        ledger = (
            UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
            .order_by()
            .annotate(bucket=trunc("created_at", tzinfo=UTC), rollup_project=ledger_project())
            .values(*fields)
            .annotate(**_LEDGER_MEASURES)
        )
        rollups = (
            UsageRollup.objects.filter(
                granularity=granularity, bucket_start__gte=start, bucket_start__lt=end
            )
            .order_by()
            .values("bucket_start", "tenant_id", "project_id", "api_key_id", "model", *MEASURES)
        )
        rollup_rows = [
            {**row, "bucket": row["bucket_start"], "rollup_project": row["project_id"]}
            for row in rollups
        ]
        checked[f"rollups_{granularity}"] = _compare(
            f"rollups_{granularity}",
            _by_bucket(ledger, *fields),
            _by_bucket(rollup_rows, *fields),
            differences,
        )
    statements = Statement.objects.filter(
        period_end__gt=window_start.date(), period_start__lte=window_end.date()
    ).exclude(ledger_high_water=None)
    line_fields = ("kind", "usage_period", "model")
    count = 0
    for statement in statements.select_related("tenant"):
        expected = {
            tuple(getattr(line, f) for f in line_fields): _line_measures(line)
            for line in statement_lines_compute(
                statement=statement, high_water=statement.ledger_high_water
            )
        }
        actual = {
            tuple(getattr(line, f) for f in line_fields): _line_measures(line)
            for line in statement.lines.all()
        }
        lines_total = sum((m["amount"] for m in actual.values()), ZERO)
        if lines_total != statement.total:
            differences.append(
                {
                    "check": "statement_total",
                    "key": [statement.tenant.name, str(statement.period_start)],
                    "ledger": {"amount": str(lines_total)},
                    "billing": {"amount": str(statement.total)},
                }
            )
        before = len(differences)
        _compare("statement_lines", expected, actual, differences)
        for diff in differences[before:]:
            diff["key"] = [statement.tenant.name, str(statement.period_start), *diff["key"]]
        count += 1
    checked["statements"] = count
    checked["unpriced_records"] = (
        UsageRecord.objects.filter(
            created_at__gte=window_start,
            created_at__lt=window_end,
            cost_rule__isnull=True,
            price_rule__isnull=True,
        )
        .filter(Q(prompt_tokens__gt=0) | Q(completion_tokens__gt=0))
        .count()
    )
    run = ReconciliationRun.objects.create(
        window_start=window_start,
        window_end=window_end,
        checked=checked,
        differences=differences[:1000],
        ok=not differences,
    )
    if differences:
        log.error(
            "reconciliation found %d differences between ledger and billing (run %s): %s",
            len(differences),
            run.id,
            differences[:5],
        )
    else:
        log.info("reconciliation ok: %s", checked)
    return run


def _line_measures(line: StatementLine) -> dict[str, Any]:
    return {
        "requests": line.requests,
        "prompt_tokens": line.prompt_tokens,
        "completion_tokens": line.completion_tokens,
        "cached_tokens": line.cached_tokens,
        "amount": Decimal(line.amount),
    }


def reconcile_totals_by_tenant(*, start: datetime, end: datetime) -> dict[int, dict[str, Any]]:
    """Ledger totals per tenant over [start, end) (for operators and tests)."""
    rows = (
        UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("tenant_id")
        .annotate(**_LEDGER_MEASURES)
    )
    result: dict[int, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        result[row["tenant_id"]] = _measures(row)
    return dict(result)


# Rate cards (staff writes) ------------------------------------------------------------------


@transaction.atomic
def rate_card_create(
    *,
    tenant: Tenant,
    effective_from: datetime,
    markup_percent: Any = None,
    models: Mapping[Model, Mapping[str, Any]] | None = None,
    actor: Any = None,
) -> RateCard:
    """A new rate card version of the tenant from ``effective_from`` on, with its per-model
    override rules (``models``: model → rule fields). Append-only like prices: a change
    prices only later requests. Raises ``PriceRuleInvalid`` naming a wrong field.

    The audit event is platform-wide (tenant NULL), as the catalog's: a tenant's owners
    read their audit log, and a rate card says what the operator's margin is."""
    markup = markup_validate(markup_percent)
    if RateCard.objects.filter(tenant=tenant, effective_from=effective_from).exists():
        raise PriceRuleInvalid(
            "effective_from", "a rate card from this time exists (rate cards are append-only)"
        )
    card = RateCard.objects.create(
        tenant=tenant, effective_from=effective_from, markup_percent=markup
    )
    overrides = {}
    for model, fields in (models or {}).items():
        try:
            clean = rule_fields_validate(fields)
        except PriceRuleInvalid as exc:
            raise PriceRuleInvalid(f"models.{model.name}.{exc.field}", exc.message) from None
        RateCardPrice.objects.create(rate_card=card, model=model, **clean)
        overrides[model.name] = clean
    audit_record(
        tenant=None,
        actor=actor,
        action="rate_card.created",
        target=card,
        details={
            "tenant": tenant.name,
            "effective_from": card.effective_from,
            "markup_percent": markup,
            "models": overrides,
        },
    )
    return card
