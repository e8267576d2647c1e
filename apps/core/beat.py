"""Is the beat schedule running? Celery beat (``make beat``, ``make worker``'s embedded
``-B``, compose's ``beat`` service) and the embedded default's in-process scheduler stamp a
Redis key on every pass of their loop; /readyz and the staff pipeline page read it.

Without beat nothing is dispatched: the usage stream is never ingested and the reports
stay empty, so the stamp is what tells "no traffic" from "no pipeline"."""

import logging
import time
from datetime import UTC, datetime

import redis
from celery.beat import PersistentScheduler
from django.conf import settings

from apps.core.redis import sync_client

log = logging.getLogger(__name__)


def _key() -> str:
    # Next to the usage stream beat drives, so pipelines sharing a Redis stay apart.
    return settings.LEDGER_STREAM + ":beat"


def beat_tick_record(*, now: float | None = None) -> None:
    """Stamp the beat key with ``now`` (epoch seconds); a Redis outage is only logged, the
    schedule goes on (its tasks fail and retry on their own)."""
    try:
        sync_client().set(_key(), repr(time.time() if now is None else now))
    except redis.RedisError as exc:
        log.warning("beat: could not record the tick: %s", exc)


def beat_last_tick() -> datetime | None:
    """When the beat schedule last ran (None: never, or Redis unreachable)."""
    try:
        raw = sync_client().get(_key())
    except redis.RedisError:
        return None
    if raw is None:
        return None
    return datetime.fromtimestamp(float(raw), UTC)


class HeartbeatScheduler(PersistentScheduler):
    """Celery beat's default scheduler (schedule state in the ``-s`` file), stamping the
    beat key on each tick (at least every ``beat_max_loop_interval`` seconds)."""

    def tick(self, *args, **kwargs) -> float:
        beat_tick_record()
        return super().tick(*args, **kwargs)
