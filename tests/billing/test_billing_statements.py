"""Monthly statements: lines equal the ledger; closed ones are frozen; late usage goes to
the next open statement."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.billing.models import Statement
from apps.billing.services import (
    StatementError,
    reconcile_run,
    rollup_sync,
    statement_close,
    statements_sync,
)
from apps.catalog.models import Price
from apps.ledger.models import UsageRecord
from tests.billing.billing_support import PRICE_JAN, event, expected_cost, ingest
from tests.billing.test_billing_cost import add_price


def when(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def ledger_cost(tenant, start: str, end: str) -> Decimal:
    return sum(
        UsageRecord.objects.filter(
            tenant=tenant, created_at__gte=when(start), created_at__lt=when(end)
        ).values_list("cost", flat=True),
        Decimal(0),
    )


def frozen(statement: Statement) -> tuple:
    statement.refresh_from_db()
    lines = list(
        statement.lines.order_by("kind", "usage_period", "model").values_list(
            "kind", "model", "usage_period", "requests", "prompt_tokens", "amount"
        )
    )
    return statement.status, statement.total, statement.amount_due, lines


def test_a_statement_bills_the_ledger_to_the_unit(world):
    add_price("2026-02-15", {"input": "0.333333", "cached": "0.1", "output": "1.777777"})
    events = [
        event(world.acme_key, f"2026-02-{d:02d} 12:00", prompt=1000 + d, completion=d, cached=d)
        for d in range(1, 28)
    ] + [event(world.acme_key, "2026-02-20 12:00", model="other-model", prompt=9, completion=9)]
    ingest(*events, event(world.globex_key, "2026-02-03 00:00"))
    rollup_sync()
    statements_sync(now=when("2026-03-01 12:00"))  # past the close grace: Feb closes
    feb = Statement.objects.get(tenant=world.acme, period_start="2026-02-01")
    assert feb.is_closed and feb.closed_at is not None
    lines = {line.model: line for line in feb.lines.all()}
    assert set(lines) == {"test-model", "other-model"}
    assert sum(line.amount for line in lines.values()) == feb.total
    assert feb.total == ledger_cost(world.acme, "2026-02-01", "2026-03-01")
    independent = sum(
        expected_cost(
            PRICE_JAN
            if e.created_at < when("2026-02-15").timestamp() or e.model != "test-model"
            else {"input": "0.333333", "cached": "0.1", "output": "1.777777"},
            e.prompt_tokens,
            e.completion_tokens,
            e.cached_tokens,
        )
        for e in events
    )
    assert feb.total == independent
    assert feb.amount_due == feb.total.quantize(Decimal("0.01"))
    assert lines["test-model"].requests == 27
    # Globex has its own statement, not mixed in.
    assert Statement.objects.get(tenant=world.globex, period_start="2026-02-01").total == (
        ledger_cost(world.globex, "2026-02-01", "2026-03-01")
    )
    assert reconcile_run(window_start=when("2026-02-01"), window_end=when("2026-03-01")).ok


def test_a_closed_statement_never_changes_late_usage_goes_to_the_next_open_one(world):
    ingest(event(world.acme_key, "2026-01-31 23:00", prompt=1000, completion=1000))
    rollup_sync()
    statements_sync(now=when("2026-02-05 00:00"))
    jan = Statement.objects.get(tenant=world.acme, period_start="2026-01-01")
    assert jan.is_closed
    closed = frozen(jan)
    assert closed[1] == Decimal("0.003")

    # Late events for January arrive, a price changes retroactively, February runs on.
    late = event(world.acme_key, "2026-01-20 10:00", prompt=2000, completion=0)
    ingest(late, event(world.acme_key, "2026-02-10 10:00", prompt=10, completion=10))
    Price.objects.filter(model__name="test-model").update(input_per_mtok=Decimal("5"))
    add_price("2026-01-01T00:00:01Z", {"input": "9", "cached": "9", "output": "9"})
    rollup_sync()
    statements_sync(now=when("2026-02-20 00:00"))
    assert frozen(jan) == closed

    feb = Statement.objects.get(tenant=world.acme, period_start="2026-02-01")
    assert not feb.is_closed
    lines = {(line.kind, line.usage_period.isoformat()): line for line in feb.lines.all()}
    late_line = lines[("late_usage", "2026-01-01")]
    assert late_line.description == "test-model: late usage from 2026-01"
    assert late_line.requests == 1
    assert late_line.amount == UsageRecord.objects.get(request_id=late.request_id).cost
    assert late_line.amount == Decimal("0.002")  # priced at ingest with January's price
    # Every record is billed exactly once across the two statements.
    total = Decimal(jan.total) + feb.total
    assert total == ledger_cost(world.acme, "2026-01-01", "2026-03-01")
    assert reconcile_run(window_start=when("2026-01-01"), window_end=when("2026-03-01")).ok

    # February closes; March picks up a later straggler from January, February stays put.
    statements_sync(now=when("2026-03-02 00:00"))
    feb_closed = frozen(feb)
    straggler = event(world.acme_key, "2026-01-05 10:00", prompt=0, completion=1000)
    ingest(straggler)
    rollup_sync()
    statements_sync(now=when("2026-03-03 00:00"))
    assert frozen(feb) == feb_closed and frozen(jan) == closed
    mar = Statement.objects.get(tenant=world.acme, period_start="2026-03-01")
    assert [
        (line.kind, line.usage_period.isoformat(), line.requests) for line in mar.lines.all()
    ] == [("late_usage", "2026-01-01", 1)]
    assert reconcile_run(window_start=when("2026-01-01"), window_end=when("2026-04-01")).ok


def test_statements_close_in_order_and_not_before_the_month_ends(world):
    ingest(
        event(world.acme_key, "2026-01-10 00:00"),
        event(world.acme_key, "2026-02-10 00:00"),
    )
    rollup_sync()
    statements_sync(now=when("2026-02-15 00:00"))  # January closes, February refreshed
    statements_sync(now=when("2026-02-15 00:00"))
    feb = Statement.objects.get(tenant=world.acme, period_start="2026-02-01")
    with pytest.raises(StatementError):
        statement_close(statement=feb, now=when("2026-02-20 00:00"))
    Statement.objects.filter(tenant=world.acme, period_start="2026-01-01").update(status="open")
    with pytest.raises(StatementError, match="in order"):
        statement_close(statement=feb, now=when("2026-03-20 00:00"))
