"""Redis clients: the real server when REDIS_URL is set, else an in-process stand-in.

The stand-in (fakeredis, with Lua) serves the embedded default: every client in the
process shares one in-memory server, so it is correct for a single process only.
"""

import contextlib
from functools import cache

import redis
import redis.asyncio as aioredis
from django.conf import settings

KEYS_INVALIDATE_CHANNEL = "tollgate:invalidate:keys"
CATALOG_INVALIDATE_CHANNEL = "tollgate:invalidate:catalog"


def is_embedded() -> bool:
    return not settings.REDIS_URL


@cache
def _fake_server():
    import fakeredis

    return fakeredis.FakeServer()


@cache
def sync_client() -> redis.Redis:
    if is_embedded():
        import fakeredis

        return fakeredis.FakeRedis(server=_fake_server())
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def async_client() -> aioredis.Redis:
    """A new asyncio client; callers keep one per event loop."""
    if is_embedded():
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=_fake_server())
    return aioredis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=5,
        socket_connect_timeout=2,
        max_connections=256,
        health_check_interval=30,
    )


def publish(channel: str, message: str) -> None:
    """Best-effort fan-out; the caches' short TTL is the backstop when Redis is away."""
    with contextlib.suppress(redis.RedisError):
        sync_client().publish(channel, message)
