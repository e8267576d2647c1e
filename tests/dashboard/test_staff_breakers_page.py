"""The staff backends page shows each deployment's breaker as Redis holds it now (written
by a gateway's breakers, read live), and reloads itself."""

import asyncio

import pytest
import redis
from django.conf import settings
from django.urls import reverse

from apps.catalog.models import Backend, Deployment
from apps.core.redis import async_client
from apps.gateway.caches import _load_catalog
from apps.gateway.upstream.health import DeploymentHealth, breakers_forget


@pytest.fixture
def page(client, team, redis_url):
    def get() -> str:
        client.force_login(team.staff)
        return client.get(reverse("dashboard:staff-backends")).content.decode()

    yield get
    breakers_forget(redis.Redis.from_url(settings.REDIS_URL))


def open_breaker(deployment: Deployment) -> None:
    """Three failures through the gateway's own breakers (as a gateway process records)."""
    (info,) = [d for m in _load_catalog().models for d in m.deployments if d.id == deployment.id]

    async def fail() -> None:
        client = async_client()
        breakers = DeploymentHealth(client)
        for _ in range(info.breaker_failures):
            await breakers.failed(info, "connect")
        await client.aclose()

    asyncio.run(fail())


def badge(deployment: Deployment, state: str) -> str:
    return f'data-breaker="{deployment.id}">{state}<'


def test_a_deployment_without_failures_shows_closed(page, team):
    deployment = Deployment.objects.filter(backend__enabled=True).first()
    assert badge(deployment, "closed") in page()


def test_an_open_breaker_shows_open(page, team):
    deployment = Deployment.objects.filter(backend__enabled=True, model__enabled=True).first()
    open_breaker(deployment)
    assert badge(deployment, "open") in page()


def test_the_page_shows_the_backends_breaker_settings(page, team):
    backend = Backend.objects.first()
    assert f"breaker {backend.breaker_failures} failures" in page()


def test_the_page_reloads_itself(page, team):
    assert 'data-refresh="5"' in page()
