"""Rate cards: what a tenant pays (price) beside what its usage costs the operator (cost).
A card's change prices only later requests; statements bill price; the margin is
price − cost to the unit."""

from datetime import UTC, datetime
from decimal import Decimal

from django.db.models import Sum

from apps.billing.models import RateCard, RateCardPrice, Statement, UsageRollup
from apps.billing.services import rollup_sync, statement_close, statements_sync
from apps.catalog.models import Model
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import PRICE_JAN, event, expected_cost, ingest


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def card(tenant, when: str, markup: str) -> RateCard:
    return RateCard.objects.create(
        tenant=tenant, effective_from=at(when), markup_percent=Decimal(markup)
    )


def record(e) -> UsageRecord:
    return UsageRecord.objects.get(request_id=e.request_id)


COST = expected_cost(PRICE_JAN, 1000, 500, 0)  # 1000 × 1.00 + 500 × 2.00 = 0.002


def test_a_record_without_a_rate_card_is_priced_at_its_cost(world):
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).price == COST


def test_a_markup_prices_above_the_cost(world):
    card(world.acme, "2026-02-01", "50")
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).price == Decimal("0.003")


def test_a_markup_leaves_the_cost(world):
    card(world.acme, "2026-02-01", "50")
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).cost == COST


def test_a_negative_markup_is_a_discount(world):
    card(world.acme, "2026-02-01", "-25")
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).price == Decimal("0.0015")


def test_a_rate_card_change_mid_period_prices_only_later_requests(world):
    card(world.acme, "2026-02-01", "50")
    card(world.acme, "2026-02-15 12:00", "100")
    before = event(world.acme_key, "2026-02-15 11:59:59")
    after = event(world.acme_key, "2026-02-15 12:00:00")
    ingest(before, after)
    assert (record(before).price, record(after).price) == (Decimal("0.003"), Decimal("0.004"))


def test_a_record_names_the_card_it_was_priced_with(world):
    first = card(world.acme, "2026-02-01", "50")
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).rate_card_id == first.id


def test_a_card_of_one_tenant_never_prices_another(world):
    card(world.acme, "2026-02-01", "50")
    e = event(world.globex_key, "2026-02-10 10:00")
    ingest(e)
    assert record(e).price == COST


def test_a_model_override_prices_that_model_at_its_own_rule(world):
    rate_card = card(world.acme, "2026-02-01", "50")
    override = RateCardPrice.objects.create(
        rate_card=rate_card,
        model=Model.objects.get(name="test-model"),
        input_per_mtok=Decimal("4"),
        output_per_mtok=Decimal("8"),
    )
    e = event(world.acme_key, "2026-02-10 10:00")
    ingest(e)
    # 1000 × 4 + 500 × 8 = 8000 micro-units, no markup on an override
    assert (record(e).price, record(e).price_rule_id) == (Decimal("0.008"), override.id)


def test_other_models_keep_the_card_markup_beside_an_override(world):
    rate_card = card(world.acme, "2026-02-01", "50")
    RateCardPrice.objects.create(
        rate_card=rate_card,
        model=Model.objects.get(name="test-model"),
        input_per_mtok=Decimal("4"),
        output_per_mtok=Decimal("8"),
    )
    e = event(world.acme_key, "2026-02-10 10:00", model="other-model")
    ingest(e)
    assert record(e).price == Decimal("0.003")


def _mixed_month(world) -> None:
    card(world.acme, "2026-02-01", "50")
    card(world.acme, "2026-02-20", "12.5")
    ingest(
        *(
            event(world.acme_key, f"2026-02-{day:02d} 10:00", prompt=997 * day, completion=13)
            for day in range(1, 28)
        ),
        event(world.acme_key2, "2026-02-21 10:00", model="other-model", prompt=7, completion=3),
        event(world.globex_key, "2026-02-21 10:00", prompt=5, completion=5),
    )


def test_a_statement_bills_the_ledger_price_to_the_unit(world):
    _mixed_month(world)
    rollup_sync()
    statements_sync()
    statement = Statement.objects.get(tenant=world.acme, period_start="2026-02-01")
    statement_close(statement=statement)
    statement.refresh_from_db()
    ledger = UsageRecord.objects.filter(tenant=world.acme).aggregate(p=Sum("price"))["p"]
    assert statement.total == ledger


def test_a_statement_bills_price_not_cost(world):
    _mixed_month(world)
    rollup_sync()
    statements_sync()
    statement = Statement.objects.get(tenant=world.acme, period_start="2026-02-01")
    cost = UsageRecord.objects.filter(tenant=world.acme).aggregate(c=Sum("cost"))["c"]
    assert statement.total != cost


def test_rollups_carry_the_margin_to_the_unit(world):
    _mixed_month(world)
    rollup_sync()
    days = UsageRollup.objects.filter(tenant=world.acme, granularity="day")
    margin = days.aggregate(m=Sum("price") - Sum("cost"))["m"]
    records = UsageRecord.objects.filter(tenant=world.acme)
    assert margin == records.aggregate(m=Sum("price") - Sum("cost"))["m"]
