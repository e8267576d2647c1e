"""Each record is billed at the price in force at its own time, fixed at ingest."""

from decimal import Decimal

from apps.billing.services import reconcile_run
from apps.catalog.models import Price
from apps.ledger.models import UsageRecord
from apps.provisioning.services import config_apply
from tests.billing.billing_support import PRICE_JAN, event, expected_cost, ingest, world_document

PRICE_MID_FEB = {"input": "3.000001", "cached": "0.25", "output": "7.123457"}


def add_price(since: str, prices: dict[str, str]) -> None:
    doc = world_document()
    doc["models"][0]["prices"].append(
        {
            "effective_from": since,
            "input_per_mtok": prices["input"],
            "cached_input_per_mtok": prices["cached"],
            "output_per_mtok": prices["output"],
        }
    )
    config_apply(document=doc)


def test_a_price_change_mid_period_bills_each_record_at_its_own_time(world):
    add_price("2026-02-15T12:00:00Z", PRICE_MID_FEB)
    before = event(world.acme_key, "2026-02-15 11:59:59", prompt=1234, completion=567, cached=200)
    after = event(world.acme_key, "2026-02-15 12:00:00", prompt=1234, completion=567, cached=200)
    ingest(before, after)
    old = UsageRecord.objects.get(request_id=before.request_id)
    new = UsageRecord.objects.get(request_id=after.request_id)
    assert old.cost == expected_cost(PRICE_JAN, 1234, 567, 200) == Decimal("0.002268")
    assert new.cost == expected_cost(PRICE_MID_FEB, 1234, 567, 200)
    assert new.cost == Decimal("0.007191001153")  # 12 places, exact: no rounding anywhere
    assert old.cost_rule.effective_from.day == 1
    assert new.cost_rule.effective_from.day == 15


def test_changing_a_price_never_changes_past_costs(world):
    first = event(world.acme_key, "2026-03-02 10:00", prompt=10_000, completion=1_000)
    ingest(first)
    cost = UsageRecord.objects.get(request_id=first.request_id).cost
    # Edit the version in force, and add a newer one back-dated before the record.
    Price.objects.filter(model__name="test-model").update(input_per_mtok=Decimal("99"))
    add_price("2026-03-01", {"input": "50", "cached": "50", "output": "50"})
    assert UsageRecord.objects.get(request_id=first.request_id).cost == cost
    later = event(world.acme_key, "2026-03-02 10:00", prompt=10_000, completion=1_000)
    ingest(later)
    assert UsageRecord.objects.get(request_id=later.request_id).cost == Decimal("0.55")


def test_usage_before_any_price_or_of_an_unpriced_model_costs_zero_and_is_flagged(world):
    early = event(world.acme_key, "2025-12-31 23:59:59")
    unknown = event(world.acme_key, "2026-02-01 00:00", model="no-such-model")
    ingest(early, unknown)
    for e in (early, unknown):
        record = UsageRecord.objects.get(request_id=e.request_id)
        assert record.cost == 0
        assert record.cost_rule_id is None
        assert record.unpriced
    run = reconcile_run(window_start=event_dt("2025-12-01"), window_end=event_dt("2026-03-01"))
    assert run.checked["unpriced_records"] == 2


def test_cached_tokens_are_part_of_the_prompt(world):
    e = event(world.acme_key, "2026-02-01 00:00", prompt=100, completion=0, cached=100)
    weird = event(world.acme_key, "2026-02-01 00:00", prompt=10, completion=0, cached=30)
    ingest(e, weird)
    assert UsageRecord.objects.get(request_id=e.request_id).cost == Decimal("0.00005")
    # More cached than prompt tokens (a confused upstream): all cached, none uncached.
    assert UsageRecord.objects.get(request_id=weird.request_id).cost == Decimal("0.000015")


def event_dt(day: str):
    from datetime import UTC, datetime

    return datetime.fromisoformat(day).replace(tzinfo=UTC)
