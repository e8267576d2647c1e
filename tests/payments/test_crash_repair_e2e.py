"""A server killed between a top-up's journal insert and its Redis credit: Stripe's retry
credits nothing twice, and reconciliation brings the Redis balance to the journal, so the
paid money can be spent. The kill is real: the server process SIGKILLs itself at that
point (tests/faults/crash_before_credit.py)."""

import signal
from decimal import Decimal

import httpx
import pytest

from apps.billing.pricing import nanos
from apps.core.redis import sync_client
from apps.limits.balances import balance_journal_nanos, balance_reconcile
from apps.limits.limiter import balance_keys
from apps.wallet.models import BalanceEntry
from apps.wallet.services import balance_entry_add
from tests.conftest import PYTHON, Process, free_port, start_gateway
from tests.payments.conftest import SECRET_KEY, WEBHOOK, WEBHOOK_SECRET, shop_make, top_up_paid


@pytest.fixture
def stripe_env(server_env, fake_stripe) -> dict[str, str]:
    return {
        **server_env,
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_API_BASE": fake_stripe.url,
    }


@pytest.fixture
def paid(transactional_db, settings, fake_stripe):
    """A prepaid tenant holding 5.00 (its Redis balance loaded, as admission loads it) that
    has just paid a 25.00 top-up: the webhook is recorded, not yet delivered."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    shop = shop_make("crashco")
    balance_entry_add(tenant=shop.tenant, kind="grant", amount=Decimal("5.00"), ref="welcome")
    key = balance_keys(shop.tenant.id)[0]
    sync_client().set(key, balance_journal_nanos(tenant_id=shop.tenant.id))
    top_up_paid(shop, fake_stripe, amount="25.00")
    [event] = fake_stripe.events("checkout.session.completed")
    return shop, event, key


def _post(port: int, event: dict) -> httpx.Response:
    return httpx.post(
        f"http://127.0.0.1:{port}{WEBHOOK}",
        content=event["payload"].encode(),
        headers={"Content-Type": "application/json", "Stripe-Signature": event["signature"]},
        timeout=30,
    )


@pytest.fixture
def crashed(paid, stripe_env):
    """The webhook delivered to a server that dies right after the journal insert."""
    shop, event, key = paid
    port = free_port()
    process = Process(
        "crash-before-credit",
        [PYTHON, "tests/faults/crash_before_credit.py", "--port", str(port)],
        stripe_env,
        port,
    )
    try:
        with pytest.raises(httpx.TransportError):
            _post(port, event)
        exit_code = process.proc.wait(timeout=30)
    finally:
        process.stop()
    return shop, event, key, exit_code


def test_the_server_died_by_sigkill(crashed):
    *_, exit_code = crashed
    assert exit_code == -signal.SIGKILL


def test_the_journal_holds_the_top_up(crashed):
    shop, *_ = crashed
    assert BalanceEntry.objects.filter(tenant=shop.tenant, kind="topup").count() == 1


def test_the_redis_balance_missed_the_credit(crashed):
    _shop, _event, key, _ = crashed
    assert int(sync_client().get(key)) == nanos(Decimal("5.00"))


@pytest.fixture
def retried(crashed, stripe_env):
    """Stripe retries the delivery (no 2xx came back) to a healthy server."""
    shop, event, key, _ = crashed
    server = start_gateway(stripe_env, name="after-crash")
    try:
        answer = _post(server.port, event)
    finally:
        server.stop()
    return shop, key, answer


def test_the_retry_is_acknowledged(retried):
    _shop, _key, answer = retried
    assert answer.status_code == 200


def test_the_retry_credits_nothing_twice(retried):
    shop, *_ = retried
    assert BalanceEntry.objects.filter(tenant=shop.tenant, kind="topup").count() == 1


def test_reconciliation_corrects_the_redis_balance(retried):
    _shop, key, _ = retried
    [drift] = balance_reconcile()
    assert drift.corrected


def test_after_reconciliation_redis_holds_the_paid_balance(retried):
    _shop, key, _ = retried
    balance_reconcile()
    assert int(sync_client().get(key)) == nanos(Decimal("30.00"))
