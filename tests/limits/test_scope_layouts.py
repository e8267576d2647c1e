"""Scopes that set only some limits send only those limits' keys, and admission stays
all or nothing: a key with an rpm only, its project with a budget only, the model with a
tpm only and a tenant with nothing each refuse naming their scope, a refusal reserves
nothing anywhere, settlement leaves no reservation, and a limit that is not set has no
key in Redis. Run through the gateway's own client (hiredis, commands packed once),
redis-py's scripts, and the embedded stand-in (fakeredis)."""

import asyncio
import dataclasses
import itertools
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import pytest
import redis
import redis.asyncio as aioredis
from django.conf import settings

from apps.core.fastredis import FastRedis
from apps.gateway.caches import KeyInfo
from apps.ledger.events import UsageEvent
from apps.limits.limiter import (
    Admission,
    Limiter,
    LimitExceeded,
    LimitSpec,
    base_scopes,
    budget_period_bounds,
    model_scopes,
    scope_keys,
)

MODEL = "m"
STREAM = "tollgate:test:scope-layouts"
# Ids no other test's rows take (they count up from 1), one set per test.
_IDS = itertools.count(700_000_000 + uuid.uuid4().int % 1_000_000 * 100)


@pytest.fixture(params=["fast", "redis-py", "embedded"])
def client(request, redis_url) -> str:
    return request.param


def make_limiter(kind: str) -> tuple[Limiter, Callable[[], Awaitable[None]]]:
    """A limiter over the kind of client the gateway uses (``fast``), redis-py's scripts
    alone, or the embedded stand-in; and how to close it."""
    if kind == "embedded":
        import fakeredis

        fake = fakeredis.FakeAsyncRedis(server=_FAKE_SERVER)
        return Limiter(fake, STREAM), fake.aclose
    client = aioredis.from_url(settings.REDIS_URL)
    if kind == "redis-py":
        return Limiter(client, STREAM), client.aclose
    fast = FastRedis(settings.REDIS_URL)

    async def close() -> None:
        await fast.close()
        await client.aclose()

    return Limiter(client, STREAM, fast), close


def _fake_server():
    import fakeredis

    return fakeredis.FakeServer()


_FAKE_SERVER = _fake_server()


def sync_redis(kind: str):
    if kind == "embedded":
        import fakeredis

        return fakeredis.FakeRedis(server=_FAKE_SERVER)
    return redis.Redis.from_url(settings.REDIS_URL)


def sparse_key(**changes) -> KeyInfo:
    """The key has an rpm only, its project a budget only, the model (in the key) a tpm
    only, the tenant nothing."""
    key_id, project_id, tenant_id = next(_IDS), next(_IDS), next(_IDS)
    fields = dict(
        limits=LimitSpec(rpm=2),
        project_limits=LimitSpec(budget_nanos=1000),
        tenant_limits=LimitSpec(),
        model_limits={MODEL: LimitSpec(tpm=100)},
    )
    fields.update(changes)
    info = KeyInfo(
        id=key_id,
        tenant_id=tenant_id,
        tenant_name="t",
        prefix="tg-test",
        allowed_models=frozenset({MODEL}),
        expires_at=None,
        revoked=False,
        project_id=project_id,
        **fields,
    )
    return dataclasses.replace(info, scopes=base_scopes(info), model_scopes=model_scopes(info))


def run(kind: str, scenario: Callable[[Limiter], Awaitable]):
    async def main():
        limiter, close = make_limiter(kind)
        try:
            return await scenario(limiter)
        finally:
            await close()

    return asyncio.run(main())


async def admit(
    limiter: Limiter, key: KeyInfo, *, tokens: int = 10, cost: int = 100, end_user=None
) -> Admission:
    return await limiter.admit(
        request_id=str(uuid.uuid4()),
        key=key,
        prompt_tokens=tokens,
        max_output_tokens=0,
        worst_price_nanos=cost,
        model=MODEL,
        end_user_hash=end_user,
    )


async def refusal(limiter: Limiter, key: KeyInfo, **request) -> LimitExceeded:
    try:
        await admit(limiter, key, **request)
    except LimitExceeded as exc:
        return exc
    raise AssertionError("admitted")


async def settle(limiter: Limiter, key: KeyInfo, admission: Admission, tokens: int, cost: int):
    event = UsageEvent(admission.request_id, key.tenant_id, key.id, MODEL, "openai", "c", False, 0)
    event.prompt_tokens = tokens
    await limiter.settle(admission, event, cost)


def names(scope: str) -> tuple[str, ...]:
    return scope_keys(scope, budget_period_bounds("monthly", datetime.now(UTC))[0])


def key_rpm(key: KeyInfo) -> str:
    return names(f"k:{key.id}")[0]


def model_tpm_sum(key: KeyInfo) -> str:
    return names(f"km:{key.id}:{MODEL}")[3]


def project_spent(key: KeyInfo) -> str:
    return names(f"p:{key.project_id}")[5]


def project_reserved(key: KeyInfo) -> str:
    return names(f"p:{key.project_id}")[8]


# Each scope refuses naming itself ---------------------------------------------------------


def test_the_keys_rpm_refuses_naming_the_key(client):
    key = sparse_key()

    async def scenario(limiter):
        await admit(limiter, key)
        await admit(limiter, key)
        return await refusal(limiter, key)

    assert run(client, scenario).scope == "key"


def test_the_keys_rpm_refusal_is_for_requests(client):
    key = sparse_key()

    async def scenario(limiter):
        await admit(limiter, key)
        await admit(limiter, key)
        return await refusal(limiter, key)

    assert run(client, scenario).reason == "requests"


def test_the_projects_budget_refuses_naming_the_project(client):
    key = sparse_key()
    assert run(client, lambda limiter: refusal(limiter, key, cost=1001)).scope == "project"


def test_the_projects_budget_refusal_is_for_budget(client):
    key = sparse_key()
    assert run(client, lambda limiter: refusal(limiter, key, cost=1001)).reason == "budget"


def test_the_models_tpm_refuses_naming_the_model(client):
    key = sparse_key()
    assert run(client, lambda limiter: refusal(limiter, key, tokens=101)).scope == "model"


def test_the_models_tpm_refusal_is_for_tokens(client):
    key = sparse_key()
    assert run(client, lambda limiter: refusal(limiter, key, tokens=101)).reason == "tokens"


def test_an_end_user_with_concurrency_only_refuses_naming_the_end_user(client):
    key = sparse_key(end_user_limits=LimitSpec(max_concurrent=1))
    end_user = uuid.uuid4().hex

    async def scenario(limiter):
        await admit(limiter, key, end_user=end_user)
        return await refusal(limiter, key, end_user=end_user)

    assert run(client, scenario).scope == "end_user"


def test_a_tenant_budget_alone_refuses_naming_the_tenant(client):
    key = sparse_key(
        limits=LimitSpec(),
        project_limits=LimitSpec(),
        model_limits={},
        tenant_limits=LimitSpec(budget_nanos=50, budget_period="daily"),
    )
    assert run(client, lambda limiter: refusal(limiter, key, cost=51)).scope == "tenant"


# A refusal reserves nothing anywhere --------------------------------------------------------


def test_a_budget_refusal_leaves_the_keys_minute_alone(client):
    key = sparse_key()

    async def scenario(limiter):
        await refusal(limiter, key, cost=1001)
        return sync_redis(client).zcard(key_rpm(key))

    assert run(client, scenario) == 0


def test_a_budget_refusal_leaves_the_models_tokens_alone(client):
    key = sparse_key()

    async def scenario(limiter):
        await refusal(limiter, key, cost=1001)
        return sync_redis(client).get(model_tpm_sum(key))

    assert run(client, scenario) is None


def test_a_tpm_refusal_reserves_nothing_of_the_projects_budget(client):
    key = sparse_key()

    async def scenario(limiter):
        await refusal(limiter, key, tokens=101)
        return sync_redis(client).get(project_reserved(key))

    assert run(client, scenario) is None


def test_a_refused_request_leaves_room_for_the_next(client):
    """Two refusals by the model's tpm then two requests the key's rpm allows."""
    key = sparse_key()

    async def scenario(limiter):
        await refusal(limiter, key, tokens=101)
        await refusal(limiter, key, tokens=101)
        await admit(limiter, key)
        await admit(limiter, key)
        return True

    assert run(client, scenario)


# Settlement: the real counts replace the reservations, nothing stays held ------------------


def test_settlement_releases_the_projects_reservation(client):
    key = sparse_key()

    async def scenario(limiter):
        await settle(limiter, key, await admit(limiter, key, cost=400), 5, 300)
        return int(sync_redis(client).get(project_reserved(key)))

    assert run(client, scenario) == 0


def test_settlement_adds_the_real_cost_to_the_projects_spend(client):
    key = sparse_key()

    async def scenario(limiter):
        await settle(limiter, key, await admit(limiter, key, cost=400), 5, 300)
        return int(sync_redis(client).get(project_spent(key)))

    assert run(client, scenario) == 300


def test_settlement_puts_the_real_tokens_in_the_models_window(client):
    key = sparse_key()

    async def scenario(limiter):
        await settle(limiter, key, await admit(limiter, key, tokens=60), 7, 0)
        return int(sync_redis(client).get(model_tpm_sum(key)))

    assert run(client, scenario) == 7


def test_settled_budget_money_refuses_what_it_no_longer_covers(client):
    key = sparse_key()

    async def scenario(limiter):
        await settle(limiter, key, await admit(limiter, key, cost=900), 5, 800)
        return await refusal(limiter, key, cost=201)

    assert run(client, scenario).scope == "project"


def test_settlement_frees_an_end_users_concurrency_slot(client):
    key = sparse_key(end_user_limits=LimitSpec(max_concurrent=1))
    end_user = uuid.uuid4().hex

    async def scenario(limiter):
        first = await admit(limiter, key, end_user=end_user)
        await settle(limiter, key, first, 5, 10)
        await admit(limiter, key, end_user=end_user)
        return True

    assert run(client, scenario)


def test_settlement_appends_the_usage_event(client):
    key = sparse_key()

    async def scenario(limiter):
        admission = await admit(limiter, key)
        before = sync_redis(client).xlen(STREAM)
        await settle(limiter, key, admission, 5, 10)
        return sync_redis(client).xlen(STREAM) - before

    assert run(client, scenario) == 1


# Only the set limits' keys ------------------------------------------------------------------


def test_only_the_set_limits_have_keys_in_redis(client):
    key = sparse_key()

    async def scenario(limiter):
        await settle(limiter, key, await admit(limiter, key), 5, 10)
        found = set()
        for scope in (f"k:{key.id}", f"p:{key.project_id}", f"t:{key.tenant_id}"):
            found |= {k.decode() for k in sync_redis(client).scan_iter(f"tg:lim:{scope}:*")}
        found |= {k.decode() for k in sync_redis(client).scan_iter(f"tg:lim:km:{key.id}:{MODEL}:*")}
        return found

    key_names, project_names = names(f"k:{key.id}"), names(f"p:{key.project_id}")
    model_names = names(f"km:{key.id}:{MODEL}")
    # rpm's window; tpm's window, amounts and sum; the budget's spent (its reservation
    # hash and set are empty once settled, so Redis holds no key for them)
    assert run(client, scenario) == {
        key_names[0],
        *model_names[1:4],
        project_names[5],
        project_names[8],
    }


def test_a_layout_is_made_once_per_key_model_and_day(client):
    key = sparse_key()

    async def scenario(limiter):
        await admit(limiter, key)
        first = key.admission_plans[MODEL]
        await admit(limiter, key)
        return key.admission_plans[MODEL] is first

    assert run(client, scenario)


# Standing reads the set limits ----------------------------------------------------------------


def test_standing_reads_a_keys_rpm_alone(client):
    key = sparse_key()

    async def scenario(limiter):
        await admit(limiter, key)
        return (await limiter.standing(key=key))["key"].requests

    assert run(client, scenario) == 1


def test_standing_reads_a_tenants_budget_alone(client):
    key = sparse_key(tenant_limits=LimitSpec(budget_nanos=10_000))

    async def scenario(limiter):
        await admit(limiter, key, cost=700)
        return (await limiter.standing(key=key))["tenant"].reserved_nanos

    assert run(client, scenario) == 700
