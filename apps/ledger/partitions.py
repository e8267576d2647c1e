"""The ledger's monthly partitions on PostgreSQL (migration 0011): made ahead, retired
after retention.

``partitions_ensure`` creates the partitions of the coming months and of any month that
has rows in the DEFAULT partition (those rows move into it in the same transaction), so
the DEFAULT partition only ever holds events far from now, briefly. ``partitions_retire``
detaches and drops the partitions older than LEDGER_RETENTION_MONTHS whose rows every
billing job is done with: rolled up (ingested before the rollup cursor, minus its
overlap), and billed on closed statements (for each tenant with rows there, a closed
statement of that month or later has a high-water id at or above the tenant's last row;
no statement of that month is open). Elsewhere (SQLite) both do nothing.
"""

import logging
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from apps.billing.models import BillingCursor, Statement
from apps.ledger.models import UsageRecord

log = logging.getLogger(__name__)

TABLE = UsageRecord._meta.db_table
DEFAULT = f"{TABLE}_default"
_PREFIX = f"{TABLE}_p"
ROLLUP_CURSOR = "rollups"  # apps/billing/services.py


def month_start(when: datetime | date) -> date:
    return date(when.year, when.month, 1)


def month_add(first: date, months: int) -> date:
    index = first.year * 12 + first.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def partition_name(first: date) -> str:
    return f"{_PREFIX}{first:%Y%m}"


def _bound(first: date) -> str:
    return datetime(first.year, first.month, 1, tzinfo=UTC).isoformat()


def _partitioned() -> bool:
    return connection.vendor == "postgresql"


def partition_months() -> list[date]:
    """The months that have their own partition, in order."""
    if not _partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass",
            [TABLE],
        )
        names = [row[0] for row in cursor.fetchall()]
    return sorted(
        date(int(name[-6:-2]), int(name[-2:]), 1)
        for name in names
        if name.startswith(_PREFIX) and name[len(_PREFIX) :].isdigit()
    )


def _default_months(cursor) -> set[date]:
    cursor.execute(
        f"SELECT DISTINCT date_trunc('month', created_at AT TIME ZONE 'UTC')::date FROM {DEFAULT}"
    )
    return {row[0] for row in cursor.fetchall()}


def _partition_create(cursor, first: date) -> None:
    """One month's partition; its rows in DEFAULT move into it first (attaching it then
    finds none left there). Blocks inserts into DEFAULT for the instant it takes."""
    name, start, end = partition_name(first), _bound(first), _bound(month_add(first, 1))
    cursor.execute(f"LOCK TABLE {TABLE} IN SHARE UPDATE EXCLUSIVE MODE")
    cursor.execute(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
    cursor.execute(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s"
        f" RETURNING *) INSERT INTO {name} SELECT * FROM moved",
        [start, end],
    )
    cursor.execute(
        f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{start}') TO ('{end}')"
    )


def partitions_ensure(*, ahead: int | None = None, now: datetime | None = None) -> list[str]:
    """Create the partitions of this month and the next ``ahead`` ones, and of every month
    with rows in DEFAULT; returns the names created (none when all exist: idempotent)."""
    if not _partitioned():
        return []
    ahead = settings.LEDGER_PARTITIONS_AHEAD if ahead is None else ahead
    current = month_start(now or timezone.now())
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        wanted = {month_add(current, n) for n in range(ahead + 1)} | _default_months(cursor)
        for first in sorted(wanted - set(partition_months())):
            _partition_create(cursor, first)
            created.append(partition_name(first))
    if created:
        log.info("ledger partitions created: %s", ", ".join(created))
    return created


def partitions_cover(*, start: datetime, end: datetime) -> list[str]:
    """Create the partitions of every month meeting [start, end) (a bulk load's range);
    returns the names created."""
    if not _partitioned():
        return []
    months, month = [], month_start(start)
    while datetime(month.year, month.month, 1, tzinfo=UTC) < end:
        months.append(month)
        month = month_add(month, 1)
    created = []
    with transaction.atomic(), connection.cursor() as cursor:
        for first in sorted(set(months) - set(partition_months())):
            _partition_create(cursor, first)
            created.append(partition_name(first))
    return created


def _retirable(cursor, first: date) -> tuple[bool, int]:
    """Whether the month's rows are rolled up and billed on closed statements; and its
    highest id (the check holds while no row is added)."""
    name = partition_name(first)
    if Statement.objects.filter(period_start=first, status=Statement.Status.OPEN).exists():
        return False, 0
    cursor.execute(f"SELECT max(id), max(ingested_at) FROM {name}")
    top, last_ingested = cursor.fetchone()
    if top is None:
        return True, 0
    position = (
        BillingCursor.objects.filter(name=ROLLUP_CURSOR).values_list("position", flat=True).first()
    )
    overlap = timedelta(seconds=settings.BILLING_ROLLUP_OVERLAP_S)
    if position is None or last_ingested >= position - overlap:
        return False, top
    cursor.execute(
        f"SELECT 1 FROM (SELECT tenant_id, max(id) AS top FROM {name} GROUP BY tenant_id) r"
        " LEFT JOIN (SELECT tenant_id, max(ledger_high_water) AS billed"
        f" FROM {Statement._meta.db_table} WHERE status = %s AND period_start >= %s"
        " GROUP BY tenant_id) s ON s.tenant_id = r.tenant_id"
        " WHERE s.billed IS NULL OR s.billed < r.top LIMIT 1",
        [Statement.Status.CLOSED, first],
    )
    return cursor.fetchone() is None, top


def partitions_retire(*, months: int | None = None, now: datetime | None = None) -> list[str]:
    """Detach and drop the partitions of months ending at least ``months`` months before
    this one (None: LEDGER_RETENTION_MONTHS; None there: keep forever), each only when its
    rows are rolled up and billed on closed statements; returns the names dropped."""
    months = settings.LEDGER_RETENTION_MONTHS if months is None else months
    if months is None or not _partitioned():
        return []
    cutoff = month_add(month_start(now or timezone.now()), -months)
    dropped = []
    for first in partition_months():
        if month_add(first, 1) > cutoff:
            break
        name = partition_name(first)
        with connection.cursor() as cursor:
            eligible, top = _retirable(cursor, first)
        if not eligible:
            log.info("ledger partition %s kept: not yet rolled up and billed", name)
            continue
        with transaction.atomic(), connection.cursor() as cursor:
            # The parent first (as inserts take it), then: nothing landed since the check.
            cursor.execute(f"LOCK TABLE {TABLE} IN ACCESS EXCLUSIVE MODE")
            cursor.execute(f"SELECT coalesce(max(id), 0) FROM {name}")
            if cursor.fetchone()[0] != top:
                continue
            cursor.execute(f"ALTER TABLE {TABLE} DETACH PARTITION {name}")
            cursor.execute(f"DROP TABLE {name}")
        dropped.append(name)
    if dropped:
        log.warning("ledger partitions dropped (retention %d months): %s", months, dropped)
    return dropped
