"""The ledger split by month on PostgreSQL: each record in its month's partition, once;
months made ahead idempotently; retention drops only months rolled up and billed on
closed statements."""

import re
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from apps.billing.models import BillingCursor, Statement
from apps.keys.models import ApiKey
from apps.ledger.models import UsageRecord
from apps.ledger.partitions import (
    DEFAULT,
    month_add,
    month_start,
    partition_months,
    partition_name,
    partitions_cover,
    partitions_ensure,
    partitions_retire,
)
from apps.ledger.services import usage_ingest, usage_ingest_batch
from tests.ledger.test_ingest import append, event_for

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="partitions are PostgreSQL's"
)


def _where(request_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT tableoid::regclass::text FROM {UsageRecord._meta.db_table}"
            " WHERE request_id = %s",
            [request_id],
        )
        return cursor.fetchone()[0]


def _record(key: ApiKey, request_id: str, at: datetime) -> UsageRecord:
    return UsageRecord.objects.create(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key_id=key.id,
        model="test-model",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=at,
    )


def test_the_ledger_is_partitioned_after_migrate(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT partstrat FROM pg_partitioned_table WHERE partrelid = %s::regclass",
            [UsageRecord._meta.db_table],
        )
        assert cursor.fetchone() == ("r",)


def test_this_month_and_the_next_three_have_partitions_after_migrate(db):
    this = month_start(timezone.now())
    assert {month_add(this, n) for n in range(4)} <= set(partition_months())


def test_the_default_partition_exists_after_migrate(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [DEFAULT])
        assert cursor.fetchone() == (True,)


def test_the_primary_key_is_id_and_created_at(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = %s::regclass AND contype = 'p'",
            [UsageRecord._meta.db_table],
        )
        assert cursor.fetchone() == ("PRIMARY KEY (id, created_at)",)


def test_the_brin_index_on_ingested_at_survives(db):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'usage_ingested_brin'"
            " AND tablename = %s",
            [UsageRecord._meta.db_table],
        )
        assert "USING brin (ingested_at)" in cursor.fetchone()[0]


@pytest.mark.parametrize("name", ["usage_tenant_user_time", "usage_tags", "usage_tenant_time"])
def test_the_report_indexes_cover_every_partition(db, name):
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass", [name])
        assert cursor.fetchone()[0] == len(partition_months()) + 1  # and DEFAULT


def test_an_event_lands_in_its_month_partition(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    now = timezone.now()
    append(clean_stream, replace(event_for(key, "req_month"), created_at=now.timestamp()))
    usage_ingest(consumer="t")
    assert _where("req_month") == partition_name(month_start(now))


def test_an_event_of_a_month_without_partition_lands_in_default(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, replace(event_for(key, "req_far"), created_at=4_102_444_800.0))  # 2100
    usage_ingest(consumer="t")
    assert _where("req_far") == DEFAULT


def test_ensure_moves_default_rows_into_their_new_month(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, replace(event_for(key, "req_2099"), created_at=4_070_908_800.0))
    usage_ingest(consumer="t")
    partitions_ensure()
    assert _where("req_2099") == partition_name(date(2099, 1, 1))


def test_the_ahead_task_is_idempotent(db):
    partitions_ensure(ahead=6)
    assert partitions_ensure(ahead=6) == []


def test_the_ahead_task_makes_the_months_ahead(db):
    partitions_ensure(ahead=6)
    this = month_start(timezone.now())
    assert month_add(this, 6) in partition_months()


def test_a_replayed_event_lands_once_in_its_partition(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    event = replace(event_for(key, "req_twice"), created_at=timezone.now().timestamp())
    append(clean_stream, event)
    usage_ingest(consumer="t1")
    append(clean_stream, event)
    usage_ingest(consumer="t2")
    assert UsageRecord.objects.filter(request_id="req_twice").count() == 1


def test_a_replay_through_the_record_by_record_path_lands_once(seed, clean_stream):
    # A time where Python's fromtimestamp and PostgreSQL's to_timestamp round apart by a
    # microsecond: both paths must still write the same created_at.
    key = ApiKey.objects.get(name="main")
    event = replace(event_for(key, "req_paths"), created_at=1796000000.7887235)
    append(clean_stream, event)
    usage_ingest(consumer="t1")  # the COPY path
    append(clean_stream, event)
    append(clean_stream, replace(event_for(key, "req_orphan"), api_key_id=10**9))
    usage_ingest(consumer="t2")  # the batch fails on the orphan: one by one
    assert UsageRecord.objects.filter(request_id="req_paths").count() == 1


def test_a_replay_reclaimed_from_a_dead_consumer_lands_once(seed, clean_stream, settings):
    key = ApiKey.objects.get(name="main")
    event = replace(event_for(key, "req_reclaim"), created_at=timezone.now().timestamp())
    append(clean_stream, event)
    usage_ingest(consumer="t1")
    append(clean_stream, event)
    clean_stream.xreadgroup(
        settings.LEDGER_GROUP, "dead-worker", {settings.LEDGER_STREAM: ">"}, count=10
    )
    settings.LEDGER_RECLAIM_IDLE_MS = 0
    usage_ingest_batch(consumer="survivor")
    assert UsageRecord.objects.filter(request_id="req_reclaim").count() == 1


def test_a_month_query_reads_only_its_partition(db):
    this = month_start(timezone.now())
    start = datetime(this.year, this.month, 1, tzinfo=UTC)
    end = datetime(month_add(this, 1).year, month_add(this, 1).month, 1, tzinfo=UTC)
    plan = UsageRecord.objects.filter(created_at__gte=start, created_at__lt=end).explain()
    scanned = set(re.findall(r" on (\S+)", plan))
    assert scanned == {partition_name(this)}


# Retention ---------------------------------------------------------------------------


@pytest.fixture
def old_month(seed):
    """June 2026, with one record, rolled up, its statement closed over it."""
    key = ApiKey.objects.get(name="main")
    record = _record(key, "req_june", datetime(2026, 6, 10, tzinfo=UTC))
    partitions_ensure()
    BillingCursor.objects.create(name="rollups", position=timezone.now() + timedelta(hours=1))
    statement = Statement.objects.create(
        tenant_id=key.tenant_id,
        period_start=date(2026, 6, 1),
        period_end=date(2026, 7, 1),
        status=Statement.Status.CLOSED,
        ledger_high_water=record.id,
    )
    return key, statement


NOW = datetime(2026, 12, 15, tzinfo=UTC)
JUNE = partition_name(date(2026, 6, 1))


def test_retention_drops_a_rolled_up_and_closed_month(old_month):
    assert JUNE in partitions_retire(months=3, now=NOW)


def test_retention_keeps_a_month_with_an_open_statement(old_month):
    _key, statement = old_month
    Statement.objects.filter(id=statement.id).update(status=Statement.Status.OPEN)
    assert JUNE not in partitions_retire(months=3, now=NOW)


def test_retention_keeps_a_month_not_yet_rolled_up(old_month):
    BillingCursor.objects.filter(name="rollups").update(position=timezone.now() - timedelta(days=1))
    assert JUNE not in partitions_retire(months=3, now=NOW)


def test_retention_keeps_a_month_with_late_usage_not_yet_on_a_closed_statement(old_month):
    key, _statement = old_month
    _record(key, "req_june_late", datetime(2026, 6, 20, tzinfo=UTC))
    assert JUNE not in partitions_retire(months=3, now=NOW)


def test_retention_keeps_months_inside_the_window(old_month):
    assert JUNE not in partitions_retire(months=6, now=NOW)


def test_retention_unset_keeps_everything(old_month, settings):
    settings.LEDGER_RETENTION_MONTHS = None
    assert partitions_retire(now=NOW) == []


def test_retention_drops_the_rows_with_the_month(old_month):
    partitions_retire(months=3, now=NOW)
    assert not UsageRecord.objects.filter(request_id="req_june").exists()


def test_retention_never_drops_the_default_partition(old_month):
    partitions_retire(months=3, now=NOW)
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [DEFAULT])
        assert cursor.fetchone() == (True,)


def test_a_bulk_load_range_gets_its_months(db):
    partitions_cover(start=datetime(2024, 1, 20, tzinfo=UTC), end=datetime(2024, 3, 2, tzinfo=UTC))
    assert {date(2024, 1, 1), date(2024, 2, 1), date(2024, 3, 1)} <= set(partition_months())


# The migration both ways, with a row ---------------------------------------------------


@pytest.fixture
def round_trip(seed):
    key = ApiKey.objects.get(name="main")
    _record(key, "req_kept", datetime(2025, 3, 3, tzinfo=UTC))
    executor = MigrationExecutor(connection)
    latest = executor.loader.graph.leaf_nodes()
    executor.migrate([("ledger", "0009_attribution")])
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relkind FROM pg_class WHERE relname = %s", [UsageRecord._meta.db_table]
        )
        plain = cursor.fetchone()[0]
    executor = MigrationExecutor(connection)
    executor.migrate(latest)
    return plain


def test_unapplying_the_migration_gives_a_plain_table(round_trip):
    assert round_trip == "r"


def test_a_row_survives_the_migration_both_ways(round_trip):
    assert _where("req_kept") == partition_name(date(2025, 3, 1))


def test_events_either_side_of_a_month_boundary_land_in_their_months(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    following = month_add(month_start(timezone.now()), 1)
    boundary = datetime(following.year, following.month, 1, tzinfo=UTC).timestamp()
    for name, at in (("req_before", boundary - 0.000001), ("req_after", boundary)):
        append(clean_stream, replace(event_for(key, name), created_at=at))
        append(clean_stream, replace(event_for(key, name), created_at=at))
    usage_ingest(consumer="t")
    placed = {rid: _where(rid) for rid in ("req_before", "req_after")}
    assert placed == {
        "req_before": partition_name(month_add(following, -1)),
        "req_after": partition_name(following),
    }


def test_events_either_side_of_a_month_boundary_land_once_each(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    following = month_add(month_start(timezone.now()), 1)
    boundary = datetime(following.year, following.month, 1, tzinfo=UTC).timestamp()
    for name, at in (("req_before", boundary - 0.000001), ("req_after", boundary)):
        append(clean_stream, replace(event_for(key, name), created_at=at))
        append(clean_stream, replace(event_for(key, name), created_at=at))
    usage_ingest(consumer="t")
    assert UsageRecord.objects.filter(request_id__in=["req_before", "req_after"]).count() == 2
