"""A prepaid tenant through the gateway: each request reserves its worst-case price
against the balance and settles to the real price; an exhausted balance is refused in
each protocol's own words, recorded without a debit; GET /v1/key shows the balance."""

from decimal import Decimal

import anthropic
import httpx
import openai
import orjson
import pytest
import redis
from django.conf import settings

from apps.ledger.models import UsageRecord
from apps.limits.limiter import balance_keys
from apps.tenants.models import Tenant
from apps.tenants.services import tenant_update
from apps.wallet.selectors import balance_get
from apps.wallet.services import balance_entry_add
from tests.gateway.inprocess import BASE_URL, InProcessGateway, ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

# test-model: 1_000 nano-USD per input token, 2_000 per output token; its default
# allowances are 512 tokens per request and 32 per message.
TEXT = "hi"
MAX_TOKENS = 16
WORST_NANOS = (512 + 32 + len(TEXT)) * 1_000 + MAX_TOKENS * 2_000
# Credits have six decimal places: the smallest one is a thousand nano-USD.
MICRO = 1_000


@pytest.fixture
def tenant(seed) -> Tenant:
    tenant = Tenant.objects.get(name=seed.tenant_name)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(*balance_keys(tenant.id))  # ids come again in later tests
    client.close()
    return tenant_update(tenant=tenant, billing_mode="prepaid")


def grant(tenant: Tenant, nanos: int, ref: str = "welcome") -> None:
    amount = Decimal(nanos).scaleb(-9)
    balance_entry_add(tenant=tenant, kind="grant", amount=amount, ref=ref, reason="test")


def redis_balance(tenant: Tenant) -> int | None:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        value = client.get(balance_keys(tenant.id)[0])
    finally:
        client.close()
    return None if value is None else int(value)


def chat(gateway: InProcessGateway, secret: str) -> httpx.Response:
    return gateway.request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}", "content-type": "application/json"},
        content=orjson.dumps(
            {
                "model": "test-model",
                "messages": [{"role": "user", "content": TEXT}],
                "max_tokens": MAX_TOKENS,
            }
        ),
    )


def test_a_request_that_fits_the_balance_is_answered(inprocess_gateway, seed, tenant):
    grant(tenant, WORST_NANOS)
    assert chat(inprocess_gateway, seed.secret).status_code == 200


def test_a_request_beyond_the_balance_is_refused_as_insufficient_quota(
    inprocess_gateway, seed, tenant
):
    grant(tenant, WORST_NANOS - MICRO)
    response = chat(inprocess_gateway, seed.secret)
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "insufficient_quota"
    assert response.json()["error"]["type"] == "insufficient_quota"
    assert response.headers["x-should-retry"] == "false"


def test_the_openai_sdk_sees_a_rate_limit_error_with_code_insufficient_quota(
    inprocess_gateway, seed, tenant
):
    client = openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1",
        api_key=seed.secret,
        http_client=inprocess_gateway.client,
        max_retries=0,
    )
    with pytest.raises(openai.RateLimitError) as refused:
        inprocess_gateway.run(
            client.chat.completions.create(
                model="test-model", messages=[{"role": "user", "content": TEXT}]
            )
        )
    assert refused.value.code == "insufficient_quota"


def test_the_anthropic_sdk_sees_a_bad_request_saying_the_credit_balance_is_too_low(
    inprocess_gateway, seed, tenant
):
    client = anthropic.AsyncAnthropic(
        base_url=BASE_URL,
        api_key=seed.secret,
        http_client=inprocess_gateway.anthropic_http_client,
        max_retries=0,
    )
    with pytest.raises(anthropic.BadRequestError) as refused:
        inprocess_gateway.run(
            client.messages.create(
                model="test-model",
                max_tokens=MAX_TOKENS,
                messages=[{"role": "user", "content": TEXT}],
            )
        )
    assert "credit balance is too low" in str(refused.value)


def test_a_refused_request_is_in_the_ledger_with_its_outcome(inprocess_gateway, seed, tenant):
    request_id = chat(inprocess_gateway, seed.secret).headers["x-request-id"]
    ingest_usage()
    assert UsageRecord.objects.get(request_id=request_id).outcome == "balance_exhausted"


def test_a_refused_request_debits_nothing(inprocess_gateway, seed, tenant):
    grant(tenant, WORST_NANOS - MICRO)
    chat(inprocess_gateway, seed.secret)
    ingest_usage()
    assert balance_get(tenant=tenant) == Decimal(WORST_NANOS - MICRO).scaleb(-9)


def test_an_answered_request_is_a_prepaid_debit_in_the_ledger(inprocess_gateway, seed, tenant):
    grant(tenant, WORST_NANOS)
    request_id = chat(inprocess_gateway, seed.secret).headers["x-request-id"]
    ingest_usage()
    assert UsageRecord.objects.get(request_id=request_id).prepaid is True


def test_settling_debits_the_real_price_not_the_reservation(inprocess_gateway, seed, tenant):
    grant(tenant, 10 * WORST_NANOS)
    request_id = chat(inprocess_gateway, seed.secret).headers["x-request-id"]
    ingest_usage()
    price = UsageRecord.objects.get(request_id=request_id).price
    assert redis_balance(tenant) == 10 * WORST_NANOS - int(price.scaleb(9))


def test_the_redis_balance_equals_the_journal_after_requests(inprocess_gateway, seed, tenant):
    grant(tenant, 10 * WORST_NANOS)
    for _ in range(3):
        chat(inprocess_gateway, seed.secret)
    ingest_usage()
    assert redis_balance(tenant) == int(balance_get(tenant=tenant).scaleb(9))


def test_a_credit_after_the_balance_is_loaded_reaches_redis(inprocess_gateway, seed, tenant):
    grant(tenant, WORST_NANOS - MICRO)
    chat(inprocess_gateway, seed.secret)  # loads the balance, refused
    grant(tenant, MICRO, ref="top-up")
    assert chat(inprocess_gateway, seed.secret).status_code == 200


def test_a_lost_balance_is_loaded_from_the_journal(inprocess_gateway, seed, tenant):
    grant(tenant, 10 * WORST_NANOS)
    chat(inprocess_gateway, seed.secret)
    ingest_usage()
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(balance_keys(tenant.id)[0])  # e.g. Redis restarted without its data
    client.close()
    chat(inprocess_gateway, seed.secret)
    ingest_usage()
    assert redis_balance(tenant) == int(balance_get(tenant=tenant).scaleb(9))


def key_balance(gateway: InProcessGateway, secret: str):
    response = gateway.request("GET", "/v1/key", headers={"Authorization": f"Bearer {secret}"})
    return response.json()["data"]["balance"]


def test_get_v1_key_shows_a_prepaid_tenants_balance(inprocess_gateway, seed, tenant):
    grant(tenant, 2_500_000_000)
    assert key_balance(inprocess_gateway, seed.secret) == {
        "amount": "2.500000000",
        "reserved": "0.000000000",
        "available": "2.500000000",
    }


def test_get_v1_key_shows_no_balance_for_a_postpaid_tenant(inprocess_gateway, seed):
    assert key_balance(inprocess_gateway, seed.secret) is None
