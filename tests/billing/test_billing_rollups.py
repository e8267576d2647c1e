"""Rollups equal the ledger, are rebuilt identically, and late events land in their hour."""

from datetime import UTC, datetime, timedelta

from apps.billing.models import UsageRollup
from apps.billing.services import (
    MEASURES,
    reconcile_run,
    rollup_buckets_recompute,
    rollup_sync,
    rollup_window_recompute,
)
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import event, ingest


def rollup_rows(granularity: str | None = None) -> list[tuple]:
    rows = UsageRollup.objects.order_by(
        "granularity", "bucket_start", "tenant_id", "api_key_id", "model"
    )
    if granularity:
        rows = rows.filter(granularity=granularity)
    return list(
        rows.values_list(
            "granularity", "bucket_start", "tenant_id", "api_key_id", "model", *MEASURES
        )
    )


def day(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def load(world) -> None:
    ingest(
        event(world.acme_key, "2026-02-10 09:00:01", prompt=100, completion=10),
        event(world.acme_key, "2026-02-10 09:59:59", prompt=200, completion=20, cached=50),
        event(world.acme_key, "2026-02-10 10:00:00", prompt=300, completion=30, status=502),
        event(world.acme_key, "2026-02-10 10:30:00", model="other-model", prompt=7, completion=3),
        event(world.acme_key2, "2026-02-10 23:59:59", model="other-model", prompt=1, completion=1),
        event(world.acme_key, "2026-02-11 00:00:00", prompt=5, completion=5),
        event(world.globex_key, "2026-02-10 09:30:00", prompt=1000, completion=1000),
    )


def test_rollups_equal_the_ledger(world):
    load(world)
    result = rollup_sync()
    assert result.hours and result.days
    hours = {(r[1], r[2], r[3], r[4]): r[5:] for r in rollup_rows("hour")}
    key = (day("2026-02-10 09:00"), world.acme.id, world.acme_key.id, "test-model")
    requests, errors, prompt, completion, cached, cost, price = hours[key]
    records = UsageRecord.objects.filter(
        tenant=world.acme, created_at__gte=key[0], created_at__lt=key[0] + timedelta(hours=1)
    )
    assert (requests, errors, prompt, completion, cached) == (2, 0, 300, 30, 50)
    assert cost == sum(r.cost for r in records)
    assert price == sum(r.price for r in records)
    ten = hours[(day("2026-02-10 10:00"), world.acme.id, world.acme_key.id, "test-model")]
    assert ten[:2] == (1, 1)  # a 502 is a request and an error
    days = {(r[1], r[2], r[3], r[4]): r[5:] for r in rollup_rows("day")}
    feb10 = days[(day("2026-02-10"), world.acme.id, world.acme_key.id, "test-model")]
    assert feb10[:5] == (3, 1, 600, 60, 50)
    assert len([k for k in days if k[0] == day("2026-02-10")]) == 4
    assert reconcile_run(window_start=day("2026-02-01"), window_end=day("2026-03-01")).ok


def test_recomputing_gives_the_same_rows(world):
    load(world)
    rollup_sync()
    first = rollup_rows()
    rollup_window_recompute(start=day("2026-02-01"), end=day("2026-03-01"))
    assert rollup_rows() == first
    rollup_sync()  # nothing new: no change
    assert rollup_rows() == first
    # Wipe and rebuild from scratch: identical.
    UsageRollup.objects.all().delete()
    rollup_buckets_recompute(
        hours=[day("2026-02-10 09:00") + timedelta(hours=h) for h in range(16)]
    )
    assert rollup_rows() == first


def test_a_late_event_lands_in_its_own_hour(world, settings):
    settings.BILLING_ROLLUP_OVERLAP_S = 0  # so the run shows exactly the hours it rebuilt
    load(world)
    rollup_sync()
    before = rollup_rows()
    # Arrives now (e.g. after a Redis backlog) but happened on Feb 10 at 09:15.
    ingest(event(world.acme_key, "2026-02-10 09:15:00", prompt=1, completion=2))
    result = rollup_sync()
    assert result.hours == [day("2026-02-10 09:00")]
    after = {(r[0], r[1], r[3], r[4]): r[5:] for r in rollup_rows()}
    assert after[("hour", day("2026-02-10 09:00"), world.acme_key.id, "test-model")][:4] == (
        3,
        0,
        301,
        32,
    )
    assert after[("day", day("2026-02-10"), world.acme_key.id, "test-model")][0] == 4
    assert len(rollup_rows()) == len(before)
    assert reconcile_run(window_start=day("2026-02-01"), window_end=day("2026-03-01")).ok


def test_reconciliation_reports_a_difference(world):
    load(world)
    rollup_sync()
    UsageRollup.objects.filter(granularity="hour", tenant=world.globex).update(requests=2)
    run = reconcile_run(window_start=day("2026-02-01"), window_end=day("2026-03-01"))
    assert not run.ok
    assert [d["check"] for d in run.differences] == ["rollups_hour"]
    assert run.differences[0]["ledger"]["requests"] == "1"
    assert run.differences[0]["billing"]["requests"] == "2"
