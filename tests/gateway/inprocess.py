"""The /v1 gateway driven in the test's own process, for corpora of many small requests.

``InProcessGateway`` runs ``GatewayApp`` on an event loop it owns and calls it through
``httpx.ASGITransport``: no server process, no sockets on the client side, so a request
refused by validation costs about a millisecond. Everything behind the app is real:
the keys and catalog in Postgres (seed them first, the app's caches load on first use),
Redis for limits and the usage stream, and the upstream the seeded backends point at
(the fake upstream process). Usage events land in the Redis stream as in production;
``ingest_usage`` runs the ledger's own ingest to turn them into UsageRecords.

Use it through the ``inprocess_gateway`` fixture (tests/gateway/conftest.py): the test
methods are plain synchronous functions; each call runs the request to completion on
the gateway's loop. A streamed response is read whole (ASGITransport buffers it).
"""

import asyncio
from typing import Any

import httpx
from asgiref.sync import sync_to_async
from django.db import connections

from apps.gateway.app import GatewayApp


class InProcessGateway:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = GatewayApp()
        self.loop.run_until_complete(self.app.startup())
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url="http://gateway", timeout=30
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        return self.loop.run_until_complete(
            self.client.request(method, path, content=content, headers=headers, params=params)
        )

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.app.shutdown())
        # The caches' database connections live on asgiref's worker thread: close them
        # there, or the test database cannot be flushed or dropped after the test.
        self.loop.run_until_complete(sync_to_async(connections.close_all)())
        self.loop.close()


def ingest_usage() -> None:
    """Move the usage events in the Redis stream into the ledger (the worker's task)."""
    from apps.ledger.services import usage_ingest

    usage_ingest(consumer="inprocess-tests", max_seconds=30)
