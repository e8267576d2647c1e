from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from apps.tenants.models import Tenant
from tests.conftest import Seed, seed_document
from tests.gateway.inprocess import Handler, InProcessGateway, ScriptedUpstream

# Where the seeded backends point when the upstream is scripted: nothing listens there,
# and nothing is sent there (the scripted upstream answers in its place).
SCRIPTED_UPSTREAM_URL = "http://scripted-upstream.invalid/v1"
# The scripted gateways' usage events go to a stream no Celery worker drains.
USAGE_STREAM = "tollgate:usage:inprocess-tests"


@pytest.fixture
def acme(seed) -> Tenant:
    """The seeded tenant."""
    return Tenant.objects.get(name=seed.tenant_name)


@pytest.fixture
def gw(inprocess_gateway) -> InProcessGateway:
    """The in-process gateway, by its short name."""
    return inprocess_gateway


@pytest.fixture
def inprocess_gateway(seed, settings) -> Iterator[InProcessGateway]:
    """The gateway app in this process, over the seeded keys, models and fake upstream
    (see tests/gateway/inprocess.py). Its usage events go to a stream of their own: a
    Celery worker left running by an earlier test must not take them from ``ingest_usage``
    while the test waits for them."""
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:inprocess"
    gateway = InProcessGateway()
    yield gateway
    gateway.close()


def forget_breakers() -> None:
    """Close every deployment's breaker (apps/gateway/upstream/health.py): the failures an
    earlier test made a deployment of the shared seed fail are not this test's."""
    import redis
    from django.conf import settings

    from apps.gateway.upstream.health import breakers_forget

    breakers_forget(redis.Redis.from_url(settings.REDIS_URL))


@pytest.fixture
def fresh_breakers(redis_url) -> None:
    """No breaker of an earlier test: a flush between tests deletes deployments without
    their breakers, which would show under the same labels as this test's."""
    forget_breakers()


@pytest.fixture(scope="module")
def scripted_seed(django_db_setup, django_db_blocker, redis_url) -> Iterator[Seed]:
    """The usual seed (tests/conftest.py) and a claude-failover model, its backends
    answered by a scripted upstream.

    Seeded once per module and committed (the gateway reads it from its own thread),
    then flushed at the module's end: a flush per test would cost more than the tests.
    Only tests that leave the catalog and keys as they found them may share it."""
    from django.core.management import call_command

    from apps.provisioning.services import config_apply

    document = seed_document(SCRIPTED_UPSTREAM_URL)
    # Failover onto an Anthropic-native deployment, which the usual seed has no model for.
    document["models"].append(
        {
            "name": "claude-failover",
            "prices": document["models"][0]["prices"],
            "deployments": [
                {"backend": "dead", "upstream_model": "x", "weight": 1000000},
                {"backend": "fake-anthropic", "upstream_model": "claude-failover", "weight": 1},
            ],
        }
    )
    document["tenants"][0]["keys"][0]["models"].append("claude-failover")
    with django_db_blocker.unblock():
        result = config_apply(document=document)
    secrets = {k["name"]: k["secret"] for k in result.keys_created}
    yield Seed(tenant_name="acme", secret=secrets["main"], restricted_secret=secrets["restricted"])
    with django_db_blocker.unblock():
        call_command("flush", verbosity=0, interactive=False)


@pytest.fixture
def scripted_gateway(
    scripted_seed, django_db_blocker
) -> Iterator[Callable[[Handler], InProcessGateway]]:
    """``scripted_gateway(handler)``: the gateway app in this process over the scripted
    seed, its upstream client replaced by a ``ScriptedUpstream`` answering with
    ``handler``."""
    gateways: list[InProcessGateway] = []

    def make(handler: Handler) -> InProcessGateway:
        forget_breakers()  # the seed outlives a test: so would its breakers
        gateways.append(InProcessGateway(ScriptedUpstream(handler), usage_stream=USAGE_STREAM))
        return gateways[-1]

    with django_db_blocker.unblock():
        yield make
        for gateway in gateways:
            gateway.close()


@dataclass(frozen=True)
class ByokSeed:
    secret: str  # a key of tenant "acme", which allows callers' own upstream keys
    closed_secret: str  # a key of tenant "closed", which does not


@pytest.fixture
def byok_seed(transactional_db, upstream) -> ByokSeed:
    """The usual seed with BYOK opted in: tenant acme (its tenant "closed" not), and the
    backends fake and fake-anthropic (the others not: dead, fake-llama, …)."""
    from apps.provisioning.services import config_apply

    document = seed_document(upstream.base_url)
    for backend in document["backends"]:
        if backend["name"] in BYOK_BACKENDS:
            backend["byok"] = True
    document["tenants"][0]["byok"] = True
    document["tenants"].append(seed_document(upstream.base_url, tenant="closed")["tenants"][0])
    keys = config_apply(document=document).keys_created
    secrets = {(k["tenant"], k["name"]): k["secret"] for k in keys}
    return ByokSeed(secret=secrets["acme", "main"], closed_secret=secrets["closed", "main"])


BYOK_BACKENDS = ("fake", "fake-anthropic")


@pytest.fixture
def byok_gateway(byok_seed, settings) -> Iterator[InProcessGateway]:
    """The gateway app in this process over ``byok_seed`` and the fake upstream."""
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:inprocess"
    gateway = InProcessGateway()
    yield gateway
    gateway.close()
