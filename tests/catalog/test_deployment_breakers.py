"""A deployment that is deleted takes its circuit breaker out of Redis: a breaker left
behind would show under the label (backend/upstream model) of a deployment made again
later, and be counted among the breakers every gateway process reads."""

import asyncio

import pytest

from apps.catalog.models import Deployment
from apps.core.redis import async_client, sync_client
from apps.gateway.caches import _load_catalog
from apps.gateway.upstream.health import BREAKERS_KEY, KEY_PREFIX, DeploymentHealth
from apps.provisioning.services import config_apply
from tests.conftest import seed_document


def open_breaker(deployment_id: int) -> None:
    (info,) = [d for m in _load_catalog().models for d in m.deployments if d.id == deployment_id]

    async def fail() -> None:
        client = async_client()
        for _ in range(info.breaker_failures):
            await DeploymentHealth(client).failed(info, "connect")
        await client.aclose()

    asyncio.run(fail())


@pytest.fixture
def removed(db, redis_url, django_capture_on_commit_callbacks) -> int:
    """The id of a deployment with an open breaker, removed by a config apply."""
    document = seed_document("http://127.0.0.1:9/v1")
    config_apply(document=document)
    (model,) = [m for m in document["models"] if m["name"] == "failover-model"]
    deployment = Deployment.objects.get(
        model__name=model["name"], upstream_model=model["deployments"][-1]["upstream_model"]
    )
    open_breaker(deployment.id)
    model["deployments"] = model["deployments"][:-1]
    with django_capture_on_commit_callbacks(execute=True):
        config_apply(document=document)
    return deployment.id


def test_a_removed_deployment_has_no_breaker_left(removed):
    assert sync_client().exists(f"{KEY_PREFIX}{removed}") == 0


def test_a_removed_deployment_is_not_among_the_breakers_read(removed):
    assert not sync_client().sismember(BREAKERS_KEY, removed)
