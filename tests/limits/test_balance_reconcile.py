"""Prepaid balances in Redis are reconciled against the balance journal: a credit whose
Redis side never ran (the worker died between the journal insert and the credit) or a
balance that drifted is repaired once the usage pipeline is drained."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.conf import settings

from apps.audit.models import AuditEvent
from apps.core.redis import sync_client
from apps.ledger.models import UsageRecord
from apps.limits.balances import balance_reconcile
from apps.limits.limiter import balance_keys
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def private_usage_stream(settings) -> None:
    """A usage stream of the test's own (see tests/limits/test_reconcile.py)."""
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:balance-reconcile-tests"


@pytest.fixture
def tenant(redis_url) -> Tenant:
    tenant = Tenant.objects.create(name="prepaid-co", billing_mode="prepaid")
    sync_client().delete(*balance_keys(tenant.id))
    return tenant


def credit_without_redis(tenant: Tenant, amount: str, ref: str) -> None:
    """A journal entry whose Redis credit never ran (no hook: the process died first)."""
    BalanceEntry.objects.create(tenant=tenant, kind="grant", amount=Decimal(amount), ref=ref)


def debit(tenant: Tenant, request_id: str, price: str) -> None:
    from apps.keys.services import api_key_issue

    key = tenant.api_keys.first() or api_key_issue(tenant=tenant, name="k")[0]
    UsageRecord.objects.create(
        request_id=request_id,
        tenant=tenant,
        api_key=key,
        model="m",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=datetime.now(UTC),
        price=Decimal(price),
        prepaid=True,
    )


def balance_in_redis(tenant: Tenant) -> int:
    return int(sync_client().get(balance_keys(tenant.id)[0]))


def test_a_credit_lost_between_the_journal_and_redis_is_repaired(tenant):
    sync_client().set(balance_keys(tenant.id)[0], 10 * 10**9)
    credit_without_redis(tenant, "10", "welcome")
    credit_without_redis(tenant, "5", "lost-top-up")  # never reached Redis
    balance_reconcile()
    assert balance_in_redis(tenant) == 15 * 10**9


def test_a_repaired_drift_is_reported(tenant):
    sync_client().set(balance_keys(tenant.id)[0], 42)
    credit_without_redis(tenant, "10", "welcome")
    drifts = balance_reconcile()
    assert [(d.counter_nanos, d.journal_nanos) for d in drifts] == [(42, 10 * 10**9)]


def test_a_repaired_drift_is_in_the_audit_log(tenant):
    sync_client().set(balance_keys(tenant.id)[0], 42)
    credit_without_redis(tenant, "10", "welcome")
    balance_reconcile()
    assert AuditEvent.objects.filter(action="balance.drift_corrected").count() == 1


def test_the_debits_in_the_ledger_are_counted(tenant):
    sync_client().set(balance_keys(tenant.id)[0], 0)
    credit_without_redis(tenant, "10", "welcome")
    debit(tenant, "req_a", "1.5")
    debit(tenant, "req_b", "0.000000000400")
    balance_reconcile()
    # 10 − 1.5 − 0.0000000004, the debits rounded up to a nano: 8.499999999.
    assert balance_in_redis(tenant) == 8_499_999_999


def test_a_balance_within_the_per_request_rounding_is_left_alone(tenant):
    credit_without_redis(tenant, "10", "welcome")
    debit(tenant, "req_a", "0.000000000400")
    debit(tenant, "req_b", "0.000000000400")
    # Each settled request debited its price rounded up: 2 nanos, the ledger's sum 1.
    sync_client().set(balance_keys(tenant.id)[0], 10 * 10**9 - 2)
    assert balance_reconcile() == []


def test_reconciliation_waits_while_usage_events_are_in_flight(tenant):
    client = sync_client()
    client.set(balance_keys(tenant.id)[0], 5)
    credit_without_redis(tenant, "10", "welcome")
    client.xadd(settings.LEDGER_STREAM, {"e": b"{}"})
    try:
        balance_reconcile()
        assert balance_in_redis(tenant) == 5
    finally:
        client.delete(settings.LEDGER_STREAM)
