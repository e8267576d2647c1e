"""The order in which one request tries a model's deployments, by the model's strategy.

``order(model, session_key, available=…, board=…)`` is the one entry point; the first
deployment serves unless it fails, the others are the failover in that order.

``weighted``
    random, each deployment as likely as its weight (``ModelInfo.deployment_order``).
``least-busy``
    fewest requests in flight first, counted by every gateway process (``BalanceBoard``);
    ties by weight.
``latency``
    lowest EWMA of time to first token first (``BalanceBoard``). A deployment nobody has
    measured for ``PROBE_AFTER_S`` goes first once, so a deployment that was slow is
    measured again (one request per period) instead of being avoided for ever.
``affinity``
    rendezvous (highest random weight) hashing of the session key over the deployments,
    weights respected: the same key ranks the deployments the same way in every process,
    and a deployment leaving moves only the sessions it was first for, each to its own
    next one. A request without a session key is balanced by weight.

Why the board does not reuse admission's concurrency slots: those are counted per key
and tenant, before a deployment is chosen, inside admission's Lua round trip; a
deployment's count would need a second round trip per request. Each process counts its
own requests per deployment instead and shares the counts (and its latency averages)
through one Redis hash once a second, off the request path (``BalanceBoard.run``).
"""

import asyncio
import contextlib
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterable

import redis
import redis.asyncio as aioredis

from apps.catalog.models import Strategy
from apps.gateway.caches import DeploymentInfo, ModelInfo
from apps.gateway.metrics import AFFINITY, DEPLOYMENT_IN_FLIGHT, DEPLOYMENT_TTFT_EWMA
from apps.gateway.protocol.session import session_key

log = logging.getLogger(__name__)

WEIGHTED = Strategy.WEIGHTED.value
LEAST_BUSY = Strategy.LEAST_BUSY.value
LATENCY = Strategy.LATENCY.value
AFFINITY_STRATEGY = Strategy.AFFINITY.value

BOARD_KEY = "tollgate:balance"
SHARE_INTERVAL_S = 1.0
# Another process's entries older than this are a process that stopped (crashed or idle):
# ignored; past FORGET_AFTER_MS deleted.
STALE_MS = 3_000
FORGET_AFTER_MS = 60_000
# The board shares only while a strategy uses it (and this long after).
ACTIVE_FOR_S = 10.0
PROBE_AFTER_S = 10.0
# A probe sent: the deployment is not probed again by the next requests meanwhile.
PROBE_PENDING_S = 2.0
EWMA_ALPHA = 0.3

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value of a 64-bit value."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def rendezvous(deployments: Iterable[DeploymentInfo], session_key: int) -> list[DeploymentInfo]:
    """The deployments ranked for ``session_key``: weighted rendezvous hashing, each
    deployment first for a share of the keys proportional to its weight."""
    scored = []
    for deployment in deployments:
        h = _mix(session_key ^ ((deployment.id * _GOLDEN) & _MASK))
        uniform = ((h >> 11) + 0.5) / 9007199254740992.0  # in (0, 1)
        score = -(max(deployment.weight, 0) + 1e-9) / math.log(uniform)
        scored.append((score, deployment.id, deployment))
    scored.sort(reverse=True, key=lambda item: (item[0], item[1]))
    return [item[2] for item in scored]


class BalanceBoard:
    """Requests in flight and time to first token per deployment: this process's, exact
    and at once; the other processes', as they shared them at most a second ago."""

    def __init__(self, redis_client: aioredis.Redis | None, *, process_id: str | None = None):
        self._redis = redis_client
        self.process_id = process_id or uuid.uuid4().hex[:12]
        self._in_flight: dict[int, int] = {}
        self._others_busy: dict[int, int] = {}
        # deployment id → (EWMA ms, wall-clock ms of the last observation)
        self._ttft: dict[int, tuple[float, int]] = {}
        self._others_ttft: dict[int, tuple[float, int]] = {}
        self._probed: dict[int, float] = {}
        self._labels: dict[int, str] = {}
        self._active_until = 0.0

    # -- the request path ------------------------------------------------------------

    def _touch(self, deployments: Iterable[DeploymentInfo]) -> None:
        self._active_until = time.monotonic() + ACTIVE_FOR_S
        labels = self._labels
        for deployment in deployments:
            if deployment.id not in labels:
                labels[deployment.id] = deployment.label

    def busy(self, deployment_id: int) -> int:
        return self._in_flight.get(deployment_id, 0) + self._others_busy.get(deployment_id, 0)

    def least_busy(self, weighted: list[DeploymentInfo]) -> list[DeploymentInfo]:
        """``weighted`` (a weighted random order: the ties' order) by requests in flight."""
        self._touch(weighted)
        return sorted(weighted, key=lambda d: self.busy(d.id))

    def started(self, deployment_id: int) -> None:
        self._in_flight[deployment_id] = self._in_flight.get(deployment_id, 0) + 1

    def finished(self, deployment_id: int) -> None:
        self._in_flight[deployment_id] = max(self._in_flight.get(deployment_id, 0) - 1, 0)

    def ttft_ms(self, deployment_id: int, now_ms: int) -> float | None:
        """The deployment's time to first token as the processes measured it within
        PROBE_AFTER_S (their mean), or None."""
        fresh = self._fresh_ttft(deployment_id, now_ms)
        return sum(fresh) / len(fresh) if fresh else None

    def _fresh_ttft(self, deployment_id: int, now_ms: int) -> list[float]:
        fresh = []
        for entry in (self._ttft.get(deployment_id), self._others_ttft.get(deployment_id)):
            if entry is not None and now_ms - entry[1] < PROBE_AFTER_S * 1000:
                fresh.append(entry[0])
        return fresh

    def fastest(self, weighted: list[DeploymentInfo]) -> list[DeploymentInfo]:
        """``weighted`` by time to first token; an unmeasured deployment first (once per
        PROBE_PENDING_S), one whose probe is under way last."""
        self._touch(weighted)
        now = time.monotonic()
        now_ms = int(time.time() * 1000)
        keyed = []
        probing = False
        for deployment in weighted:
            ttft = self.ttft_ms(deployment.id, now_ms)
            if ttft is None:
                if not probing and now - self._probed.get(deployment.id, -1e9) > PROBE_PENDING_S:
                    self._probed[deployment.id] = now
                    probing = True
                    ttft = -1.0
                else:
                    ttft = math.inf
            keyed.append((ttft, deployment))
        keyed.sort(key=lambda item: item[0])
        return [item[1] for item in keyed]

    def observe_ttft(self, deployment_id: int, ms: float) -> None:
        previous = self._ttft.get(deployment_id)
        ewma = ms if previous is None else previous[0] + EWMA_ALPHA * (ms - previous[0])
        self._ttft[deployment_id] = (ewma, int(time.time() * 1000))
        self._probed.pop(deployment_id, None)

    # -- sharing ---------------------------------------------------------------------

    def _own_fields(self, now_ms: int) -> dict[str, str]:
        me = self.process_id
        fields = {f"b:{d}:{me}": f"{n}:{now_ms}" for d, n in self._in_flight.items()}
        for d, (ewma, at) in self._ttft.items():
            fields[f"l:{d}:{me}"] = f"{ewma:.3f}:{at}:{now_ms}"
        return fields

    def absorb(self, entries: dict, now_ms: int) -> list[str]:
        """Take the other processes' shared entries (the board hash's fields and values);
        the fields to delete (processes long gone)."""
        me = self.process_id
        busy: dict[int, int] = {}
        ttft: dict[int, list[tuple[float, int]]] = {}
        forget = []
        for raw_field, raw_value in entries.items():
            field = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
            value = raw_value.decode() if isinstance(raw_value, bytes) else raw_value
            try:
                kind, deployment, process = field.split(":")
                parts = value.split(":")
                written = int(parts[-1])
                deployment_id = int(deployment)
            except ValueError:
                forget.append(field)
                continue
            if process == me:
                continue
            age = now_ms - written
            if age > FORGET_AFTER_MS:
                forget.append(field)
            if age > STALE_MS:
                continue
            if kind == "b":
                busy[deployment_id] = busy.get(deployment_id, 0) + max(int(parts[0]), 0)
            elif kind == "l" and len(parts) == 3:
                ttft.setdefault(deployment_id, []).append((float(parts[0]), int(parts[1])))
        self._others_busy = busy
        self._others_ttft = {
            d: (sum(e for e, _ in values) / len(values), max(at for _, at in values))
            for d, values in ttft.items()
        }
        return forget

    def _publish_gauges(self, now_ms: int) -> None:
        for deployment_id, label in self._labels.items():
            DEPLOYMENT_IN_FLIGHT.labels(label).set(self.busy(deployment_id))
            ttft = self.ttft_ms(deployment_id, now_ms)
            if ttft is not None:
                DEPLOYMENT_TTFT_EWMA.labels(label).set(ttft / 1000)

    async def share(self) -> None:
        """One exchange with Redis: write this process's entries, read everyone's."""
        now_ms = int(time.time() * 1000)
        pipe = self._redis.pipeline(transaction=False)
        own = self._own_fields(now_ms)
        if own:
            pipe.hset(BOARD_KEY, mapping=own)
        pipe.hgetall(BOARD_KEY)
        results = await pipe.execute()
        forget = self.absorb(results[-1], now_ms)
        if forget:
            await self._redis.hdel(BOARD_KEY, *forget)
        self._publish_gauges(now_ms)

    def active(self) -> bool:
        return time.monotonic() < self._active_until or any(self._in_flight.values())

    async def run(self) -> None:
        """Share every SHARE_INTERVAL_S while a strategy uses the board."""
        while True:
            await asyncio.sleep(SHARE_INTERVAL_S)
            if not self.active():
                continue
            try:
                await self.share()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning("balance board: Redis unavailable (%s); using local counts", exc)


def _everything_available(_deployment_id: int) -> bool:
    return True


def order(
    model: ModelInfo,
    session_key: int | None,
    *,
    available: Callable[[int], bool] | None = None,
    board: BalanceBoard | None = None,
) -> list[DeploymentInfo]:
    """``model``'s deployments in the order this request tries them.

    ``available(deployment_id)`` says whether a deployment may be tried (a health view;
    None: all may). Unavailable ones are left out, unless none is available: then all
    are tried in the strategy's order rather than none. Without a ``board`` least-busy
    and latency fall back to weighted."""
    strategy = model.strategy
    if strategy == WEIGHTED:
        ranked = model.deployment_order()
    elif strategy == AFFINITY_STRATEGY and session_key is not None:
        ranked = rendezvous(model.deployments, session_key)
    elif strategy == LEAST_BUSY and board is not None:
        ranked = board.least_busy(model.deployment_order())
    elif strategy == LATENCY and board is not None:
        ranked = board.fastest(model.deployment_order())
    else:
        ranked = model.deployment_order()
    if available is None or available is _everything_available:
        return ranked
    usable = [d for d in ranked if available(d.id)]
    return usable or ranked


def session_key_of(model: ModelInfo, body: dict, headers: dict[bytes, bytes]) -> int | None:
    """The request's session key when ``model`` is balanced by affinity, else None
    (nothing is read or hashed)."""
    if model.strategy != AFFINITY_STRATEGY or model.affinity is None:
        return None
    return session_key(model.affinity, body, headers)


def affinity_observe(model: ModelInfo, session_key: int, served: DeploymentInfo) -> None:
    """Count an affinity model's answered request: a hit when the deployment its session
    key ranks first served it, a miss when another did (the first was unavailable or
    failed)."""
    preferred = rendezvous(model.deployments, session_key)[0]
    AFFINITY.labels(model.name, "hit" if preferred.id == served.id else "miss").inc()


@contextlib.contextmanager
def in_flight(board: BalanceBoard):
    """A request's slot on the board, moved to each deployment it tries and released
    at the end: ``with in_flight(board) as at: at(deployment)``."""
    current: list[int] = []

    def at(deployment: DeploymentInfo) -> None:
        if current:
            board.finished(current.pop())
        board.started(deployment.id)
        current.append(deployment.id)

    try:
        yield at
    finally:
        if current:
            board.finished(current.pop())
