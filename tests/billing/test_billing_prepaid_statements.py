"""A prepaid tenant's statement shows its balance over the month (opening, credits,
usage, closing) and each figure equals the balance journal at the month's bounds; usage
paid from the balance is not due again."""

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from apps.billing.services import statement_ensure, statement_refresh
from apps.ledger.models import UsageRecord
from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add

pytestmark = pytest.mark.django_db

FEB, MAR = datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)


def at(day: str) -> datetime:
    return datetime.fromisoformat(day).replace(tzinfo=UTC)


def credit(tenant, kind: str, amount: str, ref: str, when: str) -> None:
    entry, _ = balance_entry_add(tenant=tenant, kind=kind, amount=Decimal(amount), ref=ref)
    BalanceEntry.objects.filter(id=entry.id).update(created_at=at(when))


def debit(key, request_id: str, price: str, when: str, prepaid: bool = True) -> None:
    UsageRecord.objects.create(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key=key,
        model="test-model",
        protocol="openai",
        status=200,
        outcome="ok",
        created_at=at(when),
        price=Decimal(price),
        cost=Decimal(price),
        prepaid=prepaid,
    )


@pytest.fixture
def february(world):
    tenant = world.acme
    tenant.billing_mode = "prepaid"
    tenant.save()
    credit(tenant, "grant", "10", "welcome", "2026-01-10 00:00")
    debit(world.acme_key, "jan-1", "1.25", "2026-01-20 00:00")
    credit(tenant, "topup", "20", "evt_1", "2026-02-03 00:00")
    credit(tenant, "refund", "-2", "re_1", "2026-02-04 00:00")
    credit(tenant, "adjustment", "0.5", "fix", "2026-02-05 00:00")
    debit(world.acme_key, "feb-1", "3.000000000001", "2026-02-10 00:00")
    debit(world.acme_key, "feb-2", "0.75", "2026-02-28 23:59")
    credit(tenant, "topup", "100", "evt_2", "2026-03-01 00:00")  # March's
    debit(world.acme_key, "mar-1", "9", "2026-03-02 00:00")
    statement = statement_ensure(tenant=tenant, month=date(2026, 2, 1))
    return statement_refresh(statement=statement)


def test_the_opening_balance_is_the_journal_at_the_months_start(february, world):
    assert february.opening_balance == balance_get(tenant=world.acme, before=FEB)


def test_the_closing_balance_is_the_journal_at_the_months_end(february, world):
    assert february.closing_balance == balance_get(tenant=world.acme, before=MAR)


def test_the_credits_are_the_months_entries(february):
    assert february.balance_credits == Decimal("18.5")


def test_the_usage_is_the_months_prepaid_price(february):
    assert february.balance_usage == Decimal("3.750000000001")


def test_opening_plus_credits_less_usage_is_closing(february):
    expected = february.opening_balance + february.balance_credits - february.balance_usage
    assert february.closing_balance == expected


def test_prepaid_usage_is_not_due_again(february):
    assert february.amount_due == Decimal("0.00")


def test_postpaid_usage_of_the_month_is_still_due(world):
    tenant = world.acme
    credit(tenant, "grant", "10", "welcome", "2026-02-01 00:00")
    debit(world.acme_key, "feb-pre", "1", "2026-02-10 00:00")
    debit(world.acme_key, "feb-post", "2.5", "2026-02-11 00:00", prepaid=False)
    statement = statement_refresh(statement=statement_ensure(tenant=tenant, month=FEB.date()))
    assert statement.amount_due == Decimal("2.50")


def test_a_tenant_without_a_balance_has_no_balance_summary(world):
    debit(world.globex_key, "feb-g", "1", "2026-02-10 00:00", prepaid=False)
    statement = statement_refresh(statement=statement_ensure(tenant=world.globex, month=FEB.date()))
    assert statement.opening_balance is None


def test_the_statement_api_shows_the_balance(february, world):
    from tests.api.api_support import token_client

    client = token_client(world.acme_token)
    response = client.get(f"/api/v1/statements/{february.id}")
    body = json.loads(response.content, parse_float=Decimal)
    assert Decimal(body["balance"]["closing"]) == february.closing_balance
