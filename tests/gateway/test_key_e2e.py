"""GET /v1/key: a key reads its own standing over plain HTTP, with either auth header."""

from datetime import timedelta
from decimal import ROUND_CEILING, Decimal

import orjson
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue, api_key_revoke
from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from tests.gateway.inprocess import ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

ANTHROPIC = {"anthropic-version": "2023-06-01"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def x_api_key(secret: str) -> dict[str, str]:
    return {"x-api-key": secret}


@pytest.fixture(autouse=True)
def fresh_counters(seed):
    """Key and tenant ids come again in later tests: start from counters of their own
    (a minute's window and a period's spend outlive a test)."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    scopes = [f"k:{pk}" for pk in ApiKey.objects.values_list("pk", flat=True)]
    scopes += [f"t:{pk}" for pk in Tenant.objects.values_list("pk", flat=True)]
    for scope in scopes:
        for name in client.scan_iter(match=f"tg:lim:{scope}:*"):
            client.delete(name)


@pytest.fixture
def limited(seed):
    """The seed's main key with limits of its own, and its tenant with limits too."""
    ApiKey.objects.filter(name="main").update(
        rpm=10, tpm=100_000, max_concurrent=3, budget_amount=Decimal("5.25")
    )
    Tenant.objects.filter(name=seed.tenant_name).update(
        rpm=1000, budget_amount=Decimal("100"), budget_period="daily"
    )
    return seed


def standing(gateway, headers: dict[str, str]) -> dict:
    response = gateway.request("GET", "/v1/key", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["data"]


def chat(gateway, secret: str) -> str:
    response = gateway.request(
        "POST",
        "/v1/chat/completions",
        headers={**bearer(secret), "content-type": "application/json"},
        content=orjson.dumps(
            {"model": "test-model", "messages": [{"role": "user", "content": "hello there"}]}
        ),
    )
    assert response.status_code == 200, response.text
    return response.headers["x-request-id"]


@pytest.mark.parametrize("auth", [bearer, x_api_key])
def test_a_key_reads_its_name_and_prefix_with_either_header(inprocess_gateway, limited, auth):
    data = standing(inprocess_gateway, auth(limited.secret))
    assert (data["name"], limited.secret.startswith(data["prefix"])) == ("main", True)


@pytest.mark.parametrize("auth", [bearer, x_api_key])
def test_a_key_reads_its_allowlist(inprocess_gateway, limited, auth):
    data = standing(inprocess_gateway, auth(limited.secret))
    assert data["models"] == sorted(
        ["test-model", "slow-model", "failover-model", "claude-fake", "llama-model", "llama-stop"]
    )


def test_a_key_reads_its_limits_and_its_tenants(inprocess_gateway, limited):
    limits = standing(inprocess_gateway, bearer(limited.secret))["limits"]
    assert (
        limits["key"]["rpm"],
        limits["key"]["tpm"],
        limits["key"]["max_concurrent"],
        limits["tenant"]["rpm"],
        limits["tenant"]["tpm"],
    ) == (10, 100_000, 3, 1000, None)


def test_a_budget_reads_as_exact_decimal_strings(inprocess_gateway, limited):
    data = standing(inprocess_gateway, bearer(limited.secret))
    assert (data["limit"], data["usage"], data["limit_remaining"]) == (
        "5.250000000",
        "0.000000000",
        "5.250000000",
    )


def test_the_keys_budget_period_reads_as_its_limit_reset(inprocess_gateway, limited):
    assert standing(inprocess_gateway, bearer(limited.secret))["limit_reset"] == "monthly"


def test_the_tenants_budget_reads_with_its_period(inprocess_gateway, limited):
    budget = standing(inprocess_gateway, bearer(limited.secret))["limits"]["tenant"]["budget"]
    assert (budget["amount"], budget["period"]) == ("100.000000000", "daily")


def test_remaining_requests_go_down_after_a_request(inprocess_gateway, limited):
    chat(inprocess_gateway, limited.secret)
    limits = standing(inprocess_gateway, bearer(limited.secret))["limits"]
    assert (limits["key"]["rpm_remaining"], limits["tenant"]["rpm_remaining"]) == (9, 999)


def test_reading_the_standing_uses_none_of_the_requests(inprocess_gateway, limited):
    standing(inprocess_gateway, bearer(limited.secret))
    data = standing(inprocess_gateway, bearer(limited.secret))
    assert data["limits"]["key"]["rpm_remaining"] == 10


def test_spend_is_the_requests_cost_after_a_request(inprocess_gateway, limited):
    request_id = chat(inprocess_gateway, limited.secret)
    ingest_usage()
    cost = UsageRecord.objects.get(request_id=request_id).cost
    nanos = (cost * 10**9).to_integral_value(rounding=ROUND_CEILING)
    data = standing(inprocess_gateway, bearer(limited.secret))
    assert (Decimal(data["usage"]), Decimal(data["limit_remaining"])) == (
        nanos / 10**9,
        Decimal("5.25") - nanos / 10**9,
    )


def test_a_key_never_sees_another_tenants_key(inprocess_gateway, limited):
    other = Tenant.objects.create(name="globex")
    _key, secret = api_key_issue(tenant=other, name="theirs", allowed_models=["other-model"])
    chat(inprocess_gateway, limited.secret)
    data = standing(inprocess_gateway, bearer(secret))
    assert (data["name"], data["tenant"], data["models"], data["limits"]["key"]["rpm"]) == (
        "theirs",
        "globex",
        ["other-model"],
        None,
    )


def test_a_key_without_limits_reads_nulls_not_zeros(inprocess_gateway, seed):
    data = standing(inprocess_gateway, bearer(seed.restricted_secret))
    assert (data["limit"], data["limits"]["key"]["rpm_remaining"], data["balance"]) == (
        None,
        None,
        None,
    )


def test_a_revoked_key_gets_a_401_in_openai_shape(inprocess_gateway, seed):
    api_key_revoke(api_key=ApiKey.objects.get(name="main"))
    response = inprocess_gateway.request("GET", "/v1/key", headers=bearer(seed.secret))
    assert (response.status_code, response.json()["error"]["message"]) == (
        401,
        "This API key has been revoked.",
    )


def test_a_revoked_key_gets_a_401_in_anthropic_shape(inprocess_gateway, seed):
    api_key_revoke(api_key=ApiKey.objects.get(name="main"))
    response = inprocess_gateway.request(
        "GET", "/v1/key", headers={**x_api_key(seed.secret), **ANTHROPIC}
    )
    assert (response.status_code, response.json()["error"]["type"]) == (
        401,
        "authentication_error",
    )


def test_an_expired_key_gets_a_401(inprocess_gateway, seed):
    ApiKey.objects.filter(name="main").update(expires_at=timezone.now() - timedelta(seconds=1))
    response = inprocess_gateway.request("GET", "/v1/key", headers=bearer(seed.secret))
    assert (response.status_code, response.json()["error"]["message"]) == (
        401,
        "This API key has expired.",
    )


def test_a_request_without_a_key_gets_a_401(inprocess_gateway, seed):
    response = inprocess_gateway.request("GET", "/v1/key")
    assert response.status_code == 401


def test_two_different_keys_in_the_two_headers_are_refused(inprocess_gateway, seed):
    response = inprocess_gateway.request(
        "GET", "/v1/key", headers={**bearer(seed.secret), **x_api_key(seed.restricted_secret)}
    )
    assert response.status_code == 401


def test_posting_to_the_key_route_is_a_405(inprocess_gateway, seed):
    response = inprocess_gateway.request("POST", "/v1/key", headers=bearer(seed.secret))
    assert response.status_code == 405


def test_an_unknown_route_next_to_it_is_still_a_404(inprocess_gateway, seed):
    response = inprocess_gateway.request("GET", "/v1/keys", headers=bearer(seed.secret))
    assert (response.status_code, response.json()["error"]["type"]) == (
        404,
        "invalid_request_error",
    )


def test_without_redis_the_limits_read_and_what_is_left_is_null(inprocess_gateway, limited):
    import redis.asyncio as aioredis

    from apps.limits.limiter import Limiter

    state = inprocess_gateway.run(inprocess_gateway.app.state())
    # Nothing listens on port 1: the limiter's Redis is down.
    state.limiter = Limiter(aioredis.from_url("redis://127.0.0.1:1"), settings.LEDGER_STREAM)
    limits = standing(inprocess_gateway, bearer(limited.secret))["limits"]["key"]
    assert (limits["rpm"], limits["rpm_remaining"], limits["budget"]["spent"]) == (10, None, None)
