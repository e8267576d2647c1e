"""Budget counters are reconciled against the ledger."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings

from apps.core.redis import sync_client
from apps.keys.models import ApiKey
from apps.keys.services import api_key_update
from apps.ledger.models import UsageRecord
from apps.limits.limiter import budget_period_bounds, scope_keys
from apps.limits.services import budget_reconcile


@pytest.fixture(autouse=True)
def private_usage_stream(settings) -> None:
    """A usage stream of the test's own: the Celery worker an earlier test left running
    drains the shared one, which would empty the "events in flight" these tests stage."""
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:reconcile-tests"


def spend(key: ApiKey, request_id: str, cost: str) -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key=key,
        model="test-model",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=datetime.now(UTC),
        cost=Decimal(cost),
        price=Decimal(cost),
    )


def test_a_drifted_counter_is_corrected_and_reported(seed, redis_url):
    client = sync_client()
    client.delete(settings.LEDGER_STREAM)
    key = ApiKey.objects.get(name="main")
    api_key_update(api_key=key, budget_amount=Decimal("10"), budget_period="monthly")
    spend(key, "req_a", "0.000123456")
    spend(key, "req_b", "1.5")
    period_id, _ = budget_period_bounds("monthly", datetime.now(UTC))
    counter = scope_keys(f"k:{key.id}", period_id)[5]
    client.set(counter, 42)  # e.g. Redis lost its data
    drifts = budget_reconcile()
    assert [(d.counter_nanos, d.ledger_nanos) for d in drifts] == [(42, 1_500_123_456)]
    assert int(client.get(counter)) == 1_500_123_456
    # In step now: nothing to report on the next run.
    assert budget_reconcile() == []


def test_reconciliation_waits_while_events_are_in_flight(seed, redis_url):
    client = sync_client()
    key = ApiKey.objects.get(name="main")
    api_key_update(api_key=key, budget_amount=Decimal("10"), budget_period="daily")
    period_id, _ = budget_period_bounds("daily", datetime.now(UTC))
    counter = scope_keys(f"k:{key.id}", period_id)[5]
    client.set(counter, 5)
    client.xadd(settings.LEDGER_STREAM, {"e": b"{}"})
    try:
        assert budget_reconcile() == []
        assert int(client.get(counter)) == 5
    finally:
        client.delete(settings.LEDGER_STREAM)
