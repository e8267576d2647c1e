"""Redis clients: the real server when REDIS_URL is set, else an in-process stand-in.

REDIS_URL names one of three deployments:
- ``redis://`` / ``rediss://``: a single server (the default);
- ``redis+cluster://[user:password@]host:port[,host:port…]``: a Redis Cluster, the nodes
  listed to learn the slot map from (redis-py's RedisCluster; the gateway's hot path
  routes its scripts itself, apps/core/fastredis.py);
- ``redis+sentinel://[user:password@]host:port[,host:port…]/<service>[/db]``: the primary
  of ``service`` as the Sentinels name it, found again after a failover.

Invalidation messages use classic PUBLISH, which a cluster's bus delivers to every node: a
listener subscribes on any one node (``pubsub_client``).

The stand-in (fakeredis, with Lua) serves the embedded default: every client in the
process shares one in-memory server, so it is correct for a single process only.
"""

import contextlib
import itertools
from dataclasses import dataclass
from functools import cache
from urllib.parse import unquote

import redis
import redis.asyncio as aioredis
import redis.asyncio.cluster as aiocluster
import redis.asyncio.sentinel as aiosentinel
import redis.cluster
import redis.sentinel
from django.conf import settings

KEYS_INVALIDATE_CHANNEL = "tollgate:invalidate:keys"
CATALOG_INVALIDATE_CHANNEL = "tollgate:invalidate:catalog"


def is_embedded() -> bool:
    return not settings.REDIS_URL


@dataclass(frozen=True)
class RedisTarget:
    """What a REDIS_URL names: ``kind`` single | cluster | sentinel; ``nodes`` the cluster's
    startup nodes or the Sentinels; ``service`` the Sentinel service name."""

    kind: str
    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    service: str = ""
    db: int = 0


def redis_target(url: str) -> RedisTarget:
    """Parse a ``redis+cluster://`` or ``redis+sentinel://`` URL (see the module's note);
    any other URL is a single server."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis+cluster", "redis+sentinel"):
        return RedisTarget("single", ())
    userinfo, _, rest = rest.rpartition("@")
    username, _, password = userinfo.partition(":") if userinfo else ("", "", "")
    hosts, _, path = rest.partition("/")
    nodes = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"REDIS_URL: {node!r} is not host:port")
        nodes.append((host.strip("[]"), int(port)))
    parts = [p for p in path.split("/") if p]
    kind = "cluster" if scheme == "redis+cluster" else "sentinel"
    if kind == "sentinel" and not parts:
        raise ValueError("REDIS_URL: redis+sentinel://hosts/<service>[/db] names no service")
    if kind == "cluster" and parts:
        raise ValueError("REDIS_URL: a cluster has no database number")
    return RedisTarget(
        kind,
        tuple(nodes),
        username=unquote(username) or None,
        password=unquote(password) or None,
        service=parts[0] if parts else "",
        db=int(parts[1]) if len(parts) > 1 else 0,
    )


def _auth(target: RedisTarget) -> dict:
    return {"username": target.username, "password": target.password}


@cache
def _fake_server():
    import fakeredis

    return fakeredis.FakeServer()


@cache
def sync_client() -> redis.Redis:
    if is_embedded():
        import fakeredis

        return fakeredis.FakeRedis(server=_fake_server())
    target = redis_target(settings.REDIS_URL)
    if target.kind == "cluster":
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in target.nodes],
            socket_timeout=5,
            socket_connect_timeout=2,
            **_auth(target),
        )
    if target.kind == "sentinel":
        sentinel = redis.sentinel.Sentinel(list(target.nodes), socket_timeout=2)
        return sentinel.master_for(
            target.service,
            socket_timeout=5,
            socket_connect_timeout=2,
            db=target.db,
            **_auth(target),
        )
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=2)


def async_client() -> aioredis.Redis:
    """A new asyncio client; callers keep one per event loop."""
    if is_embedded():
        import fakeredis

        return fakeredis.FakeAsyncRedis(server=_fake_server())
    target = redis_target(settings.REDIS_URL)
    if target.kind == "cluster":
        return aiocluster.RedisCluster(
            startup_nodes=[aiocluster.ClusterNode(h, p) for h, p in target.nodes],
            socket_timeout=5,
            socket_connect_timeout=2,
            max_connections=256,
            **_auth(target),
        )
    if target.kind == "sentinel":
        sentinel = aiosentinel.Sentinel(list(target.nodes), socket_timeout=2)
        return sentinel.master_for(
            target.service,
            socket_timeout=5,
            socket_connect_timeout=2,
            db=target.db,
            health_check_interval=30,
            **_auth(target),
        )
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


_pubsub_nodes = itertools.count()


def pubsub_client(default: aioredis.Redis) -> aioredis.Redis:
    """The client an invalidation listener subscribes with: on a cluster a plain client
    of one startup node (the next one at each call, so a listener that lost its node
    moves on: the cluster bus delivers PUBLISH to every node); else ``default``."""
    target = redis_target(settings.REDIS_URL) if not is_embedded() else None
    if target is None or target.kind != "cluster":
        return default
    host, port = target.nodes[next(_pubsub_nodes) % len(target.nodes)]
    return aioredis.Redis(
        host=host, port=port, socket_connect_timeout=2, health_check_interval=30, **_auth(target)
    )


def fast_client():
    """The gateway's pipelined client of the two hot-path scripts (apps/core/fastredis.py),
    for the deployment REDIS_URL names; None in the embedded default."""
    from apps.core.fastredis import ClusterFastRedis, FastRedis, SentinelFastRedis

    if is_embedded():
        return None
    target = redis_target(settings.REDIS_URL)
    if target.kind == "cluster":
        return ClusterFastRedis(target.nodes, username=target.username, password=target.password)
    if target.kind == "sentinel":
        return SentinelFastRedis(
            target.nodes,
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
        )
    return FastRedis(settings.REDIS_URL)
