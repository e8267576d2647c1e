from collections.abc import Iterator

import pytest

from tests.gateway.inprocess import InProcessGateway


@pytest.fixture
def inprocess_gateway(seed) -> Iterator[InProcessGateway]:
    """The gateway app in this process, over the seeded keys, models and fake upstream
    (see tests/gateway/inprocess.py)."""
    gateway = InProcessGateway()
    yield gateway
    gateway.close()
