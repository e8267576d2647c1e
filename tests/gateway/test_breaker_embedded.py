"""The breakers on the embedded default's in-process Redis stand-in (fakeredis, with its
Lua): the same scripts open, share, probe and close them as on Redis."""

import asyncio
import dataclasses
import time

import fakeredis
import pytest
from prometheus_client import REGISTRY

from apps.gateway.backends import adapter_for
from apps.gateway.caches import DeploymentInfo
from apps.gateway.upstream.health import DeploymentHealth, breakers_forget
from tests.conftest import wait_until

COOLDOWN_S = 0.2


def deployment(deployment_id: int = 7) -> DeploymentInfo:
    adapter = adapter_for("openai")
    return DeploymentInfo(
        id=deployment_id,
        backend="local",
        adapter=adapter,
        speaks=adapter.speaks,
        base_url="http://127.0.0.1:9/v1",
        headers={},
        upstream_model="u",
        weight=1,
        timeout_s=5.0,
        connect_timeout_s=1.0,
        breaker_failures=3,
        breaker_cooldown_s=COOLDOWN_S,
    )


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


@pytest.fixture
def server():
    return fakeredis.FakeServer()


def health(server) -> DeploymentHealth:
    """One process's breakers, over the shared stand-in."""
    return DeploymentHealth(fakeredis.FakeAsyncRedis(server=server))


def fail(loop, breakers: DeploymentHealth, times: int = 3) -> None:
    for _ in range(times):
        loop.run_until_complete(breakers.failed(deployment(), "connect"))


def test_two_failures_leave_the_breaker_closed(loop, server):
    breakers = health(server)
    fail(loop, breakers, 2)
    assert breakers.skips(deployment(), time.time()) is False


def test_the_third_failure_opens_it(loop, server):
    breakers = health(server)
    fail(loop, breakers)
    assert breakers.skips(deployment(), time.time()) is True


def test_another_process_sees_it_open_once_refreshed(loop, server):
    fail(loop, health(server))
    other = health(server)
    loop.run_until_complete(other.refresh())
    assert other.skips(deployment(), time.time()) is True


def test_after_the_cooldown_one_process_wins_the_probe(loop, server):
    first, second = health(server), health(server)
    fail(loop, first)
    wait_until(lambda: first.skips(deployment(), time.time()) is None, timeout=2)
    claims = [loop.run_until_complete(b.claim(deployment())) for b in (first, second, first)]
    assert claims == [True, False, False]


def test_a_successful_probe_closes_it_for_every_process(loop, server):
    first, second = health(server), health(server)
    fail(loop, first)
    wait_until(lambda: first.skips(deployment(), time.time()) is None, timeout=2)
    loop.run_until_complete(first.claim(deployment()))
    loop.run_until_complete(first.succeeded(deployment()))
    loop.run_until_complete(second.refresh())
    assert second.quiet()


def shared(deployment_id: int) -> DeploymentInfo:
    """Deployments of different models on one backend and upstream model: one label."""
    return dataclasses.replace(deployment(deployment_id), backend="shared", upstream_model="m")


def gauge(label: str) -> float | None:
    return REGISTRY.get_sample_value("tollgate_deployment_breaker_state", {"deployment": label})


def test_a_label_of_several_deployments_shows_the_worst_breaker(loop, server):
    writer = health(server)
    for _ in range(3):
        loop.run_until_complete(writer.failed(shared(8), "connect"))
    loop.run_until_complete(writer.failed(shared(9), "connect"))  # closed, one failure
    reader = health(server)
    loop.run_until_complete(reader.refresh())
    assert gauge("shared/m") == 1.0  # open, whichever deployment was read last


def test_a_forgotten_deployment_leaves_every_view(loop, server):
    fail(loop, health(server))
    breakers_forget(fakeredis.FakeRedis(server=server), [deployment().id])
    other = health(server)
    loop.run_until_complete(other.refresh())
    assert other.quiet()
