"""Passive health of deployments: a circuit breaker per deployment, shared by every
gateway process through Redis.

Redis holds one small hash per deployment that has a state (``tollgate:breaker{b}:<id>``:
``state`` closed | open | half_open, ``fails`` consecutive failures, ``until`` when an
open breaker may be probed, ``probe`` when a half-open probe's claim lapses, all times
epoch milliseconds), and the set ``tollgate:breakers{b}`` of those deployments. A deployment
without a hash is closed with no failures: the normal case, which costs nothing.

Each process keeps a local view of the hashes, refreshed by a background task every
``REFRESH_S``; the warm path reads only that view (a dict lookup, none at all while
every breaker is closed). Redis is written only when something happens:

- a failure (connect error, timeout, 5xx, a dropped connection; never the client's own
  4xx): one script counts it and opens the breaker at ``breaker_failures`` consecutive
  ones, until now + ``breaker_cooldown_s``; a failure of the half-open probe re-opens it;
- a 429: the deployment rests for its ``retry-after`` (bounded), open without counting;
- the cool-down over: exactly one request across all processes claims the probe (an
  atomic claim in Redis), the others keep skipping the deployment;
- a success when the local view shows failures or a breaker not closed: it closes.

The process whose script made a transition logs it (once across all processes).
"""

import asyncio
import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from apps.gateway.caches import DeploymentInfo
from apps.gateway.metrics import breaker_series

log = logging.getLogger(__name__)

# One hash tag ({b}) for the set and every hash: the scripts touch both, and on a Redis
# Cluster a script's keys must share a slot.
BREAKERS_KEY = "tollgate:breakers{b}"
KEY_PREFIX = "tollgate:breaker{b}:"
REFRESH_S = 0.5
# A hash outlives any cool-down; a forgotten one (a deployment deleted) then goes.
HASH_TTL_MS = 24 * 3600 * 1000
# A 429's rest, bounded; without retry-after: the default.
REST_MIN_S = 1.0
REST_MAX_S = 300.0
REST_DEFAULT_S = 5.0

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATE_VALUES = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
_SEVERITY = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}

# KEYS: hash, set. ARGV: deployment id, now ms, failures to open, cool-down ms, rest ms
# (a 429: open for that long without counting; 0 otherwise), hash TTL ms, its label.
# Returns {transition (0 none, 1 opened, 2 re-opened), fails, until ms, state}.
_FAILURE = """
local now = tonumber(ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
local untl = tonumber(redis.call('HGET', KEYS[1], 'until') or '0')
local rest = tonumber(ARGV[5])
local fails = tonumber(redis.call('HGET', KEYS[1], 'fails') or '0')
local transition = 0
if rest > 0 then
  if state ~= 'open' then transition = 1 end
  if now + rest > untl then untl = now + rest end
  state = 'open'
else
  fails = fails + 1
  if state == 'half_open' then
    transition = 2
    state = 'open'
    untl = now + tonumber(ARGV[4])
  elseif state == 'closed' and fails >= tonumber(ARGV[3]) then
    transition = 1
    state = 'open'
    untl = now + tonumber(ARGV[4])
  end
end
redis.call('HSET', KEYS[1], 'state', state, 'fails', fails, 'until', untl, 'probe', 0,
  'label', ARGV[7])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('SADD', KEYS[2], ARGV[1])
return {transition, fails, tostring(untl), state}
"""

# KEYS: hash. ARGV: now ms, claim lapses after ms. Returns 1 when this caller is the probe.
_CLAIM = """
local now = tonumber(ARGV[1])
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then
  if now < tonumber(redis.call('HGET', KEYS[1], 'until') or '0') then return 0 end
elseif state == 'half_open' then
  if now < tonumber(redis.call('HGET', KEYS[1], 'probe') or '0') then return 0 end
else
  return 0
end
redis.call('HSET', KEYS[1], 'state', 'half_open', 'probe', now + tonumber(ARGV[2]))
return 1
"""

# KEYS: hash, set. ARGV: deployment id. A success: closed, the hash gone. A request that
# started before the breaker opened does not close it; the probe (half-open) does.
# Returns 'open' (left open), 'half_open' (closed from it) or '' (it was closed).
_SUCCESS = """
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'open' then return 'open' end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if state == 'half_open' then return 'half_open' end
return ''
"""


@dataclass(frozen=True, slots=True)
class BreakerView:
    """One deployment's breaker as this process last saw it; times epoch seconds."""

    state: str
    fails: int
    until: float
    probe: float = 0.0
    label: str = ""


def rest_seconds(headers) -> float:
    """How long a 429 rests its deployment: ``retry-after-ms`` or ``retry-after``
    (seconds), bounded to REST_MIN_S..REST_MAX_S; REST_DEFAULT_S without either."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        raw = headers.get(name)
        if raw is None:
            continue
        try:
            value = float(raw) * scale
        except ValueError:
            continue  # an HTTP date: not worth parsing for a bounded rest
        if math.isfinite(value):
            return min(max(value, REST_MIN_S), REST_MAX_S)
    return REST_DEFAULT_S


class DeploymentHealth:
    """The breakers of one process: its local view and the writes of what happened."""

    def __init__(self, client) -> None:
        self._redis = client
        self._view: dict[int, BreakerView] = {}
        self._labels: dict[int, str] = {}
        self._failure = client.register_script(_FAILURE)
        self._claim = client.register_script(_CLAIM)
        self._success = client.register_script(_SUCCESS)

    # -- the hot path --------------------------------------------------------------------

    def skips(self, deployment: DeploymentInfo, now: float) -> bool | None:
        """True: skip it (open, resting or being probed); False: use it; None: its
        cool-down is over, ``claim`` decides."""
        view = self._view.get(deployment.id)
        if view is None or view.state == CLOSED:
            return False
        if view.state == OPEN:
            return None if now >= view.until else True
        return None if now >= view.probe else True

    def quiet(self) -> bool:
        """No breaker has a state: every deployment usable, nothing to check."""
        return not self._view

    def tracks(self, deployment: DeploymentInfo) -> bool:
        """Whether a success of ``deployment`` has something to close or reset."""
        return deployment.id in self._view

    def observe_first_byte(self, deployment: DeploymentInfo, seconds: float) -> None:
        breaker_series(deployment.label).ttft.observe(seconds)

    def reopens_at(self, deployments) -> float | None:
        """The soonest time one of ``deployments`` may be tried again (epoch seconds)."""
        times = [v.until for d in deployments if (v := self._view.get(d.id)) is not None]
        return min(times) if times else None

    async def claim(self, deployment: DeploymentInfo) -> bool:
        """Whether this request is the half-open probe of ``deployment`` (at most one,
        across all processes, until its claim lapses after the deployment's deadline)."""
        now_ms = int(time.time() * 1000)
        lapse_ms = int(max(deployment.timeout_s, 1.0) * 1000)
        try:
            won = await self._claim(keys=[KEY_PREFIX + str(deployment.id)], args=[now_ms, lapse_ms])
        except (redis.RedisError, OSError):
            return False  # Redis away: keep resting it rather than probe from every process
        view = self._view.get(deployment.id)
        if view is not None:
            self._set(
                deployment,
                BreakerView(HALF_OPEN, view.fails, view.until, now_ms / 1000 + lapse_ms / 1000),
            )
        if won:
            log.info("breaker of deployment %s half-open: one probe let through", deployment.label)
        return bool(won)

    async def failed(self, deployment: DeploymentInfo, reason: str, *, rest_s: float = 0.0) -> None:
        """Record a failure of ``deployment`` (``rest_s`` > 0: a 429 resting it that long)."""
        breaker_series(deployment.label).failures.labels(reason).inc()
        now_ms = int(time.time() * 1000)
        try:
            transition, fails, until, state = await self._failure(
                keys=[KEY_PREFIX + str(deployment.id), BREAKERS_KEY],
                args=[
                    deployment.id,
                    now_ms,
                    deployment.breaker_failures,
                    int(deployment.breaker_cooldown_s * 1000),
                    int(rest_s * 1000),
                    HASH_TTL_MS,
                    deployment.label,
                ],
            )
        except (redis.RedisError, OSError) as exc:
            log.warning("breaker of deployment %s not updated: %s", deployment.label, exc)
            return
        state = state.decode() if isinstance(state, bytes) else state
        self._set(deployment, BreakerView(state, int(fails), float(until) / 1000))
        if transition:
            breaker_series(deployment.label).transitions.labels(OPEN).inc()
            if rest_s:
                log.warning(
                    "breaker of deployment %s open: rate limited, resting %.1f s",
                    deployment.label,
                    rest_s,
                )
            elif transition == 2:
                log.warning(
                    "breaker of deployment %s re-opened: the probe failed (%s); cool-down %.1f s",
                    deployment.label,
                    reason,
                    deployment.breaker_cooldown_s,
                )
            else:
                log.warning(
                    "breaker of deployment %s opened after %d consecutive failures (last: %s); "
                    "cool-down %.1f s",
                    deployment.label,
                    int(fails),
                    reason,
                    deployment.breaker_cooldown_s,
                )

    async def succeeded(self, deployment: DeploymentInfo) -> None:
        """Record a success; writes only when the view shows failures or a breaker not
        closed (the warm path skips it: ``quiet``)."""
        try:
            closed_from = await self._success(
                keys=[KEY_PREFIX + str(deployment.id), BREAKERS_KEY], args=[deployment.id]
            )
        except (redis.RedisError, OSError):
            return
        if closed_from in (b"open", "open"):
            return  # a straggler from before the opening: the probe decides
        self._view = {k: v for k, v in self._view.items() if k != deployment.id}
        breaker_series(deployment.label).state.set(STATE_VALUES[CLOSED])
        if closed_from:
            breaker_series(deployment.label).transitions.labels(CLOSED).inc()
            log.warning("breaker of deployment %s closed: the probe succeeded", deployment.label)

    def _set(self, deployment: DeploymentInfo, view: BreakerView) -> None:
        self._labels[deployment.id] = deployment.label
        self._view = {**self._view, deployment.id: view}
        breaker_series(deployment.label).state.set(STATE_VALUES.get(view.state, 0))

    # -- the background refresh ----------------------------------------------------------

    async def refresh(self) -> dict[int, BreakerView]:
        """Read every breaker's hash into the local view (its copy replaced at once)."""
        members = await self._redis.smembers(BREAKERS_KEY)
        ids = sorted(int(m) for m in members)
        view: dict[int, BreakerView] = {}
        if ids:
            async with self._redis.pipeline(transaction=False) as pipe:
                for deployment_id in ids:
                    pipe.hgetall(KEY_PREFIX + str(deployment_id))
                rows = await pipe.execute()
            stale = []
            for deployment_id, row in zip(ids, rows, strict=True):
                if not row:
                    stale.append(deployment_id)  # expired: no longer a breaker with state
                    continue
                view[deployment_id] = _breaker_view(row)
                if b"label" in row:
                    self._labels[deployment_id] = row[b"label"].decode()
            if stale:
                await self._redis.srem(BREAKERS_KEY, *stale)
        # A label (backend/upstream model) may name several deployments (models sharing
        # one upstream model): its gauge shows the worst of their states.
        states: dict[str, str] = {}
        for deployment_id in self._view.keys() - view.keys():
            if (label := self._labels.get(deployment_id)) is not None:
                states.setdefault(label, CLOSED)
        for deployment_id, breaker in view.items():
            label = self._labels.get(deployment_id)
            if label is not None and _SEVERITY.get(breaker.state, 0) >= _SEVERITY.get(
                states.get(label, ""), -1
            ):
                states[label] = breaker.state
        for label, state in states.items():
            breaker_series(label).state.set(STATE_VALUES.get(state, 0))
        self._view = view
        return view

    async def refresh_forever(self, interval_s: float = REFRESH_S) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except (redis.RedisError, OSError) as exc:
                log.warning("breaker view not refreshed (%s); retrying", exc)
            await asyncio.sleep(interval_s)


def breakers_forget(client: redis.Redis, deployment_ids: Iterable[int] | None = None) -> None:
    """Drop the breakers of ``deployment_ids`` (every breaker: None): deployments that
    are gone. Their hashes would otherwise stay for a day under a label (backend/upstream
    model) that a deployment made again later shares."""
    if deployment_ids is None:
        deployment_ids = [int(m) for m in client.smembers(BREAKERS_KEY)]
    ids = list(deployment_ids)
    if not ids:
        return
    client.delete(*(KEY_PREFIX + str(i) for i in ids))
    client.srem(BREAKERS_KEY, *ids)


def breakers_read(client: redis.Redis) -> dict[int, BreakerView]:
    """Every deployment's breaker with a state, read now (the staff pages)."""
    ids = sorted(int(m) for m in client.smembers(BREAKERS_KEY))
    if not ids:
        return {}
    pipe = client.pipeline(transaction=False)
    for deployment_id in ids:
        pipe.hgetall(KEY_PREFIX + str(deployment_id))
    found = {}
    for deployment_id, row in zip(ids, pipe.execute(), strict=True):
        if row:
            found[deployment_id] = _breaker_view(row)
    return found


def _breaker_view(row: dict[bytes, bytes]) -> BreakerView:
    return BreakerView(
        state=row.get(b"state", b"closed").decode(),
        fails=int(row.get(b"fails", 0)),
        until=float(row.get(b"until", 0)) / 1000,
        probe=float(row.get(b"probe", 0)) / 1000,
        label=row.get(b"label", b"").decode(),
    )
