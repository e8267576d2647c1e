"""The balance journal: credits are idempotent on their ref, and the balance is the
journal's sum (credits less the price of prepaid usage) after every operation."""

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from apps.wallet.models import BalanceEntry
from apps.wallet.selectors import balance_get
from apps.wallet.services import BalanceError, balance_entry_add

pytestmark = pytest.mark.django_db


@pytest.fixture
def tenant() -> Tenant:
    return Tenant.objects.create(name="prepaid-co", billing_mode="prepaid")


def grant(tenant, amount: str, ref: str = "welcome"):
    return balance_entry_add(
        tenant=tenant, kind="grant", amount=Decimal(amount), ref=ref, reason="welcome credit"
    )


def debit(tenant, request_id: str, price: str) -> None:
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


def test_a_grant_credits_the_balance(tenant):
    grant(tenant, "10.00")
    assert balance_get(tenant=tenant) == Decimal("10")


def test_a_grant_with_the_same_ref_is_credited_once(tenant):
    grant(tenant, "10.00")
    grant(tenant, "10.00")
    assert balance_get(tenant=tenant) == Decimal("10")


def test_a_repeated_ref_says_nothing_was_created(tenant):
    grant(tenant, "10.00")
    assert grant(tenant, "10.00")[1] is False


def test_the_balance_is_the_journal_sum_after_every_operation(tenant):
    steps = [
        lambda: grant(tenant, "10.00"),
        lambda: debit(tenant, "r1", "0.000123456789"),
        lambda: balance_entry_add(tenant=tenant, kind="topup", amount=Decimal("5"), ref="evt_1"),
        lambda: debit(tenant, "r2", "1.5"),
        lambda: balance_entry_add(tenant=tenant, kind="refund", amount=Decimal("-2"), ref="re_1"),
        lambda: balance_entry_add(
            tenant=tenant, kind="adjustment", amount=Decimal("-0.25"), ref="fix-1"
        ),
    ]
    for step in steps:
        step()
        entries = sum(BalanceEntry.objects.filter(tenant=tenant).values_list("amount", flat=True))
        usage = sum(
            UsageRecord.objects.filter(tenant=tenant, prepaid=True).values_list("price", flat=True)
        )
        assert balance_get(tenant=tenant) == entries - usage


@pytest.mark.parametrize(
    ("kind", "amount", "field"),
    [
        ("grant", "-1", "amount"),
        ("grant", "0", "amount"),
        ("refund", "1", "amount"),
        ("grant", "0.0000001", "amount"),
        ("grant", "1e15", "amount"),
        ("gift", "1", "kind"),
    ],
)
def test_an_invalid_entry_names_the_field(tenant, kind, amount, field):
    with pytest.raises(BalanceError) as caught:
        balance_entry_add(tenant=tenant, kind=kind, amount=Decimal(amount), ref="x")
    assert caught.value.field == field


def test_a_committed_credit_reaches_a_loaded_redis_balance(
    tenant, redis_url, django_capture_on_commit_callbacks
):
    from apps.core.redis import sync_client
    from apps.limits.limiter import balance_keys

    key = balance_keys(tenant.id)[0]
    sync_client().set(key, 1_000)
    with django_capture_on_commit_callbacks(execute=True):
        grant(tenant, "2.5")
    assert int(sync_client().get(key)) == 2_500_001_000


def test_a_credit_does_not_create_a_missing_redis_balance(
    tenant, redis_url, django_capture_on_commit_callbacks
):
    """Else the balance would hold that one credit: it is loaded from the journal instead."""
    from apps.core.redis import sync_client
    from apps.limits.limiter import balance_keys

    key = balance_keys(tenant.id)[0]
    sync_client().delete(key)
    with django_capture_on_commit_callbacks(execute=True):
        grant(tenant, "2.5")
    assert sync_client().get(key) is None
