import time

import redis
from django.conf import settings

from apps.core.redis import sync_client
from apps.core.shards import usage_streams


def ledger_pipeline_state() -> dict:
    """Length of the usage streams (every ledger shard's, added up), entries pending in
    their ingest groups, and the age of the oldest entry not yet ingested (stream ids are
    millisecond timestamps)."""
    client = sync_client()
    state = {"length": None, "pending": None, "lag_seconds": None, "dead_letters": None}
    group_names = (settings.LEDGER_GROUP, settings.LEDGER_GROUP.encode())
    try:
        length = dead = 0
        pending: int | None = None
        oldest_ms: int | None = None
        for stream in usage_streams():
            stream_length = client.xlen(stream)
            length += stream_length
            dead += client.xlen(stream + ":dead")
            groups = client.xinfo_groups(stream) if stream_length or client.exists(stream) else []
            for group in groups:
                if group["name"] in group_names:
                    pending = (pending or 0) + group["pending"]
            oldest = client.xrange(stream, count=1)
            if oldest:
                entry_ms = int(oldest[0][0].split(b"-")[0])
                oldest_ms = entry_ms if oldest_ms is None else min(oldest_ms, entry_ms)
        state["length"], state["dead_letters"], state["pending"] = length, dead, pending
        state["lag_seconds"] = (
            0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)
        )
    except redis.RedisError:
        pass
    return state


def ledger_last_ingest():
    """When the newest usage record landed in the ledger (None: never). Read through the
    primary key (ids grow with ingest), not a scan of ingested_at."""
    from apps.ledger.models import UsageRecord

    return UsageRecord.objects.order_by("-id").values_list("ingested_at", flat=True).first()


def _over(value: float | None, limit: float) -> bool:
    return limit > 0 and value is not None and value > limit


def ledger_pipeline_health() -> dict:
    """``ledger_pipeline_state()`` plus when the beat schedule last ran, and a verdict per
    stage for /readyz: ``ingest`` fails when the oldest event not yet ingested is older
    than PIPELINE_MAX_INGEST_LAG_S, ``beat`` when it has been silent for longer than
    PIPELINE_MAX_BEAT_SILENCE_S or never ran (a limit of 0 never fails)."""
    from apps.core.beat import beat_last_tick

    state = ledger_pipeline_state()
    last_tick = beat_last_tick()
    silence = None if last_tick is None else max(0.0, time.time() - last_tick.timestamp())
    state["beat_last_tick"] = last_tick
    state["beat_silent_seconds"] = silence
    lag_limit = settings.PIPELINE_MAX_INGEST_LAG_S
    beat_limit = settings.PIPELINE_MAX_BEAT_SILENCE_S
    if state["lag_seconds"] is None:
        state["ingest"] = "unknown: the usage stream could not be read"
    elif _over(state["lag_seconds"], lag_limit):
        state["ingest"] = (
            f"stalled: the oldest event not ingested is {state['lag_seconds']:.0f} s old"
            f" (limit {lag_limit:g} s); is a worker running?"
        )
    else:
        state["ingest"] = "ok"
    if last_tick is None and beat_limit > 0:
        state["beat"] = "never ran: start `make worker` (or a beat process)"
    elif _over(silence, beat_limit):
        state["beat"] = f"silent for {silence:.0f} s (limit {beat_limit:g} s)"
    else:
        state["beat"] = "ok"
    return state
