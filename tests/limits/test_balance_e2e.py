"""A prepaid balance is never overdrawn: 200 parallel requests across two server
processes against a balance that fits 20 worst-case requests admit exactly 20; settling
debits the real prices and frees the rest of the reservations."""

import asyncio
from collections import Counter
from decimal import Decimal

import httpx
import pytest
from django.db.models import Sum

from apps.core.redis import sync_client
from apps.ledger.models import UsageRecord
from apps.limits.limiter import balance_keys
from apps.provisioning.services import config_apply
from apps.tenants.models import Tenant
from apps.wallet.selectors import balance_get
from tests.conftest import fire_held, seed_document, start_gateway, wait_until

pytestmark = pytest.mark.e2e

# test-model: 1_000 nano-USD per input token, 2_000 per output token; its default
# allowances are 512 tokens per request and 32 per message.
TEXT = "#gate=prepaid200"
MAX_TOKENS = 16
WORST_NANOS = (512 + 32 + len(TEXT.encode())) * 1_000 + MAX_TOKENS * 2_000
FITS = 20
# Twenty reservations and half of another (credits have six decimal places).
GRANT_NANOS = FITS * WORST_NANOS + (WORST_NANOS // 2) // 1_000 * 1_000


@pytest.fixture(scope="module")
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway2")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def prepaid_key(upstream, tenant: str, grant_nanos: int) -> str:
    doc = seed_document(upstream.base_url)
    doc["tenants"] = [{"name": tenant, "keys": [{"name": "prepaid", "models": ["test-model"]}]}]
    secret = config_apply(document=doc).keys_created[0]["secret"]
    # Tenant ids come again in later test runs, Redis keeps its data between them.
    sync_client().delete(*balance_keys(Tenant.objects.get(name=tenant).id))
    amount = f"{Decimal(grant_nanos).scaleb(-9):f}"
    doc["tenants"][0].update(
        billing_mode="prepaid", grants=[{"ref": "welcome", "amount": amount, "reason": "test"}]
    )
    config_apply(document=doc)
    return secret


def payload() -> dict:
    return {
        "model": "test-model",
        "messages": [{"role": "user", "content": TEXT}],
        "max_tokens": MAX_TOKENS,
    }


async def fire(urls: list[str], secret: str, count: int) -> list[int]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        responses = await asyncio.gather(
            *[
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions",
                    json=payload(),
                    headers={"Authorization": f"Bearer {secret}"},
                )
                for i in range(count)
            ]
        )
    return [r.status_code for r in responses]


def ledger_of(tenant: str, expected: int) -> list[UsageRecord]:
    return wait_until(
        lambda: (
            (records := list(UsageRecord.objects.filter(tenant__name=tenant))) is not None
            and len(records) == expected
            and records
        ),
        timeout=30,
    )


def redis_balance(tenant: str) -> int:
    return int(sync_client().get(balance_keys(Tenant.objects.get(name=tenant).id)[0]))


@pytest.fixture
def burst(gateway, second_gateway, seed, upstream, celery_worker):
    """200 parallel requests, half through each process, all in flight together."""
    secret = prepaid_key(upstream, "prepaid-burst", GRANT_NANOS)
    responses = asyncio.run(
        fire_held(
            upstream,
            [gateway, second_gateway],
            {"Authorization": f"Bearer {secret}"},
            200,
            payload(),
            admitted=FITS,
        )
    )
    codes = [r.status_code for r in responses]
    records = ledger_of("prepaid-burst", 200)
    return secret, codes, records


def test_exactly_the_requests_that_fit_the_balance_are_admitted(burst):
    _secret, codes, _records = burst
    assert codes.count(200) == FITS


def test_the_others_are_refused_as_insufficient_quota(burst):
    _secret, codes, _records = burst
    assert codes.count(429) == 200 - FITS, Counter(codes)


def test_the_balance_never_goes_negative(burst):
    assert balance_get(tenant=Tenant.objects.get(name="prepaid-burst")) >= 0


def test_the_redis_balance_is_the_grant_less_the_real_prices(burst):
    _secret, _codes, records = burst
    debits = sum(-(-int(r.price.scaleb(12)) // 1000) for r in records)
    assert redis_balance("prepaid-burst") == GRANT_NANOS - debits


def test_only_admitted_requests_are_debited(burst):
    _secret, _codes, records = burst
    debited = UsageRecord.objects.filter(tenant__name="prepaid-burst", price__gt=0)
    assert debited.count() == FITS


def test_settling_frees_what_the_real_prices_did_not_use(burst, gateway):
    secret, _codes, _records = burst
    # Each reservation was the worst case; the real prices left room for more requests.
    codes = asyncio.run(fire([gateway], secret, 1))
    assert codes == [200]


def test_the_journal_equals_the_grant_less_the_ledger_prices(burst):
    spent = UsageRecord.objects.filter(tenant__name="prepaid-burst").aggregate(p=Sum("price"))
    tenant = Tenant.objects.get(name="prepaid-burst")
    assert balance_get(tenant=tenant) == Decimal(GRANT_NANOS).scaleb(-9) - spent["p"]
