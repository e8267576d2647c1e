"""Admission and settlement against Redis: one round trip each, atomic across every
gateway process and host (see apps/limits/lua.py for the data layout)."""

import calendar
import functools
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import redis.asyncio as aioredis
from django.conf import settings

from apps.core.fastredis import FastRedis, Packed, pack
from apps.core.shards import shard_tag, sharded
from apps.ledger.events import UsageEvent
from apps.limits.blocks import budget_of
from apps.limits.lua import ADMIT, LOAD, SETTLE, STANDING

# Budget money in Redis is integer nano-USD (each request's exact cost rounded up, see
# apps.billing.pricing), with 9 million USD of headroom in a 64-bit counter.
NANOS_PER_USD = Decimal(10**9)
# TPM reservations assume this many output tokens when the client set no max_tokens; the
# real count replaces the reservation at settlement. (Budgets reserve the model's own
# maximum output instead: see Limiter.admit.)
DEFAULT_MAX_OUTPUT_TOKENS = 4096
# How long a slot or reservation outlives a process that died holding it.
LEASE_MS = 15 * 60 * 1000
MAX_RESERVATION = 2**50
# A scope's flags: which limits it sets, so which of its keys the scripts are sent.
RPM, TPM, CONCURRENCY, BUDGET = 1, 2, 4, 8
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class LimitSpec:
    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    budget_nanos: int | None = None
    budget_period: str = "monthly"

    @property
    def active(self) -> bool:
        return any(
            v is not None for v in (self.rpm, self.tpm, self.max_concurrent, self.budget_nanos)
        )

    @classmethod
    def from_block(cls, block: dict) -> "LimitSpec":
        """A stored limit block (apps/limits/blocks.py)."""
        amount, period = budget_of(block)
        return cls(
            rpm=block.get("rpm"),
            tpm=block.get("tpm"),
            max_concurrent=block.get("max_concurrent"),
            budget_nanos=int(amount * NANOS_PER_USD) if amount is not None else None,
            budget_period=period,
        )

    @classmethod
    def from_fields(cls, obj) -> "LimitSpec":
        budget = obj.budget_amount
        return cls(
            rpm=obj.rpm,
            tpm=obj.tpm,
            max_concurrent=obj.max_concurrent,
            budget_nanos=int(budget * NANOS_PER_USD) if budget is not None else None,
            budget_period=obj.budget_period,
        )


@functools.lru_cache(maxsize=64)
def _period_bounds(period: str, year: int, month: int, day: int) -> tuple[str, int]:
    if period == "daily":
        start = datetime(year, month, day, tzinfo=UTC)
        end = start + timedelta(days=1)
        return f"d{year}{month:02d}{day:02d}", int(end.timestamp() * 1000)
    if period == "monthly":
        end = datetime(year, month, 1, tzinfo=UTC) + timedelta(
            days=calendar.monthrange(year, month)[1]
        )
        return f"m{year}{month:02d}", int(end.timestamp() * 1000)
    return "life", -1


def budget_period_bounds(period: str, now: datetime) -> tuple[str, int]:
    """(period id, end of the period in epoch ms, -1 for never) in UTC."""
    return _period_bounds(period, now.year, now.month, now.day)


@functools.lru_cache(maxsize=4096)
def scope_keys(scope: str, period_id: str, tag: str = "") -> tuple[str, ...]:
    """The nine counters of a scope; ``tag`` is its tenant's shard tag
    (apps/core/shards.py), so that every key of one script shares a cluster slot."""
    base = f"tg:lim:{tag}:{scope}" if tag else f"tg:lim:{scope}"
    return (
        f"{base}:rpm",
        f"{base}:tpm",
        f"{base}:tpmh",
        f"{base}:tpms",
        f"{base}:conc",
        f"{base}:spent:{period_id}",
        f"{base}:res",
        f"{base}:resh",
        f"{base}:ress",
    )


def balance_keys(tenant_id: int) -> tuple[str, ...]:
    """A prepaid tenant's balance (no period: it lasts) and the reservations against it."""
    return _balance_keys(tenant_id, shard_tag(tenant_id))


@functools.lru_cache(maxsize=4096)
def _balance_keys(tenant_id: int, tag: str) -> tuple[str, ...]:
    base = f"tg:bal:{tag}:t:{tenant_id}" if tag else f"tg:bal:t:{tenant_id}"
    return (base, f"{base}:res", f"{base}:resh", f"{base}:ress")


@dataclass(slots=True)
class RateState:
    """What the response headers report: the most specific scope with that limit."""

    rpm: int | None = None
    rpm_remaining: int = 0
    rpm_reset_ms: int = 0
    tpm: int | None = None
    tpm_remaining: int = 0
    tpm_reset_ms: int = 0


@dataclass(slots=True)
class Admission:
    request_id: str
    # The scopes admitted, as settlement sends them (the layouts admission sent).
    layouts: tuple["Layout", ...] = ()
    rate: RateState | None = None
    # A prepaid tenant's: its balance keys (the reservation is settled against them).
    balance_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ScopeUse:
    """What one scope (a key or a tenant) has used now: requests and tokens in the
    sliding minute, concurrency slots held, and money (nano-USD) settled in the current
    budget period and reserved by requests still running."""

    requests: int
    tokens: int
    concurrent: int
    spent_nanos: int
    reserved_nanos: int


@dataclass(frozen=True, slots=True)
class BalanceUse:
    """A prepaid tenant's balance (nano-USD, None while it is not loaded into Redis) and
    what running requests hold of it."""

    balance_nanos: int | None
    reserved_nanos: int


class LimitExceeded(Exception):
    def __init__(
        self,
        reason: str,
        scope: str,
        retry_after_ms: int,
        rate: RateState | None,
        description: str = "",
    ):
        super().__init__(reason)
        # requests | tokens | concurrency | budget | balance | nobalance (not loaded yet)
        self.reason = reason
        self.scope = scope  # key | project | tenant | model | end_user
        self.retry_after_ms = retry_after_ms  # -1: not before a manual change
        self.rate = rate
        # Which one, as a refusal says it ("model gemma on this API key").
        self.description = description or scope


@dataclass(frozen=True, slots=True)
class Scope:
    """One set of counters admission checks: ``name`` places them in Redis, ``label`` is
    what a refusal names (``x-tollgate-limit-scope``)."""

    label: str
    name: str
    spec: LimitSpec
    description: str


BALANCE_SCOPE = Scope("tenant", "", LimitSpec(), "organization (tenant)")


def base_scopes(key) -> tuple[Scope, ...]:
    """The key's, its project's and its tenant's scopes that have a limit (nothing is
    counted for the rest), in the order they are checked; made once per key load."""
    scopes = (
        Scope("key", f"k:{key.id}", key.limits, "API key"),
        Scope("project", f"p:{key.project_id}", key.project_limits, "project"),
        Scope("tenant", f"t:{key.tenant_id}", key.tenant_limits, "organization (tenant)"),
    )
    return tuple(s for s in scopes if s.spec is not None and s.spec.active)


def model_scopes(key) -> dict[str, tuple[Scope, ...]]:
    """Per model name, the scopes of its limits in the key, then in the project; made
    once per key load."""
    scopes: dict[str, list[Scope]] = {}
    for model, spec in key.model_limits.items():
        scope = Scope("model", f"km:{key.id}:{model}", spec, f"model {model} on this API key")
        scopes.setdefault(model, []).append(scope)
    for model, spec in key.project_model_limits.items():
        scope = Scope(
            "model", f"pm:{key.project_id}:{model}", spec, f"model {model} in this project"
        )
        scopes.setdefault(model, []).append(scope)
    return {model: tuple(found) for model, found in scopes.items()}


def admission_scopes(key, model: str = "", end_user_hash: str | None = None) -> list[Scope]:
    """The scopes a request of ``key`` for ``model`` by an end user (the hash of the
    tenant id and the id: never the id itself, never across tenants) counts against, in
    the order they are checked: ``key.scopes`` (``base_scopes``), the model's limits in
    the key and in the project (``key.model_scopes``), then the end user."""
    scopes = list(key.scopes)
    if key.model_scopes and (found := key.model_scopes.get(model)):
        scopes.extend(found)
    if end_user_hash is not None and key.end_user_limits is not None:
        scopes.append(Scope("end_user", f"u:{end_user_hash}", key.end_user_limits, "end user"))
    return scopes


@dataclass(frozen=True, slots=True)
class Layout:
    """What some scopes, in order, send the scripts (apps/limits/lua.py) on one UTC day:
    the keys and arguments of the limits they set only, as lists and packed. Budget
    periods are days or months, so a scope's keys and arguments hold for a whole day:
    made once per scope and day (``scope_layout``), or per key, model and day
    (``Limiter.admit``), never per request."""

    scopes: tuple[Scope, ...]
    day: int  # days since the epoch, UTC
    flags: tuple[int, ...]  # per scope
    admit_keys: tuple[str, ...]
    admit_args: tuple[int, ...]
    settle_keys: tuple[str, ...]
    settle_args: tuple[int, ...]
    packed_admit_keys: Packed
    packed_admit_args: Packed
    packed_settle_keys: Packed
    packed_settle_args: Packed
    # The first scope's rpm and tpm limit among them (what the headers report): None if none.
    rpm: int | None
    tpm: int | None


def layout_join(layouts: Iterable[Layout], day: int) -> Layout:
    """One layout of ``layouts``' scopes, in order."""
    parts = list(layouts)

    def joined(name: str) -> tuple:
        return tuple(item for layout in parts for item in getattr(layout, name))

    def packed(name: str) -> Packed:
        found = [getattr(layout, name) for layout in parts]
        return Packed(sum(p.count for p in found), b"".join(p.data for p in found))

    rpms = [layout.rpm for layout in parts if layout.rpm is not None]
    tpms = [layout.tpm for layout in parts if layout.tpm is not None]
    return Layout(
        scopes=joined("scopes"),
        day=day,
        flags=joined("flags"),
        admit_keys=joined("admit_keys"),
        admit_args=joined("admit_args"),
        settle_keys=joined("settle_keys"),
        settle_args=joined("settle_args"),
        packed_admit_keys=packed("packed_admit_keys"),
        packed_admit_args=packed("packed_admit_args"),
        packed_settle_keys=packed("packed_settle_keys"),
        packed_settle_args=packed("packed_settle_args"),
        rpm=rpms[0] if rpms else None,
        tpm=tpms[0] if tpms else None,
    )


@functools.lru_cache(maxsize=4096)
def scope_layout(scope: Scope, day: int, tag: str = "") -> Layout:
    """``scope``'s keys and arguments on ``day``: its flags, then only the keys of the
    limits it sets (``scope_keys`` names all nine)."""
    spec = scope.spec
    period_id, reset_ms = "", -1
    if spec.budget_nanos is not None:
        period_id, reset_ms = budget_period_bounds(
            spec.budget_period, datetime.fromtimestamp(day * DAY_MS / 1000, UTC)
        )
    names = scope_keys(scope.name, period_id, tag)
    flags = 0
    admit_keys: list[str] = []
    admit_args: list[int] = []
    settle_keys: list[str] = []
    settle_args: list[int] = []
    if spec.rpm is not None:
        flags |= RPM
        admit_keys += names[0:1]
        admit_args.append(spec.rpm)
    if spec.tpm is not None:
        flags |= TPM
        admit_keys += names[1:4]
        admit_args.append(spec.tpm)
        settle_keys += names[2:4]  # settlement moves the tokens, not the window
    if spec.max_concurrent is not None:
        flags |= CONCURRENCY
        admit_keys += names[4:5]
        admit_args.append(spec.max_concurrent)
        settle_keys += names[4:5]
    if spec.budget_nanos is not None:
        flags |= BUDGET
        admit_keys += names[5:9]
        admit_args += [spec.budget_nanos, reset_ms]
        settle_keys += names[5:9]
        # The period's money outlives it by a day (budget reconciliation reads it).
        settle_args.append(reset_ms + DAY_MS if reset_ms >= 0 else -1)
    admit_args.insert(0, flags)
    settle_args.insert(0, flags)
    return Layout(
        scopes=(scope,),
        day=day,
        flags=(flags,),
        admit_keys=tuple(admit_keys),
        admit_args=tuple(admit_args),
        settle_keys=tuple(settle_keys),
        settle_args=tuple(settle_args),
        packed_admit_keys=pack(admit_keys),
        packed_admit_args=pack(admit_args),
        packed_settle_keys=pack(settle_keys),
        packed_settle_args=pack(settle_args),
        rpm=spec.rpm,
        tpm=spec.tpm,
    )


@functools.lru_cache(maxsize=4096)
def end_user_layout(end_user_hash: str, spec: LimitSpec, day: int, tag: str = "") -> Layout:
    """An end user's scope (``admission_scopes``' last) on ``day``."""
    return scope_layout(Scope("end_user", f"u:{end_user_hash}", spec, "end user"), day, tag)


@functools.lru_cache(maxsize=4096)
def _packed_keys(keys: tuple[str, ...]) -> Packed:
    return pack(keys)


class Limiter:
    def __init__(self, redis: aioredis.Redis, stream: str, fast: FastRedis | None = None) -> None:
        self._redis = redis
        self._stream = stream
        # 0: names untagged, one stream (apps/core/shards.py); else the number of shards.
        self._shards = settings.LEDGER_SHARDS if sharded() else 0
        self._fast = fast
        # The single-server client takes pre-packed parts; the cluster and Sentinel clients
        # route or re-resolve by the keys, so they are sent the lists.
        self._packs = type(fast) is FastRedis
        self._scripts = {
            "admit": redis.register_script(ADMIT),
            "settle": redis.register_script(SETTLE),
            "standing": redis.register_script(STANDING),
            "load": redis.register_script(LOAD),
        }
        self._shas = (
            {
                "admit": fast.register(ADMIT),
                "settle": fast.register(SETTLE),
                "standing": fast.register(STANDING),
                "load": fast.register(LOAD),
            }
            if fast
            else {}
        )

    async def _run(self, script: str, keys: list, args: list):
        if self._fast is not None:
            return await self._fast.evalsha(self._shas[script], keys, args)
        return await self._scripts[script](keys=keys, args=args)

    async def _run_layouts(
        self,
        script: str,
        layouts: tuple[Layout, ...],
        settle: bool,
        head: list,
        balance: tuple[str, ...],
        stream: str | None = None,
    ):
        """``script`` with ``head``, the number of scopes and the layouts' arguments; the
        layouts' keys, then ``balance`` (a prepaid tenant's balance keys) and ``stream``
        (the tenant's usage stream) if given. Only ``head`` is packed per call: the rest
        was, once."""
        head = [*head, sum(len(layout.scopes) for layout in layouts)]
        if not self._packs:
            keys = [k for x in layouts for k in (x.settle_keys if settle else x.admit_keys)]
            args = head + [a for x in layouts for a in (x.settle_args if settle else x.admit_args)]
            keys.extend(balance)
            if stream is not None:
                keys.append(stream)
            return await self._run(script, keys, args)
        if settle:
            keys = [layout.packed_settle_keys for layout in layouts]
            args = [layout.packed_settle_args for layout in layouts]
        else:
            keys = [layout.packed_admit_keys for layout in layouts]
            args = [layout.packed_admit_args for layout in layouts]
        if balance:
            keys.append(_packed_keys(balance))
        if stream is not None:
            keys.append(_packed_keys((stream,)))
        return await self._fast.evalsha_packed(self._shas[script], keys, tuple(head), args)

    def _plan(self, key, model: str, day: int) -> Layout:
        """The key's, its project's, its tenant's and the model's scopes (all but the end
        user) as admission sends them today: made once per key load, model and day."""
        plans = key.admission_plans
        plan = plans.get(model)
        if plan is None or plan.day != day:
            tag = self._tag(key.tenant_id)
            layouts = [scope_layout(scope, day, tag) for scope in admission_scopes(key, model)]
            plan = plans[model] = layout_join(layouts, day)
        return plan

    async def admit(
        self,
        *,
        request_id: str,
        key,
        prompt_tokens: int,
        max_output_tokens: int | None,
        worst_price_nanos: int,
        model: str = "",
        end_user_hash: str | None = None,
    ) -> Admission:
        """Rate limits (TPM) reserve the cheap estimate, ``prompt_tokens`` +
        ``max_output_tokens``; budgets reserve ``worst_price_nanos``, the most the request
        can be priced (``pricing.Tariff.worst_nanos`` of its token bounds), which
        settlement never exceeds. Every scope (``admission_scopes``: key, project, tenant,
        the model's limits in the key and the project, the end user) is checked and
        reserved in the same round trip, all or none. A prepaid tenant's balance reserves
        it too; ``LimitExceeded("nobalance")`` asks the caller to ``balance_load``."""
        day = int(time.time() * 1000) // DAY_MS
        plan = self._plan(key, model, day)
        layouts: tuple[Layout, ...] = (plan,) if plan.scopes else ()
        if end_user_hash is not None and key.end_user_limits is not None:
            tag = self._tag(key.tenant_id)
            layouts = (*layouts, end_user_layout(end_user_hash, key.end_user_limits, day, tag))
        admission = Admission(request_id=request_id)
        prepaid = key.prepaid
        if not layouts and not prepaid:
            return admission  # nothing to enforce: no round trip
        output = max_output_tokens if max_output_tokens is not None else DEFAULT_MAX_OUTPUT_TOKENS
        # Lua numbers are doubles: keep absurd client values (max_tokens=1e18) exact
        # integers so they are refused by the limits rather than break the script.
        tokens = min(prompt_tokens + output, MAX_RESERVATION)
        worst_cost = min(worst_price_nanos, MAX_RESERVATION)
        admission.layouts = layouts
        if prepaid:
            admission.balance_keys = _balance_keys(key.tenant_id, self._tag(key.tenant_id))
        result = await self._run_layouts(
            "admit",
            layouts,
            False,
            [request_id, tokens, worst_cost, LEASE_MS, 1 if prepaid else 0],
            admission.balance_keys,
        )
        rpms = [layout.rpm for layout in layouts if layout.rpm is not None]
        tpms = [layout.tpm for layout in layouts if layout.tpm is not None]
        rate = RateState(rpm=rpms[0] if rpms else None, tpm=tpms[0] if tpms else None)
        if result[0] == 0:
            reason = result[1].decode() if isinstance(result[1], bytes) else result[1]
            at = int(result[2])  # 0: the tenant's balance
            scopes = [scope for layout in layouts for scope in layout.scopes]
            scope = scopes[at - 1] if at else BALANCE_SCOPE
            raise LimitExceeded(reason, scope.label, int(result[3]), rate, scope.description)
        if rate.rpm is not None:
            rate.rpm_remaining = max(int(result[1]), 0)
            rate.rpm_reset_ms = int(result[2])
        if rate.tpm is not None:
            rate.tpm_remaining = max(int(result[3]), 0)
            rate.tpm_reset_ms = int(result[4])
        if rate.rpm is not None or rate.tpm is not None:
            admission.rate = rate
        return admission

    async def standing(self, *, key) -> dict[str, ScopeUse | BalanceUse | None]:
        """``{"key": …, "tenant": …, "balance": …}``: each scope's use now and a prepaid
        tenant's balance, read in one round trip without changing anything; None for a
        scope without limits (nothing is counted for it) and for a postpaid tenant's
        balance; 0 for a limit a scope does not set. Raises Redis' errors."""
        scopes = [
            Scope("key", f"k:{key.id}", key.limits, "API key"),
            Scope("tenant", f"t:{key.tenant_id}", key.tenant_limits, "organization (tenant)"),
        ]
        counted = [scope for scope in scopes if scope.spec is not None and scope.spec.active]
        standing: dict[str, ScopeUse | BalanceUse | None] = {
            "key": None,
            "tenant": None,
            "balance": None,
        }
        prepaid = key.prepaid
        if not counted and not prepaid:
            return standing
        day = int(time.time() * 1000) // DAY_MS
        tag = self._tag(key.tenant_id)
        layout = layout_join((scope_layout(scope, day, tag) for scope in counted), day)
        keys = list(layout.admit_keys)
        if prepaid:
            keys.extend(_balance_keys(key.tenant_id, tag))
        result = await self._run("standing", keys, [1 if prepaid else 0, *layout.flags])
        for index, scope in enumerate(counted):
            values = [int(v) for v in result[5 * index : 5 * index + 5]]
            standing[scope.label] = ScopeUse(*values)
        if prepaid:
            balance, reserved = result[5 * len(counted) :]
            standing["balance"] = BalanceUse(int(balance) if balance else None, int(reserved))
        return standing

    async def balance_load(self, *, tenant_id: int, nanos: int) -> int:
        """Set a prepaid tenant's balance from the journal unless Redis has one (a credit
        or debit since then is in Redis already); the balance Redis holds now."""
        return int(
            await self._run("load", [_balance_keys(tenant_id, self._tag(tenant_id))[0]], [nanos])
        )

    async def settle(self, admission: Admission | None, event: UsageEvent, cost: int = 0) -> None:
        """Replace reservations with the real counts and ``cost`` (the request's price in
        nanos), release the slot and append the usage event to the durable stream, in one
        round trip. The stream is the tenant's shard's: the same hash slot as its
        counters, so the settlement and the append stay one atomic script."""
        stream = self._stream + self._tag(event.tenant_id)
        if admission is None or not (admission.layouts or admission.balance_keys):
            if self._fast is not None:
                await self._fast.execute("XADD", stream, "*", "e", event.to_bytes())
            else:
                await self._redis.xadd(stream, {"e": event.to_bytes()})
            return
        await self._run_layouts(
            "settle",
            admission.layouts,
            True,
            [
                admission.request_id,
                event.prompt_tokens + event.completion_tokens,
                cost,
                event.to_bytes(),
                1 if admission.balance_keys else 0,
            ],
            admission.balance_keys,
            stream=stream,
        )

    def _tag(self, tenant_id: int) -> str:
        shards = self._shards
        return f"{{s{tenant_id % shards}}}" if shards else ""


def reset_duration(ms: int) -> str:
    """OpenAI's reset format: 1s, 6m0s, 12ms."""
    if ms < 1000:
        return f"{ms}ms"
    seconds = math.ceil(ms / 1000)
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds}s" if minutes else f"{seconds}s"
