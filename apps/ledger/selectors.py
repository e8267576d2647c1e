import time

import redis
from django.conf import settings

from apps.core.redis import sync_client


def ledger_pipeline_state() -> dict:
    """Length of the usage stream, entries pending in the ingest group, and the age of
    the oldest entry not yet ingested (stream ids are millisecond timestamps)."""
    client = sync_client()
    state = {"length": None, "pending": None, "lag_seconds": None, "dead_letters": None}
    try:
        stream = settings.LEDGER_STREAM
        state["length"] = client.xlen(stream)
        state["dead_letters"] = client.xlen(stream + ":dead")
        groups = client.xinfo_groups(stream) if state["length"] or client.exists(stream) else []
        for group in groups:
            if group["name"] in (settings.LEDGER_GROUP, settings.LEDGER_GROUP.encode()):
                state["pending"] = group["pending"]
        oldest = client.xrange(stream, count=1)
        if oldest:
            entry_ms = int(oldest[0][0].split(b"-")[0])
            state["lag_seconds"] = max(0.0, time.time() - entry_ms / 1000)
        else:
            state["lag_seconds"] = 0.0
    except redis.RedisError:
        pass
    return state


def ledger_last_ingest():
    """When the newest usage record landed in the ledger (None: never). Read through the
    primary key (ids grow with ingest), not a scan of ingested_at."""
    from apps.ledger.models import UsageRecord

    return UsageRecord.objects.order_by("-id").values_list("ingested_at", flat=True).first()
