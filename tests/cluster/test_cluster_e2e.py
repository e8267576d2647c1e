"""Tollgate on a real 3-master Redis Cluster: limits exact across two gateway processes, a
slot migrated under load, and the ingest draining every ledger shard exactly once."""

import asyncio
import threading

import httpx
import pytest
from redis.crc import key_slot

from apps.core.shards import shard_of, usage_stream, usage_streams
from apps.keys.models import ApiKey
from apps.ledger.events import UsageEvent
from apps.ledger.models import UsageRecord
from apps.ledger.services import usage_ingest_batch
from apps.provisioning.services import config_apply
from apps.tenants.models import Tenant
from tests.conftest import fire_held, seed_document, wait_until

pytestmark = pytest.mark.e2e


def issue_key(upstream, tenant: str = "acme", tenant_limits=None, **limits) -> str:
    doc = seed_document(upstream.base_url)
    doc["tenants"] = [
        {
            "name": tenant,
            **(tenant_limits or {}),
            "keys": [{"name": "limited", "models": ["test-model"], **limits}],
        }
    ]
    return config_apply(document=doc).keys_created[0]["secret"]


def body(text: str = "hi", **extra) -> dict:
    return {"model": "test-model", "messages": [{"role": "user", "content": text}], **extra}


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


async def fire(urls, secret: str, count: int, payload: dict, parallel: int | None = None):
    limits = httpx.Limits(max_connections=parallel or count)
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


def drain(cluster) -> int:
    """Run the ingest in this process until every shard's stream is empty."""
    client = cluster.client()
    total = 0
    while handled := usage_ingest_batch(consumer="cluster-test", client=client):
        total += handled
    return total


def ledger_ids(responses) -> set[str]:
    return {r.headers["x-request-id"] for r in responses if r.status_code == 200}


def test_rpm_is_exact_across_two_gateways_on_the_cluster(
    cluster_gateways, on_cluster, seed, upstream
):
    secret = issue_key(upstream, rpm=30)
    responses = asyncio.run(fire(cluster_gateways, secret, 90, body()))
    assert statuses(responses) == {200: 30, 429: 60}


def test_tenant_rpm_is_shared_across_two_gateways_on_the_cluster(
    cluster_gateways, on_cluster, seed, upstream
):
    secret = issue_key(upstream, tenant="shared", tenant_limits={"rpm": 10})
    responses = asyncio.run(fire(cluster_gateways, secret, 30, body()))
    assert statuses(responses) == {200: 10, 429: 20}


def test_tpm_is_exact_across_two_gateways_on_the_cluster(
    cluster_gateways, on_cluster, seed, upstream
):
    from apps.gateway.protocol.openai import estimate_prompt_tokens

    payload = body("#gate=cluster-tpm#", max_tokens=100)
    per_request = estimate_prompt_tokens(payload) + 100
    secret = issue_key(upstream, tpm=per_request * 8 + per_request // 2)
    headers = {"Authorization": f"Bearer {secret}"}
    responses = asyncio.run(fire_held(upstream, cluster_gateways, headers, 40, payload, admitted=8))
    assert statuses(responses) == {200: 8, 429: 32}


def test_concurrency_is_exact_across_two_gateways_on_the_cluster(
    cluster_gateways, on_cluster, seed, upstream
):
    secret = issue_key(upstream, max_concurrent=5)
    headers = {"Authorization": f"Bearer {secret}"}
    payload = body("#gate=cluster-conc#")
    responses = asyncio.run(fire_held(upstream, cluster_gateways, headers, 40, payload, admitted=5))
    assert statuses(responses) == {200: 5, 429: 35}


def test_budget_is_exact_across_two_gateways_on_the_cluster(
    cluster_gateways, on_cluster, seed, upstream
):
    payload = body("#gate=cluster-budget", max_tokens=1000)
    # test-model: 1 and 2 µUSD per input and output token; the prompt's bound is 512 per
    # request + 32 per message + its UTF-8 bytes.
    worst = (512 + 32 + len(payload["messages"][0]["content"].encode()) + 2000) * 1000
    budget = f"{(worst * 12 + worst // 2) / 10**9:.9f}"
    secret = issue_key(upstream, budget={"amount": budget, "period": "monthly"})
    headers = {"Authorization": f"Bearer {secret}"}
    responses = asyncio.run(
        fire_held(upstream, cluster_gateways, headers, 60, payload, admitted=12)
    )
    assert statuses(responses) == {200: 12, 429: 48}


def test_the_usage_events_go_to_the_tenants_shard_stream(
    cluster_gateways, on_cluster, seed, upstream
):
    secret = issue_key(upstream, rpm=1000)
    responses = asyncio.run(fire(cluster_gateways, secret, 10, body()))
    tenant_id = Tenant.objects.get(name="acme").id
    stream = usage_stream(tenant_id)
    client = on_cluster.client()
    assert client.xlen(stream) == len(ledger_ids(responses))


def test_a_slot_migrated_under_load_loses_no_request_and_no_usage_event(
    cluster_gateways, on_cluster, seed, upstream
):
    secret = issue_key(upstream, rpm=100_000, tpm=100_000_000)
    tenant_id = Tenant.objects.get(name="acme").id
    slot = key_slot(f"s{shard_of(tenant_id)}".encode())
    source = on_cluster.owner(slot)
    target = next(p for p in on_cluster.ports if p != source)
    total = 300
    migrated = threading.Event()

    async def load_then_migrate():
        task = asyncio.create_task(
            fire(cluster_gateways, secret, total, body("#hold_ms=20"), parallel=40)
        )
        # Migrate once requests are flowing and well before they are over.
        while upstream.stats()["completed"] < 40 and not task.done():
            await asyncio.wait([task], timeout=0.01)
        moved = await asyncio.to_thread(on_cluster.migrate_slot, slot, target)
        migrated.set()
        in_flight_at_end = not task.done()
        return await task, moved, in_flight_at_end

    responses, moved, in_flight_at_end = asyncio.run(load_then_migrate())
    assert in_flight_at_end, "the migration ended after the load: it proved nothing"
    assert moved > 0
    assert on_cluster.owner(slot) == target
    assert statuses(responses) == {200: total}
    drain(on_cluster)
    ids = ledger_ids(responses)
    assert UsageRecord.objects.filter(request_id__in=ids).count() == total


def test_ingest_drains_every_shard_exactly_once(on_cluster, seed):
    key = ApiKey.objects.filter(tenant__name="acme").first()
    client = on_cluster.client()
    streams = usage_streams()
    events = []
    for n, stream in enumerate(streams):
        for i in range(5):
            event = UsageEvent(
                request_id=f"cluster-ingest-{n}-{i}",
                tenant_id=key.tenant_id,
                api_key_id=key.id,
                model="test-model",
                protocol="openai",
                endpoint="chat.completions",
                stream=False,
                created_at=1_780_000_000.0 + n,
                status=200,
                prompt_tokens=3,
                completion_tokens=4,
            )
            client.xadd(stream, {"e": event.to_bytes()})
            events.append(event)
    # The same event appended twice (a settlement retried after a lost reply) lands once.
    client.xadd(streams[0], {"e": events[0].to_bytes()})
    handled = drain(on_cluster)
    assert handled == len(events) + 1
    assert UsageRecord.objects.filter(request_id__startswith="cluster-ingest-").count() == len(
        events
    )
    assert sum(client.xlen(s) for s in streams) == 0
    owners = {on_cluster.owner(key_slot(s.encode())) for s in streams}
    assert owners == set(on_cluster.ports)


def test_a_revocation_published_on_any_node_reaches_both_gateways(
    cluster_gateways, on_cluster, seed, upstream
):
    from django.utils import timezone

    from apps.core.redis import KEYS_INVALIDATE_CHANNEL

    secret = issue_key(upstream, rpm=1000)
    headers = {"Authorization": f"Bearer {secret}"}

    def status(url: str) -> int:
        return httpx.post(url + "/v1/chat/completions", json=body(), headers=headers).status_code

    assert [status(url) for url in cluster_gateways] == [200, 200]  # cached in both
    key = ApiKey.objects.get(tenant__name="acme", name="limited")
    ApiKey.objects.filter(id=key.id).update(revoked_at=timezone.now())
    # Classic PUBLISH on the last node: the cluster bus carries it to every node, whichever
    # one each gateway subscribed on. (Well before the caches' 30 s TTL.)
    on_cluster.node(on_cluster.ports[-1]).publish(KEYS_INVALIDATE_CHANNEL, key.key_hash)
    refused = wait_until(
        lambda: all(status(url) == 401 for url in cluster_gateways), timeout=5, interval=0.1
    )
    assert refused


def test_a_celery_worker_on_the_cluster_ingests_every_shard(cluster_env, on_cluster, seed):
    from tests.conftest import start_celery_worker

    key = ApiKey.objects.filter(tenant__name="acme").first()
    client = on_cluster.client()
    ids = set()
    for n, stream in enumerate(usage_streams()):
        event = UsageEvent(
            request_id=f"cluster-worker-{n}",
            tenant_id=key.tenant_id,
            api_key_id=key.id,
            model="test-model",
            protocol="openai",
            endpoint="chat.completions",
            stream=False,
            created_at=1_780_000_000.0 + n,
            status=200,
        )
        client.xadd(stream, {"e": event.to_bytes()})
        ids.add(event.request_id)
    worker = start_celery_worker(cluster_env, name="cluster-worker")
    try:
        landed = wait_until(
            lambda: UsageRecord.objects.filter(request_id__in=ids).count() == len(ids),
            timeout=60,
        )
    finally:
        worker.stop()
    assert landed


def test_spooled_events_are_replayed_into_their_tenants_shard_streams(
    on_cluster, settings, tmp_path
):
    import orjson
    import redis.asyncio.cluster as aiocluster

    from apps.ledger.spool import spool_append, spool_replay

    settings.LEDGER_SPOOL_DIR = str(tmp_path)
    tenants = [3, 4, 21]  # shards 3, 4 and 5
    for tenant_id in tenants:
        spool_append(orjson.dumps({"request_id": f"spooled-{tenant_id}", "tenant_id": tenant_id}))

    async def replay() -> int:
        client = aiocluster.RedisCluster(host="127.0.0.1", port=on_cluster.ports[0])
        try:
            return await spool_replay(client, settings.LEDGER_STREAM)
        finally:
            await client.aclose()

    assert asyncio.run(replay()) == 3
    client = on_cluster.client()
    assert [client.xlen(usage_stream(t)) for t in tenants] == [1, 1, 1]
