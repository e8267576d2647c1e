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
from django.db.models import Count, F, Max, Min, Q, Sum
from django.db.models.functions import TruncDay, TruncHour, TruncMonth
from django.utils import timezone

from apps.audit.services import audit_record
from apps.billing.models import (
    BillingCursor,
    EndUserDayTotal,
    EndUserRollup,
    RateCard,
    RateCardPrice,
    ReconciliationRun,
    Statement,
    StatementLine,
    TagRollup,
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
_PREPAID_PRICE = Sum("price", filter=Q(prepaid=True))


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
            prepaid_price=Decimal(row.get("prepaid_price") or 0),
            **_measures(row),
        )
        for row in rows
    ]
    UsageRollup.objects.filter(granularity=granularity, bucket_start=bucket_start).delete()
    UsageRollup.objects.bulk_create(new, batch_size=2000)
    return len(new)


def _rollup_hour_rebuild(hour: datetime, high_water: int | None = None) -> int:
    """An hour from the ledger itself (its records with ids up to ``high_water``); a record
    from before projects counts in its key's project (ledger_project)."""
    records = UsageRecord.objects.filter(created_at__gte=hour, created_at__lt=hour + HOUR)
    if high_water is not None:
        records = records.filter(id__lte=high_water)
    rows = (
        records.order_by()
        .annotate(rollup_project=ledger_project())
        .values("tenant_id", "rollup_project", "api_key_id", "model")
        .annotate(prepaid_price=_PREPAID_PRICE, **_LEDGER_MEASURES)
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
        .annotate(**_ROLLUP_MEASURES, prepaid_price=Sum("prepaid_price"))
    )
    return _rollup_replace(UsageRollup.Granularity.DAY, day, rows)


# The end-user and tag day rollups (EndUserRollup, TagRollup) are added to from ledger id
# ranges: on PostgreSQL in one INSERT … SELECT … ON CONFLICT DO UPDATE per table (the
# SELECT is the ORM's own, vendor SQL for the day and the project, wrapped); elsewhere
# (SQLite, one process: its unique constraints do not take NULL projects) row by row.
_ADD_MEASURES = (
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "price",
)


_ATTRIBUTION_ROLLUPS = (EndUserRollup, EndUserDayTotal, TagRollup)


def _utc_day(day: datetime | str) -> datetime:
    """A day from raw SQL as the ORM reads it: an aware UTC datetime (SQLite sends text)."""
    if isinstance(day, str):
        day = datetime.fromisoformat(day)
    return day if day.tzinfo else day.replace(tzinfo=UTC)


def _rollup_add(model, keys: tuple[str, ...], source: str, params) -> None:
    """Add the rows ``source`` selects (``keys`` then _ADD_MEASURES) to ``model``'s."""
    table = model._meta.db_table
    if connection.vendor == "postgresql":
        added = ", ".join(f"{m} = {table}.{m} + excluded.{m}" for m in _ADD_MEASURES)
        with connection.cursor() as cursor:
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(keys)}, {', '.join(_ADD_MEASURES)}) {source}"
                f" ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {added}",
                params,
            )
        return
    with connection.cursor() as cursor:
        cursor.execute(source, params)
        rows = cursor.fetchall()
    for row in rows:
        lookup = dict(zip(keys, row[: len(keys)], strict=True))
        lookup["bucket_start"] = _utc_day(lookup["bucket_start"])
        values = dict(zip(_ADD_MEASURES, row[len(keys) :], strict=True))
        values["cost"], values["price"] = (
            Decimal(str(values["cost"])),
            Decimal(str(values["price"])),
        )
        existing = model.objects.filter(**lookup).first()
        if existing is None:
            model.objects.create(**lookup, **values)
            continue
        for name, value in values.items():
            setattr(existing, name, getattr(existing, name) + value)
        existing.save(update_fields=list(values))


def _attribution_add(records) -> None:
    """Add these ledger records' totals to the end-user and tag day rollups."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # A day's groups (a repair) hashed in memory rather than sorted on disk; for
            # this transaction only.
            cursor.execute("SET LOCAL work_mem = '64MB'")
    records = records.order_by().annotate(
        day=TruncDay("created_at", tzinfo=UTC), rollup_project=ledger_project()
    )
    users = records.values("day", "tenant_id", "rollup_project", "end_user", "model").annotate(
        **_LEDGER_MEASURES
    )
    inner, params = users.query.sql_with_params()
    zeros = ", ".join(f"COALESCE(s.{m}, 0)" for m in _ADD_MEASURES)
    source = (
        f"SELECT s.day, s.tenant_id, s.rollup_project, s.end_user, s.model, {zeros}"
        f" FROM ({inner}) s WHERE true"
    )
    keys = ("bucket_start", "tenant_id", "project_id", "end_user", "model")
    _rollup_add(EndUserRollup, keys, source, params)

    totals = records.values("day", "tenant_id", "rollup_project", "end_user")
    inner, params = totals.annotate(**_LEDGER_MEASURES).query.sql_with_params()
    source = (
        f"SELECT s.day, s.tenant_id, s.rollup_project, s.end_user, {zeros}"
        f" FROM ({inner}) s WHERE true"
    )
    _rollup_add(EndUserDayTotal, keys[:-1], source, params)

    source, params = _tag_groups(records)
    _rollup_add(TagRollup, _TAG_KEYS, source, params)


_TAG_KEYS = (
    "bucket_start",
    "tenant_id",
    "project_id",
    "api_key_id",
    "model",
    "tag_key",
    "tag_value",
)


def _tag_groups(records) -> tuple[str, Any]:
    """SQL (and its parameters) of these records' totals per TagRollup row (_TAG_KEYS,
    then _ADD_MEASURES): a record counts once under each (key, value) of its tags object.
    ``records`` carry the ``day`` and ``rollup_project`` annotations."""
    tagged = records.filter(tags__isnull=False).values(
        "day",
        "tenant_id",
        "rollup_project",
        "api_key_id",
        "model",
        "tags",
        "status",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cost",
        "price",
    )
    inner, params = tagged.query.sql_with_params()
    each = "jsonb_each_text" if connection.vendor == "postgresql" else "json_each"
    group = "s.day, s.tenant_id, s.rollup_project, s.api_key_id, s.model, t.key, t.value"
    source = (
        f"SELECT {group}, count(*), sum(CASE WHEN s.status >= 400 THEN 1 ELSE 0 END),"
        " sum(s.prompt_tokens), sum(s.completion_tokens), sum(s.cached_tokens),"
        f" sum(s.cost), sum(s.price) FROM ({inner}) s, {each}(s.tags) t"
        f" WHERE true GROUP BY {group}"
    )
    return source, params


def _attribution_rebuild(*, high_water: int, day: datetime) -> None:
    """A day's end-user and tag rollups from the ledger's records with ids up to
    ``high_water``."""
    for model in _ATTRIBUTION_ROLLUPS:
        model.objects.filter(bucket_start=day).delete()
    records = UsageRecord.objects.filter(
        id__lte=high_water, created_at__gte=day, created_at__lt=day + DAY
    )
    _attribution_add(records)


@dataclass
class RollupResult:
    hours: list[datetime]
    days: list[datetime]
    rows: int
    high_water: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"hours": len(self.hours), "days": len(self.days), "rows": self.rows}


def _hours_of(records) -> set[datetime]:
    return set(
        records.order_by()
        .annotate(hour=TruncHour("created_at", tzinfo=UTC))
        .values_list("hour", flat=True)
        .distinct()
    )


def _rollup_advance(
    cursor: BillingCursor, captured: int, repair_hours: Iterable[datetime] = ()
) -> RollupResult:
    """Bring every rollup to the ledger's records with ids up to ``captured`` (a
    high-water mark: all of them committed, later ones above it), plus rebuild the
    ``repair_hours`` (and the attribution rollups of their days) from the ledger. Runs
    under the rollups lock, the cursor row locked; moves ``cursor.high_water``.

    After it, every rollup row (hour, day, end user, tag) sums exactly the ledger records
    with ids up to the cursor's high water: what open statements are billed from.
    """
    repair_hours = {hour_floor(h) for h in repair_hours}
    repair_days = {day_floor(h) for h in repair_hours}
    if cursor.high_water is None:
        # Never run with a high-water mark (a new ledger, or the first run since): the hours
        # touched since the ingested_at cursor, the attribution rollups from the whole ledger.
        high_water = captured
        if cursor.position is None:
            hours = _hours_of(UsageRecord.objects.all())
        else:
            overlap = timedelta(seconds=settings.BILLING_ROLLUP_OVERLAP_S)
            hours = _hours_of(
                UsageRecord.objects.filter(ingested_at__gte=cursor.position - overlap)
            )
        hours |= repair_hours
        rows = _rollup_hours_days_rebuild(hours, high_water)
        # Day by day (each day's groups fit in memory), every day the ledger has: the
        # days of the day rollups, now complete.
        for model in _ATTRIBUTION_ROLLUPS:
            model.objects.all().delete()
        days = (
            UsageRollup.objects.filter(granularity=UsageRollup.Granularity.DAY)
            .order_by("bucket_start")
            .values_list("bucket_start", flat=True)
            .distinct()
        )
        for day in days:
            _attribution_rebuild(high_water=high_water, day=day)
    else:
        # Records above the last mark: exactly those that reached the ledger since (a late
        # one among them lands in its own hour and day).
        high_water = max(captured, cursor.high_water)
        new = UsageRecord.objects.filter(id__gt=cursor.high_water, id__lte=high_water)
        hours = (_hours_of(new) if high_water > cursor.high_water else set()) | repair_hours
        rows = _rollup_hours_days_rebuild(hours, high_water)
        for day in sorted(repair_days):
            _attribution_rebuild(high_water=high_water, day=day)
        if high_water > cursor.high_water:
            for day in repair_days:  # rebuilt whole just above
                new = new.exclude(created_at__gte=day, created_at__lt=day + DAY)
            _attribution_add(new)
    cursor.high_water = high_water
    hour_list = sorted(hours)
    return RollupResult(hour_list, sorted({day_floor(h) for h in hour_list}), rows, high_water)


def _rollup_hours_days_rebuild(hours: set[datetime], high_water: int) -> int:
    rows = sum(_rollup_hour_rebuild(h, high_water) for h in sorted(hours))
    return rows + sum(_rollup_day_rebuild(d) for d in sorted({day_floor(h) for h in hours}))


def _rollup_cursor() -> BillingCursor:
    cursor, _ = BillingCursor.objects.select_for_update().get_or_create(name=ROLLUP_CURSOR)
    return cursor


def rollup_buckets_recompute(*, hours: Iterable[datetime]) -> RollupResult:
    """Rebuild the given hours, the days containing them and those days' end-user and tag
    rollups from the ledger (repair, backfill), in one transaction; records that reached
    the ledger since the last rollup run are rolled up with them."""
    captured = ledger_high_water_capture()  # outside: its SHARE lock lasts an instant
    with transaction.atomic():
        _advisory_lock("rollups")
        cursor = _rollup_cursor()
        result = _rollup_advance(cursor, captured, hours)
        cursor.save(update_fields=["high_water", "updated_at"])
    return result


def rollup_window_recompute(*, start: datetime, end: datetime) -> RollupResult:
    """Rebuild every hour in [start, end) (rounded out to whole hours)."""
    hour, hours = hour_floor(start), []
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return rollup_buckets_recompute(hours=hours)


def rollup_sync(*, now: datetime | None = None) -> RollupResult:
    """The beat job: roll up every record that reached the ledger since the last run (its
    hours and days rebuilt, its end-user and tag totals added)."""
    now = now or timezone.now()
    captured = ledger_high_water_capture()  # outside: its SHARE lock lasts an instant
    with transaction.atomic():
        _advisory_lock("rollups")
        cursor = _rollup_cursor()
        result = _rollup_advance(cursor, captured)
        cursor.position = now
        cursor.save(update_fields=["position", "high_water", "updated_at"])
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


def _late_lines(statement: Statement, records) -> list[StatementLine]:
    """Late usage lines: when the previous statement is closed (or there is none), the
    records of earlier months that reached the ledger after that close (by id: few, read
    from the older months' partitions)."""
    previous = _previous(statement)
    if previous is not None and not previous.is_closed:
        return []
    late = records.filter(created_at__lt=_midnight(statement.period_start))
    if previous is not None:
        late = late.filter(id__gt=previous.ledger_high_water)
    rows = (
        late.order_by()
        .annotate(month=TruncMonth("created_at", tzinfo=UTC))
        .values("model", "month")
        .annotate(**_LEDGER_MEASURES)
    )
    return [
        _line(
            statement, StatementLine.Kind.LATE_USAGE, row["model"], month_start(row["month"]), row
        )
        for row in rows
    ]


def statement_lines_compute(*, statement: Statement, high_water: int) -> list[StatementLine]:
    """The lines of a statement billing the ledger up to `high_water` (not saved), from
    the ledger's own rows (closing, reconciliation).

    Its own month's records, plus — when the previous statement is closed (or there is
    none) — the records of earlier months that reached the ledger after that close.
    """
    start, end = _midnight(statement.period_start), _midnight(statement.period_end)
    records = UsageRecord.objects.for_tenant(statement.tenant_id).filter(id__lte=high_water)
    own = (
        records.filter(created_at__gte=start, created_at__lt=end)
        .order_by()
        .values("model")
        .annotate(**_LEDGER_MEASURES)
    )
    lines = [
        _line(statement, StatementLine.Kind.USAGE, row["model"], statement.period_start, row)
        for row in own
    ]
    lines += _late_lines(statement, records)
    lines.sort(key=lambda line: (line.kind, line.usage_period, line.model))
    return lines


def _statement_from_rollups(statement: Statement) -> tuple[list[StatementLine], Decimal, int]:
    """(lines, the prepaid price among them, high water) of an open statement from the day
    rollups, which sum exactly the ledger's records with ids up to the rollup cursor's
    high water (the same lines statement_lines_compute gives at that mark). The caller
    holds the rollups lock, so no rollup run moves them meanwhile."""
    high_water = BillingCursor.objects.get(name=ROLLUP_CURSOR).high_water
    start, end = _midnight(statement.period_start), _midnight(statement.period_end)
    own = (
        UsageRollup.objects.for_tenant(statement.tenant_id)
        .filter(
            granularity=UsageRollup.Granularity.DAY, bucket_start__gte=start, bucket_start__lt=end
        )
        .order_by()
        .values("model")
        .annotate(**_ROLLUP_MEASURES, prepaid=Sum("prepaid_price"))
    )
    lines, prepaid = [], ZERO
    for row in own:
        lines.append(
            _line(statement, StatementLine.Kind.USAGE, row["model"], statement.period_start, row)
        )
        prepaid += row["prepaid"] or ZERO
    records = UsageRecord.objects.for_tenant(statement.tenant_id).filter(id__lte=high_water)
    lines += _late_lines(statement, records)
    prepaid += _billed_prepaid(statement, high_water, own_month=False)
    lines.sort(key=lambda line: (line.kind, line.usage_period, line.model))
    return lines, prepaid, high_water


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


def statement_refresh(
    *, statement: Statement, high_water: int | None = None, rolled_up: bool = False
) -> Statement:
    """Recompute an open statement's lines; a closed one is left as it is.

    Without ``high_water``, from the rollups: the rollup job runs first (unless the
    caller just ran it: ``rolled_up``), then the lines are the day rollups' sums, billing
    exactly the records up to the rollup cursor's high water. With ``high_water``, from
    the ledger's rows up to it.
    """
    if high_water is None and not rolled_up:
        rollup_sync()
    with transaction.atomic():
        if high_water is None:
            _advisory_lock("rollups")
        statement = Statement.objects.select_for_update().get(id=statement.id)
        if not statement.is_closed:
            _statement_write(statement, high_water)
    return statement


def _billed_prepaid(statement: Statement, high_water: int, *, own_month: bool = True) -> Decimal:
    """The price of the prepaid records among those the statement's lines bill (the
    balance paid for them: not due again); ``own_month=False``: of the late ones only."""
    start = _midnight(statement.period_start)
    billed = []
    if own_month:
        billed.append(Q(created_at__gte=start, created_at__lt=_midnight(statement.period_end)))
    previous = _previous(statement)
    if previous is None or previous.is_closed:
        late = Q(created_at__lt=start)
        if previous is not None:
            late &= Q(id__gt=previous.ledger_high_water)
        billed.append(late)
    if not billed:
        return ZERO
    either = billed[0] if len(billed) == 1 else billed[0] | billed[1]
    records = UsageRecord.objects.for_tenant(statement.tenant_id).filter(
        id__lte=high_water, prepaid=True
    )
    return records.filter(either).aggregate(total=Sum("price"))["total"] or ZERO


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


def _statement_write(statement: Statement, high_water: int | None) -> None:
    """The statement's lines billing the ledger up to ``high_water`` from the ledger's
    rows, or (None) up to the rollups' high water from the rollups."""
    if high_water is None:
        lines, prepaid, high_water = _statement_from_rollups(statement)
    else:
        lines = statement_lines_compute(statement=statement, high_water=high_water)
        prepaid = _billed_prepaid(statement, high_water)
    statement.lines.all().delete()
    StatementLine.objects.bulk_create(lines)
    statement.total = sum((line.amount for line in lines), ZERO)
    due = statement.total - prepaid
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
    # Open statements are refreshed from the rollups (brought up to date first); a month
    # closes against the ledger's own rows, once.
    rollup_sync()
    high_water = ledger_high_water_capture()
    for statement in Statement.objects.filter(status=Statement.Status.OPEN).order_by(
        "tenant_id", "period_start"
    ):
        if _midnight(statement.period_end) + grace <= now:
            statement_close(statement=statement, now=now, high_water=high_water)
            closed += 1
        else:
            statement_refresh(statement=statement, rolled_up=True)
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
    difference (none expected). The rollups are compared with the ledger's records up to
    the rollup cursor's high water (what they cover; later ones wait for the next run)."""
    window_end = window_end or hour_floor(timezone.now())
    window_start = window_start or window_end - timedelta(days=settings.BILLING_RECONCILE_DAYS)
    start_day, differences, checked = day_floor(window_start), [], {}
    fields = ("bucket", "tenant_id", "rollup_project", "api_key_id", "model")
    covered = UsageRecord.objects.all()
    high_water = (
        BillingCursor.objects.filter(name=ROLLUP_CURSOR)
        .values_list("high_water", flat=True)
        .first()
    )
    if high_water is not None:
        covered = covered.filter(id__lte=high_water)
    for granularity, trunc, start in (
        (UsageRollup.Granularity.HOUR, TruncHour, hour_floor(window_start)),
        (UsageRollup.Granularity.DAY, TruncDay, start_day),
    ):
        end = window_end if granularity == "hour" else day_floor(window_end)
        ledger = (
            covered.filter(created_at__gte=start, created_at__lt=end)
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
    end = day_floor(window_end)
    days = covered.filter(created_at__gte=start_day, created_at__lt=end).order_by()
    days = days.annotate(bucket=TruncDay("created_at", tzinfo=UTC), rollup_project=ledger_project())
    for check, model, groups in (
        ("end_user_rollups", EndUserRollup, ("tenant_id", "project_id", "end_user", "model")),
        ("end_user_day_totals", EndUserDayTotal, ("tenant_id", "project_id", "end_user")),
    ):
        # The ledger's groups by the rollup's keys (its project: the row's or its key's).
        ledger_keys = ["bucket", *(g.replace("project_id", "rollup_project") for g in groups)]
        ledger = days.values(*ledger_keys).annotate(**_LEDGER_MEASURES)
        rows = model.objects.filter(bucket_start__gte=start_day, bucket_start__lt=end)
        rollup_rows = [
            {**row, "bucket": row["bucket_start"], "rollup_project": row.get("project_id")}
            for row in rows.order_by().values("bucket_start", *groups, *MEASURES)
        ]
        checked[check] = _compare(
            check,
            _by_bucket(ledger, *ledger_keys),
            _by_bucket(rollup_rows, *ledger_keys),
            differences,
        )
    source, params = _tag_groups(days.annotate(day=F("bucket")))
    with connection.cursor() as cursor:
        cursor.execute(source, params)
        ledger_tags = [
            {
                **dict(zip(_TAG_KEYS + _ADD_MEASURES, row, strict=True)),
                "bucket_start": _utc_day(row[0]),
            }
            for row in cursor.fetchall()
        ]
    tag_rows = TagRollup.objects.filter(bucket_start__gte=start_day, bucket_start__lt=end)
    checked["tag_rollups"] = _compare(
        "tag_rollups",
        _by_bucket(ledger_tags, *_TAG_KEYS),
        _by_bucket(tag_rows.order_by().values(*_TAG_KEYS, *MEASURES), *_TAG_KEYS),
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
