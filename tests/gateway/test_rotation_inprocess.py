"""A rotated key through the gateway: inside the grace both secrets call the API as the
same key (its limits' counters and its ledger rows carry on), after it the old secret is
refused on the cached entry's own expiry, with no message at the grace's end."""

import time
from datetime import UTC

import httpx
import orjson
import pytest
import redis
from django.conf import settings

from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke, api_key_rotate
from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from tests.conftest import wait_until
from tests.gateway.inprocess import InProcessGateway, ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def fresh_counters(seed):
    """Key and tenant ids come again in later tests: start from counters of their own."""
    client = redis.Redis.from_url(settings.REDIS_URL)
    scopes = [f"k:{pk}" for pk in ApiKey.objects.values_list("pk", flat=True)]
    scopes += [f"t:{pk}" for pk in Tenant.objects.values_list("pk", flat=True)]
    for scope in scopes:
        for name in client.scan_iter(match=f"tg:lim:{scope}:*"):
            client.delete(name)


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def chat(gateway: InProcessGateway, secret: str) -> httpx.Response:
    return gateway.request(
        "POST",
        "/v1/chat/completions",
        headers={**bearer(secret), "content-type": "application/json"},
        content=orjson.dumps(
            {"model": "test-model", "messages": [{"role": "user", "content": "hello there"}]}
        ),
    )


def standing(gateway: InProcessGateway, secret: str) -> dict:
    response = gateway.request("GET", "/v1/key", headers=bearer(secret))
    assert response.status_code == 200, response.text
    return response.json()["data"]


def past(timestamp: float, slack: float = 1.0) -> float:
    """A wait_until timeout: until ``slack`` seconds after the epoch time ``timestamp``."""
    return max(timestamp - time.time(), 0) + slack


def rotate(grace_seconds: int) -> tuple[ApiKey, str]:
    return api_key_rotate(api_key=ApiKey.objects.get(name="main"), grace_seconds=grace_seconds)


def test_inside_the_grace_the_old_secret_still_calls_the_api(inprocess_gateway, seed):
    assert chat(inprocess_gateway, seed.secret).status_code == 200  # cached before
    rotate(60)
    assert chat(inprocess_gateway, seed.secret).status_code == 200


def test_inside_the_grace_the_new_secret_calls_the_api(inprocess_gateway, seed):
    _key, new = rotate(60)
    assert chat(inprocess_gateway, new).status_code == 200


def test_both_secrets_are_metered_to_the_key_the_old_one_was(inprocess_gateway, seed):
    before = chat(inprocess_gateway, seed.secret).headers["x-request-id"]
    _key, new = rotate(60)
    with_old = chat(inprocess_gateway, seed.secret).headers["x-request-id"]
    with_new = chat(inprocess_gateway, new).headers["x-request-id"]
    ingest_usage()
    keys = UsageRecord.objects.filter(request_id__in=[before, with_old, with_new])
    assert sorted(keys.values_list("api_key_id", flat=True)) == [seed_key_id()] * 3


def seed_key_id() -> int:
    return ApiKey.objects.get(name="main").id


def test_the_old_secret_reads_when_it_stops_working(inprocess_gateway, seed):
    api_key, _new = rotate(60)
    expected = api_key.previous_valid_until.astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert standing(inprocess_gateway, seed.secret)["secret_valid_until"] == expected


def test_the_new_secret_reads_no_end(inprocess_gateway, seed):
    _key, new = rotate(60)
    assert standing(inprocess_gateway, new)["secret_valid_until"] is None


def test_both_secrets_read_the_same_key_id(inprocess_gateway, seed):
    _key, new = rotate(60)
    assert standing(inprocess_gateway, seed.secret)["id"] == standing(inprocess_gateway, new)["id"]


def test_each_secret_reads_its_own_prefix(inprocess_gateway, seed):
    _key, new = rotate(60)
    prefixes = [standing(inprocess_gateway, s)["prefix"] for s in (seed.secret, new)]
    assert prefixes == [seed.secret[:10], new[:10]]


def test_after_the_grace_the_old_secret_is_refused_without_any_message(inprocess_gateway, seed):
    """The entry for the old secret is cached (30 s TTL) once the rotation's message has
    reached the gateway; nothing is published when the grace ends, so the refusal within
    a second of it comes from the entry's own expiry, checked on every request."""
    assert chat(inprocess_gateway, seed.secret).status_code == 200  # cached before
    api_key, _new = rotate(2)
    until = api_key.previous_valid_until.timestamp()
    # The entry loaded after the rotation's invalidation message carries the grace's end.
    wait_until(lambda: standing(inprocess_gateway, seed.secret)["secret_valid_until"], 1.5)
    refused = wait_until(
        lambda: (r := chat(inprocess_gateway, seed.secret)).status_code == 401 and r,
        timeout=past(until),
    )
    assert refused.json()["error"]["code"] == "invalid_api_key"


def test_after_the_grace_the_old_secret_is_refused_as_unknown(inprocess_gateway, seed):
    api_key, _new = rotate(1)
    until = api_key.previous_valid_until.timestamp()
    refused = wait_until(
        lambda: (r := chat(inprocess_gateway, seed.secret)).status_code == 401 and r,
        timeout=past(until),
    )
    assert refused.json()["error"]["message"].startswith("Incorrect API key provided")


def test_after_the_grace_the_new_secret_still_works(inprocess_gateway, seed):
    api_key, new = rotate(1)
    until = api_key.previous_valid_until.timestamp()
    wait_until(lambda: chat(inprocess_gateway, seed.secret).status_code == 401, past(until))
    assert chat(inprocess_gateway, new).status_code == 200


def test_without_a_grace_the_old_secret_is_refused_within_a_second(inprocess_gateway, seed):
    assert chat(inprocess_gateway, seed.secret).status_code == 200  # cached before
    rotate(0)
    wait_until(lambda: chat(inprocess_gateway, seed.secret).status_code == 401, timeout=1.0)


def test_requests_before_the_rotation_count_against_the_rpm_after_it(inprocess_gateway, seed):
    ApiKey.objects.filter(name="main").update(rpm=3)
    for _ in range(2):
        assert chat(inprocess_gateway, seed.secret).status_code == 200
    _key, new = rotate(0)
    assert [chat(inprocess_gateway, new).status_code for _ in range(2)] == [200, 429]


def test_the_new_secret_reads_the_requests_the_old_one_made(inprocess_gateway, seed):
    ApiKey.objects.filter(name="main").update(rpm=10)
    chat(inprocess_gateway, seed.secret)
    _key, new = rotate(60)
    chat(inprocess_gateway, seed.secret)
    assert standing(inprocess_gateway, new)["limits"]["key"]["rpm_remaining"] == 8


def test_revoking_inside_the_grace_refuses_the_old_secret(inprocess_gateway, seed):
    api_key, _new = rotate(60)
    assert chat(inprocess_gateway, seed.secret).status_code == 200
    api_key_revoke(api_key=api_key)
    refused = wait_until(
        lambda: (r := chat(inprocess_gateway, seed.secret)).status_code == 401 and r, 1.0
    )
    assert refused.json()["error"]["message"] == "This API key has been revoked."


def test_revoking_inside_the_grace_refuses_the_new_secret(inprocess_gateway, seed):
    api_key, new = rotate(60)
    assert chat(inprocess_gateway, new).status_code == 200
    api_key_revoke(api_key=api_key)
    wait_until(lambda: chat(inprocess_gateway, new).status_code == 401, 1.0)
