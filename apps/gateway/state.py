"""Per-process gateway state: caches, pooled clients, the invalidation listener, the
drift of prompt estimates."""

import asyncio
import contextlib
import logging

import redis
from django.conf import settings

from apps.core.redis import (
    CATALOG_INVALIDATE_CHANNEL,
    KEYS_INVALIDATE_CHANNEL,
    async_client,
    fast_client,
    is_embedded,
    pubsub_client,
)
from apps.gateway.caches import CatalogCache, KeyCache
from apps.gateway.estimates import PromptEstimates
from apps.gateway.load import ProcessLoad
from apps.gateway.upstream.balancing import BalanceBoard
from apps.gateway.upstream.client import UpstreamClient
from apps.gateway.upstream.health import DeploymentHealth
from apps.ledger.spool import spool_replay_forever
from apps.limits.limiter import Limiter
from apps.moderation.remote import RemoteModerationClient

log = logging.getLogger(__name__)


class GatewayState:
    def __init__(self) -> None:
        self.redis = async_client()
        self.keys = KeyCache(settings.GATEWAY_KEY_CACHE_TTL_S)
        self.catalog = CatalogCache(settings.GATEWAY_KEY_CACHE_TTL_S)
        self.upstream = UpstreamClient(settings.GATEWAY_UPSTREAM_POOL_SIZE)
        self.load = ProcessLoad(
            max_in_flight=settings.GATEWAY_MAX_IN_FLIGHT,
            max_lag_s=settings.GATEWAY_MAX_LOOP_LAG_MS / 1000,
        )
        self.health = DeploymentHealth(self.redis)
        self.fast_redis = fast_client()
        self.limiter = Limiter(self.redis, settings.LEDGER_STREAM, self.fast_redis)
        self.estimates = PromptEstimates(
            scale_min=settings.PROMPT_ESTIMATE_SCALE_MIN,
            scale_max=settings.PROMPT_ESTIMATE_SCALE_MAX,
            min_observations=settings.PROMPT_ESTIMATE_MIN_OBSERVATIONS,
            window=settings.PROMPT_ESTIMATE_WINDOW,
        )
        self.moderation = RemoteModerationClient()
        # Requests in flight and time to first token per deployment (least-busy, latency).
        self.balance = BalanceBoard(self.redis)
        self._background: list[asyncio.Task] = []
        self.listening = asyncio.Event()
        # A prepaid tenant's balance being loaded from the journal, by tenant id: the
        # requests of a cold burst wait for one load instead of each reading the journal.
        self.balance_loads: dict[int, asyncio.Future] = {}

    def start(self) -> None:
        self._background.append(asyncio.create_task(self._listen_invalidations()))
        self._background.append(asyncio.create_task(self.load.watch_lag()))
        self._background.append(asyncio.create_task(self.health.refresh_forever()))
        self._background.append(asyncio.create_task(self.balance.run()))
        self._background.append(
            asyncio.create_task(spool_replay_forever(self.redis, settings.LEDGER_STREAM))
        )
        if is_embedded():
            from apps.core.embedded import run_schedule_forever

            self._background.append(asyncio.create_task(run_schedule_forever()))

    async def _listen_invalidations(self) -> None:
        while True:
            source = pubsub_client(self.redis)
            pubsub = source.pubsub()
            try:
                await pubsub.subscribe(KEYS_INVALIDATE_CHANNEL, CATALOG_INVALIDATE_CHANNEL)
                # Messages may have been missed while we were not subscribed.
                self.keys.clear()
                self.catalog.clear()
                self.listening.set()
                async for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    channel = message["channel"]
                    data = message["data"].decode()
                    if channel == KEYS_INVALIDATE_CHANNEL.encode():
                        if data == "*":
                            self.keys.clear()
                        else:
                            self.keys.invalidate(data)
                    else:
                        self.catalog.clear()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                self.listening.clear()
                log.warning("invalidation listener lost Redis (%s); retrying", exc)
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):  # closing a broken connection
                    await pubsub.aclose()
                if source is not self.redis:
                    with contextlib.suppress(Exception):
                        await source.aclose()

    async def close(self) -> None:
        for task in self._background:
            task.cancel()
        await self.upstream.close()
        await self.moderation.aclose()
        if self.fast_redis is not None:
            await self.fast_redis.close()
        await self.redis.aclose()
