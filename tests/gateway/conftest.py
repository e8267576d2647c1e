from collections.abc import Callable, Iterator

import pytest

from tests.conftest import Seed, seed_document
from tests.gateway.inprocess import Handler, InProcessGateway, ScriptedUpstream

# Where the seeded backends point when the upstream is scripted: nothing listens there,
# and nothing is sent there (the scripted upstream answers in its place).
SCRIPTED_UPSTREAM_URL = "http://scripted-upstream.invalid/v1"


@pytest.fixture
def inprocess_gateway(seed) -> Iterator[InProcessGateway]:
    """The gateway app in this process, over the seeded keys, models and fake upstream
    (see tests/gateway/inprocess.py)."""
    gateway = InProcessGateway()
    yield gateway
    gateway.close()


@pytest.fixture
def scripted_seed(transactional_db, redis_url) -> Seed:
    """The usual seed (tests/conftest.py), its backends answered by a scripted upstream."""
    from apps.provisioning.services import config_apply

    result = config_apply(document=seed_document(SCRIPTED_UPSTREAM_URL))
    secrets = {k["name"]: k["secret"] for k in result.keys_created}
    return Seed(tenant_name="acme", secret=secrets["main"], restricted_secret=secrets["restricted"])


@pytest.fixture
def scripted_gateway(scripted_seed) -> Iterator[Callable[[Handler], InProcessGateway]]:
    """``scripted_gateway(handler)``: the gateway app in this process, its upstream client
    replaced by a ``ScriptedUpstream`` answering with ``handler``."""
    gateways: list[InProcessGateway] = []

    def make(handler: Handler) -> InProcessGateway:
        gateways.append(InProcessGateway(ScriptedUpstream(handler)))
        return gateways[-1]

    yield make
    for gateway in gateways:
        gateway.close()
