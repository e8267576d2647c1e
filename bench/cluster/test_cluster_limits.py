"""Limits are exact across the three gateway hosts, and a revoked key is refused by every
host within a second."""

import asyncio
import time

import httpx
from conftest import api_key_of, body, fire, fire_held, issue_key, statuses


def test_rpm_admits_exactly_the_limit_across_three_hosts(gateways, upstream):
    secret = issue_key(upstream, rpm=50)
    responses = asyncio.run(fire(gateways, secret, 200, body()))
    assert statuses(responses) == {200: 50, 429: 150}


def test_every_host_decides_part_of_the_rpm_burst(gateways, upstream):
    secret = issue_key(upstream, rpm=50)
    responses = asyncio.run(fire(gateways, secret, 150, body()))
    deciding = {str(r.request.url.host) for r in responses if r.status_code in (200, 429)}
    assert len(deciding) == len(gateways)


def test_tenant_rpm_is_shared_by_its_keys_across_hosts(gateways, upstream):
    secret = issue_key(upstream, tenant_limits={"rpm": 10})
    responses = asyncio.run(fire(gateways, secret, 30, body()))
    assert statuses(responses) == {200: 10, 429: 20}


def test_concurrency_limit_is_never_exceeded_across_hosts(gateways, upstream):
    secret = issue_key(upstream, max_concurrent=5)
    responses = asyncio.run(
        fire_held(upstream, gateways, secret, 60, body("#gate=conc5"), admitted=5)
    )
    assert statuses(responses) == {200: 5, 429: 55}


def test_concurrency_held_at_the_upstream_is_the_limit(gateways, upstream):
    secret = issue_key(upstream, max_concurrent=5)
    asyncio.run(fire(gateways, secret, 40, body("#hold_ms=300")))
    assert upstream.stats()["max_in_flight"] == 5


def worst_case_nanos(payload: dict, max_tokens: int) -> int:
    # cluster-model: 1 and 2 µUSD per input and output token. The gateway's prompt bound:
    # 512 per request + 32 per message + the message's UTF-8 bytes.
    text = payload["messages"][0]["content"]
    return (512 + 32 + len(text.encode()) + max_tokens * 2) * 1000


def test_budget_admits_exactly_what_it_can_pay_for_across_hosts(gateways, upstream):
    payload = body("#gate=budget", max_tokens=1000)
    worst = worst_case_nanos(payload, 1000)
    budget = f"{(worst * 20 + worst // 2) / 10**9:.9f}"
    secret = issue_key(upstream, budget={"amount": budget, "period": "monthly"})
    responses = asyncio.run(fire_held(upstream, gateways, secret, 200, payload, admitted=20))
    assert statuses(responses) == {200: 20, 429: 180}


def test_budget_refusal_names_insufficient_quota(gateways, upstream):
    payload = body("#gate=budget1", max_tokens=1000)
    worst = worst_case_nanos(payload, 1000)
    budget = f"{(worst + worst // 2) / 10**9:.9f}"
    secret = issue_key(upstream, budget={"amount": budget, "period": "monthly"})
    responses = asyncio.run(fire_held(upstream, gateways, secret, 30, payload, admitted=1))
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "insufficient_quota"


def test_revoked_key_is_refused_by_every_host_within_a_second(gateways, upstream):
    from apps.keys.services import api_key_revoke

    secret = issue_key(upstream)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(timeout=10) as client:
        # Every host has the key in its cache.
        for url in gateways:
            ok = client.post(url + "/v1/chat/completions", json=body(), headers=headers)
            assert ok.status_code == 200, ok.text
        api_key_revoke(api_key=api_key_of(secret))
        revoked_at = time.monotonic()
        seen: dict[str, float] = {}
        while len(seen) < len(gateways) and time.monotonic() - revoked_at < 5:
            for url in gateways:
                if url not in seen:
                    r = client.post(url + "/v1/chat/completions", json=body(), headers=headers)
                    if r.status_code == 401:
                        seen[url] = time.monotonic() - revoked_at
    assert max(seen.values(), default=99) < 1.0, seen


def test_revocation_reaches_every_host(gateways, upstream):
    from apps.keys.services import api_key_revoke

    secret = issue_key(upstream)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(timeout=10) as client:
        for url in gateways:
            client.post(url + "/v1/chat/completions", json=body(), headers=headers)
        api_key_revoke(api_key=api_key_of(secret))
        deadline = time.monotonic() + 5
        refused: set[str] = set()
        while len(refused) < len(gateways) and time.monotonic() < deadline:
            for url in gateways:
                r = client.post(url + "/v1/chat/completions", json=body(), headers=headers)
                if r.status_code == 401:
                    refused.add(url)
    assert refused == set(gateways)
