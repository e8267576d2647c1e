"""Limits hold under concurrency across two server processes sharing Redis."""

import asyncio

import httpx
import openai
import pytest

from apps.gateway.protocol.openai import estimate_prompt_tokens
from apps.ledger.models import UsageRecord
from apps.provisioning.services import config_apply
from tests.conftest import fire_held, seed_document, start_gateway, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway2")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def issue_key(upstream, tenant: str = "acme", tenant_limits=None, **limits) -> str:
    doc = seed_document(upstream.base_url)
    doc["tenants"] = [
        {
            "name": tenant,
            **(tenant_limits or {}),
            "keys": [{"name": "limited", "models": ["test-model"], **limits}],
        }
    ]
    result = config_apply(document=doc)
    return result.keys_created[0]["secret"]


def body(text: str = "hi", **extra) -> dict:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}


async def fire(urls: list[str], secret: str, count: int, payload: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *[
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions",
                    json=payload,
                    headers={"Authorization": f"Bearer {secret}"},
                )
                for i in range(count)
            ]
        )


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


def test_rpm_admits_exactly_the_limit_across_two_servers(gateway, second_gateway, seed, upstream):
    secret = issue_key(upstream, rpm=50)
    responses = asyncio.run(fire([gateway, second_gateway], secret, 200, body()))
    assert statuses(responses) == {200: 50, 429: 150}
    refused = next(r for r in responses if r.status_code == 429)
    error = refused.json()["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "requests"
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "50"
    ok = next(r for r in responses if r.status_code == 200)
    assert ok.headers["x-ratelimit-limit-requests"] == "50"
    assert 0 <= int(ok.headers["x-ratelimit-remaining-requests"]) < 50
    assert ok.headers["x-ratelimit-reset-requests"].endswith("s")


def test_tenant_rpm_is_shared_by_its_keys(gateway, second_gateway, seed, upstream):
    secret = issue_key(upstream, tenant="shared", tenant_limits={"rpm": 10})
    responses = asyncio.run(fire([gateway, second_gateway], secret, 30, body()))
    assert statuses(responses) == {200: 10, 429: 20}
    assert (
        "organization"
        in next(r for r in responses if r.status_code == 429).json()["error"]["message"]
    )


def test_concurrency_limit_is_never_exceeded(gateway, second_gateway, seed, upstream):
    secret = issue_key(upstream, max_concurrent=5)
    responses = asyncio.run(fire([gateway, second_gateway], secret, 40, body("#hold_ms=300")))
    counts = statuses(responses)
    assert counts[200] >= 5 and counts[200] + counts.get(429, 0) == 40
    assert upstream.stats()["max_in_flight"] == 5
    # Slots are released: a later request gets through.
    after = httpx.post(
        gateway + "/v1/chat/completions", json=body(), headers={"Authorization": f"Bearer {secret}"}
    )
    assert after.status_code == 200


def test_tpm_reserves_prompt_plus_max_tokens_and_releases_the_unused(gateway, seed, upstream):
    payload = body(max_tokens=400)
    hold = body("#gate=tpm2#", max_tokens=400)
    # The gateway scales its prompt estimates by what it has observed (up to
    # PROMPT_ESTIMATE_SCALE_MAX, 2): the limit fits two holds at the largest scale and leaves
    # too little for a third at the smallest.
    worst_hold = 2 * estimate_prompt_tokens(hold) + 400
    tpm = 2 * worst_hold + 100
    assert tpm - 2 * (estimate_prompt_tokens(hold) + 400) < estimate_prompt_tokens(payload) + 400
    secret = issue_key(upstream, tpm=tpm)
    headers = {"Authorization": f"Bearer {secret}"}

    async def two_holding_then_third():
        async with httpx.AsyncClient(timeout=60) as client:
            url = gateway + "/v1/chat/completions"
            first = asyncio.create_task(client.post(url, json=hold, headers=headers))
            second = asyncio.create_task(client.post(url, json=hold, headers=headers))
            # Both admitted and held at the upstream, however slow the machine.
            while upstream.stats()["in_flight"] < 2 and not (first.done() or second.done()):
                await asyncio.wait([first, second], timeout=0.02)
            third = await client.post(url, json=payload, headers=headers)
            upstream.open_gate("tpm2")
            return await first, await second, third

    first, second, third = asyncio.run(two_holding_then_third())
    assert (first.status_code, second.status_code) == (200, 200)
    assert third.status_code == 429 and third.json()["error"]["type"] == "tokens"
    # The two finished with ~5 real completion tokens each: their unused reservation is free.
    again = httpx.post(gateway + "/v1/chat/completions", json=payload, headers=headers)
    assert again.status_code == 200, again.text


def worst_case_nanos(payload: dict, max_tokens: int) -> int:
    # test-model: input 1.00 and output 2.00 USD per million tokens = 1 and 2 µUSD per
    # token. The prompt's upper bound: 512 per request + 32 per message + its UTF-8 bytes.
    text = payload["messages"][0]["content"]
    return (512 + 32 + len(text.encode()) + max_tokens * 2) * 1000


def test_budget_holds_under_200_parallel_requests(
    gateway, second_gateway, seed, upstream, celery_worker
):
    payload = body("#gate=budget200", max_tokens=1000)
    worst = worst_case_nanos(payload, 1000)
    budget_nanos = worst * 20 + worst // 2
    budget = f"{budget_nanos / 10**9:.9f}"
    secret = issue_key(upstream, budget={"amount": budget, "period": "monthly"})
    responses = asyncio.run(
        fire_held(
            upstream,
            [gateway, second_gateway],
            {"Authorization": f"Bearer {secret}"},
            200,
            payload,
            admitted=20,
        )
    )
    counts = statuses(responses)
    assert counts == {200: 20, 429: 180}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-should-retry"] == "false"
    # Real costs were far below the worst case: the difference is free for later requests.
    second_wave = asyncio.run(fire([gateway, second_gateway], secret, 40, payload))
    assert statuses(second_wave)[200] >= 15
    admitted = 20 + statuses(second_wave)[200]
    admitted_ids = {
        r.headers["x-request-id"] for r in [*responses, *second_wave] if r.status_code == 200
    }
    assert len(admitted_ids) == admitted
    records = wait_until(
        lambda: (
            (qs := UsageRecord.objects.filter(request_id__in=admitted_ids)).count() == admitted
            and list(qs)
        )
    )
    spent_micro_usd = sum(r.prompt_tokens * 1 + r.completion_tokens * 2 for r in records)
    assert spent_micro_usd * 1000 <= budget_nanos


def test_upstream_failures_and_disconnects_release_reservations(gateway, seed, upstream):
    secret = issue_key(upstream, max_concurrent=1, tpm=100_000)
    headers = {"Authorization": f"Bearer {secret}"}
    failing = httpx.post(
        gateway + "/v1/chat/completions", json=body("#status=500"), headers=headers
    )
    assert failing.status_code == 502
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        headers=headers,
        json=body("#chunks=500 #delay_ms=20", stream=True),
    ) as r:
        for line in r.iter_lines():
            if "w3" in line:
                break
    wait_until(
        lambda: (
            httpx.post(gateway + "/v1/chat/completions", json=body(), headers=headers).status_code
            == 200
        ),
        timeout=5,
    )


def test_rate_limit_error_through_the_openai_sdk(gateway, seed, upstream):
    secret = issue_key(upstream, rpm=1)
    client = openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)
    client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"]


def test_redis_unavailable_fails_closed_with_503(server_env, seed, upstream):
    secret = issue_key(upstream, rpm=100)
    process = start_gateway({**server_env, "REDIS_URL": "redis://127.0.0.1:1/0"}, name="noredis")
    try:
        r = httpx.post(
            f"http://127.0.0.1:{process.port}/v1/chat/completions",
            json=body(),
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "limits_unavailable"
    finally:
        process.stop()


def test_absurd_max_tokens_is_refused_not_an_error(gateway, seed, upstream):
    secret = issue_key(upstream, tpm=100_000, budget={"amount": "5.00", "period": "daily"})
    for max_tokens in (10**15, 2**62):
        r = httpx.post(
            gateway + "/v1/chat/completions",
            json=body(max_tokens=max_tokens),
            headers={"Authorization": f"Bearer {secret}"},
        )
        assert r.status_code == 429, r.text
