"""The ledger lands each request exactly once: duplicates, crashes and poison included."""

import os
import signal
from dataclasses import replace

import orjson
import pytest
from django.conf import settings

from apps.keys.models import ApiKey
from apps.ledger.events import UsageEvent
from apps.ledger.models import UsageRecord
from apps.ledger.services import usage_ingest, usage_ingest_batch
from tests.conftest import start_celery_worker, wait_until


def event_for(key: ApiKey, request_id: str, **fields) -> UsageEvent:
    return UsageEvent(
        request_id=request_id,
        tenant_id=key.tenant_id,
        api_key_id=key.id,
        model="test-model",
        protocol="openai",
        endpoint="chat.completions",
        stream=False,
        created_at=1_790_000_000.0,
        status=200,
        prompt_tokens=10,
        completion_tokens=5,
        **fields,
    )


def append(client, event: UsageEvent) -> None:
    client.xadd(settings.LEDGER_STREAM, {"e": event.to_bytes()})


def test_the_same_event_ingested_twice_yields_one_record(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, event_for(key, "req_dup"))
    append(clean_stream, event_for(key, "req_dup"))
    usage_ingest(consumer="t1")
    append(clean_stream, event_for(key, "req_dup"))
    usage_ingest(consumer="t2")
    assert UsageRecord.objects.filter(request_id="req_dup").count() == 1
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert clean_stream.xlen(settings.LEDGER_STREAM) == 0


def test_an_event_with_a_count_beyond_the_ledger_columns_still_lands(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, event_for(key, "req_absurd", cached_tokens=10**15))
    append(clean_stream, event_for(key, "req_after"))
    usage_ingest(consumer="t1")
    assert UsageRecord.objects.filter(request_id__in=["req_absurd", "req_after"]).count() == 2


def test_entries_of_a_dead_consumer_are_reclaimed(seed, clean_stream, settings):
    key = ApiKey.objects.get(name="main")
    for i in range(3):
        append(clean_stream, event_for(key, f"req_dead_{i}"))
    # A consumer reads the batch and dies before committing or acknowledging.
    clean_stream.xreadgroup(
        settings.LEDGER_GROUP, "dead-worker", {settings.LEDGER_STREAM: ">"}, count=10
    )
    settings.LEDGER_RECLAIM_IDLE_MS = 0
    usage_ingest_batch(consumer="survivor")
    assert UsageRecord.objects.filter(request_id__startswith="req_dead_").count() == 3
    assert clean_stream.xpending(settings.LEDGER_STREAM, settings.LEDGER_GROUP)["pending"] == 0


def test_poison_entries_go_to_the_dead_letter_stream(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": b"not json"})
    append(clean_stream, event_for(key, "req_good"))
    append(clean_stream, replace(event_for(key, "req_orphan"), api_key_id=10**9))
    usage_ingest(consumer="t")
    assert UsageRecord.objects.filter(request_id="req_good").exists()
    assert not UsageRecord.objects.filter(request_id="req_orphan").exists()
    assert clean_stream.xlen(settings.LEDGER_STREAM + ":dead") == 2


@pytest.mark.e2e
def test_a_worker_killed_mid_batch_loses_nothing(seed, clean_stream, server_env):
    key = ApiKey.objects.get(name="main")
    for i in range(2000):
        append(clean_stream, event_for(key, f"req_kill_{i}"))
    env = {
        **server_env,
        "LEDGER_STREAM": settings.LEDGER_STREAM,
        "LEDGER_RECLAIM_IDLE_MS": "500",
        "LEDGER_BATCH_SIZE": "100",
    }
    victim = start_celery_worker(env, name="victim")
    # Kill it hard as soon as it has taken entries but before the stream is drained.
    wait_until(
        lambda: (
            clean_stream.xinfo_groups(settings.LEDGER_STREAM)[0]["pending"] > 0
            or UsageRecord.objects.filter(request_id__startswith="req_kill_").exists()
        ),
        timeout=30,
        interval=0.005,
    )
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait()
    victim.stop()
    survivor = start_celery_worker(env, name="survivor")
    try:
        wait_until(
            lambda: UsageRecord.objects.filter(request_id__startswith="req_kill_").count() == 2000,
            timeout=60,
        )
        wait_until(
            lambda: clean_stream.xinfo_groups(settings.LEDGER_STREAM)[0]["pending"] == 0, timeout=30
        )
    finally:
        survivor.stop()
    assert UsageRecord.objects.filter(request_id__startswith="req_kill_").count() == 2000


def test_an_event_from_before_the_new_token_classes_still_lands(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    old = orjson.loads(event_for(key, "req_old").to_bytes())
    for name in ("cache_write_5m_tokens", "cache_write_1h_tokens", "reasoning_tokens"):
        del old[name]
    del old["service_tier"]
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": orjson.dumps(old)})
    usage_ingest(consumer="t1")
    assert UsageRecord.objects.get(request_id="req_old").reasoning_tokens == 0


def test_an_event_lands_with_its_token_classes(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(
        clean_stream,
        event_for(
            key,
            "req_classes",
            cache_write_5m_tokens=3,
            cache_write_1h_tokens=2,
            reasoning_tokens=4,
            service_tier="priority",
        ),
    )
    usage_ingest(consumer="t1")
    record = UsageRecord.objects.get(request_id="req_classes")
    assert record.cache_write_5m_tokens == 3
    assert record.cache_write_1h_tokens == 2
    assert record.reasoning_tokens == 4
    assert record.service_tier == "priority"


HOSTILE_FIELDS = [
    {"model": "test\x00model"},  # PostgreSQL text cannot hold NUL
    {"model": 42},
    {"tenant_id": True},
    {"status": "200"},
    {"created_at": 1e300},
    {"created_at": "yesterday"},
    {"cost": "1e5", "price": "1"},
    {"cost": "1", "price": str(10**30)},
    {"cost": "1", "price": "-5"},
    {"ttft_ms": -1},
    {"content_filter": {"note": "\x00"}},
]


@pytest.mark.parametrize("fields", HOSTILE_FIELDS, ids=lambda f: repr(f)[:40])
def test_a_hostile_event_goes_to_the_dead_letters_and_its_batch_lands(seed, clean_stream, fields):
    key = ApiKey.objects.get(name="main")
    raw = orjson.loads(event_for(key, "req_hostile").to_bytes())
    raw.update(fields)
    append(clean_stream, event_for(key, "req_before"))
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": orjson.dumps(raw)})
    append(clean_stream, event_for(key, "req_after"))
    usage_ingest(consumer="t")
    landed = set(UsageRecord.objects.values_list("request_id", flat=True))
    assert landed == {"req_before", "req_after"}


@pytest.mark.parametrize(
    "raw", [b"[1, 2]", b"42", b'"event"', b"null", b"{not json", b'{"unknown_field": 1}']
)
def test_an_entry_that_is_no_event_goes_to_the_dead_letters_and_its_batch_lands(
    seed, clean_stream, raw
):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, event_for(key, "req_before"))
    clean_stream.xadd(settings.LEDGER_STREAM, {"e": raw})
    append(clean_stream, event_for(key, "req_after"))
    usage_ingest(consumer="t")
    landed = set(UsageRecord.objects.values_list("request_id", flat=True))
    assert landed == {"req_before", "req_after"}


def test_a_hostile_event_is_kept_in_the_dead_letter_stream(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, replace(event_for(key, "req_nul"), model="a\x00b"))
    usage_ingest(consumer="t")
    assert clean_stream.xlen(settings.LEDGER_STREAM + ":dead") == 1


def test_the_settled_amounts_land_exactly(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(
        clean_stream,
        event_for(key, "req_amounts", cost="1", price=str(10**24 - 1)),
    )
    usage_ingest(consumer="t")
    record = UsageRecord.objects.get(request_id="req_amounts")
    assert (format(record.cost, "f"), format(record.price, "f")) == (
        "0.000000000001",
        "999999999999.999999999999",
    )


def test_the_event_time_lands_to_the_microsecond(seed, clean_stream):
    key = ApiKey.objects.get(name="main")
    append(clean_stream, replace(event_for(key, "req_time"), created_at=1_790_000_000.123456))
    usage_ingest(consumer="t")
    record = UsageRecord.objects.get(request_id="req_time")
    assert record.created_at.isoformat() == "2026-09-21T14:13:20.123456+00:00"
