"""Last-resort durability: a usage event that cannot reach Redis is appended to a local
spool file and replayed into the stream when Redis answers again, so no request goes
unbilled because Redis blinked."""

import asyncio
import logging
import os
from pathlib import Path

import orjson
import redis
import redis.asyncio as aioredis
from django.conf import settings

from apps.core.shards import usage_stream

log = logging.getLogger(__name__)


def _spool_dir() -> Path:
    path = Path(settings.LEDGER_SPOOL_DIR)
    path.mkdir(parents=True, exist_ok=True)
    return path


def spool_append(event: bytes) -> None:
    with open(_spool_dir() / f"spool-{os.getpid()}.jsonl", "ab") as spool:
        spool.write(event + b"\n")
        spool.flush()
        os.fsync(spool.fileno())


def _stream_of(line: bytes, base: str) -> str:
    """The stream of the event's tenant's shard; an event that does not say its tenant
    goes to the untagged stream, which the ingest reads (and dead-letters it from)."""
    try:
        tenant_id = orjson.loads(line)["tenant_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return base
    if isinstance(tenant_id, bool) or not isinstance(tenant_id, int):
        return base
    return usage_stream(tenant_id, base)


async def spool_replay(client: aioredis.Redis, stream: str) -> int:
    """Move spooled events into the usage streams (``stream`` is LEDGER_STREAM, each
    event goes to its tenant's shard's); returns how many were replayed."""
    replayed = 0
    for path in sorted(_spool_dir().glob("spool-*.jsonl")):
        claimed = path.with_suffix(".replaying")
        try:
            path.rename(claimed)  # atomic: one process replays a file
        except FileNotFoundError:
            continue
        lines = [line for line in claimed.read_bytes().split(b"\n") if line]
        try:
            pipe = client.pipeline(transaction=False)
            for line in lines:
                pipe.xadd(_stream_of(line, stream), {"e": line})
            await pipe.execute()
        except (redis.RedisError, OSError):
            claimed.rename(
                path.with_name(f"spool-retry-{os.getpid()}-{claimed.stat().st_ino}.jsonl")
            )
            raise
        claimed.unlink()
        replayed += len(lines)
    return replayed


async def spool_replay_forever(client: aioredis.Redis, stream: str, interval_s: float = 2.0):
    while True:
        await asyncio.sleep(interval_s)
        try:
            count = await spool_replay(client, stream)
            if count:
                log.warning("replayed %d spooled usage events into %s", count, stream)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - Redis still away: try again later
            pass
