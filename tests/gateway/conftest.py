from collections.abc import Iterator

import pytest

from tests.gateway.inprocess import InProcessGateway


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
