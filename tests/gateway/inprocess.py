"""The /v1 gateway driven in the test's own process, with the upstream injected at its seam.

``InProcessGateway`` runs ``GatewayApp`` on an event loop it owns and calls it through
``httpx.ASGITransport``: no server process, no sockets on the client side, so a request
costs about a millisecond. The keys and catalog are real rows in Postgres (seed them
first, the app's caches load on first use) and Redis holds the limits and the usage
stream, as in production. The upstream is either what the seeded backends point at (the
fake upstream process), or a ``ScriptedUpstream`` put in place of the gateway's
``UpstreamClient``: the test then states exactly what the upstream answers, chunk by
chunk, and where it breaks. Nothing of the gateway itself is replaced.

``usage_events()`` reads the usage events the gateway appended to the Redis stream since
the gateway was made; ``ingest_usage`` runs the ledger's own ingest to turn them into
UsageRecords.

Use it through the ``inprocess_gateway`` / ``scripted_gateway`` fixtures
(tests/gateway/conftest.py): test functions stay synchronous; each call runs to
completion on the gateway's loop (``run`` takes any coroutine, such as an async SDK call
through ``client``, or ``anthropic_http_client`` for the anthropic SDK). A streamed response is read whole (ASGITransport buffers it);
``stream_and_leave`` drives the app directly to leave a stream half-way.
"""

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import httpx2
import orjson
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from django.test import override_settings
from multidict import CIMultiDict, CIMultiDictProxy

from apps.gateway.app import GatewayApp
from apps.gateway.caches import DeploymentInfo
from apps.gateway.upstream.client import ReadError, TransportError
from apps.ledger.events import UsageEvent
from tests.conftest import wait_until

BASE_URL = "http://gateway"
# How long a hanging scripted upstream waits for the gateway to close its response
# before it gives up (a gateway that never notices its client left fails, not hangs).
HANG_LIMIT_S = 5.0


@dataclass
class ScriptedAnswer:
    """What a scripted upstream answers to one request.

    ``chunks`` are the body's pieces as the gateway reads them (an SSE stream split
    wherever the test likes); ``body`` a whole body instead. ``raise_after=n``: the body
    breaks off with ``error`` after ``n`` chunks (a whole-body read breaks off too).
    ``hang_after=n``: after ``n`` chunks the upstream is still generating and sends
    nothing more until the gateway closes the response (a whole-body read hangs too). Headers default to
    the content type of an SSE stream (chunks) or of JSON (body). A handler that
    raises a transport error (``ConnectError`` …) fails the request as the real
    client does before any answer."""

    status: int = 200
    headers: Mapping[str, str] | None = None
    chunks: list[bytes] | None = None
    body: bytes | None = None
    raise_after: int | None = None
    error: TransportError | type[TransportError] = ReadError
    hang_after: int | None = None


Handler = Callable[[DeploymentInfo, str, dict], ScriptedAnswer]


class ScriptedResponse:
    """An ``UpstreamResponse`` stand-in that plays one ``ScriptedAnswer``."""

    def __init__(self, answer: ScriptedAnswer) -> None:
        self.answer = answer
        self.status = answer.status
        headers = answer.headers
        if headers is None:
            kind = "text/event-stream" if answer.chunks is not None else "application/json"
            headers = {"Content-Type": kind}
        self.headers = CIMultiDictProxy(CIMultiDict(headers))
        self.closed = False
        self.chunks_read = 0
        self.first_byte_s = 0.0
        self._closing = asyncio.Event()

    def _pieces(self) -> list[bytes]:
        if self.answer.chunks is not None:
            return self.answer.chunks
        return [self.answer.body] if self.answer.body is not None else []

    def _error(self) -> TransportError:
        error = self.answer.error
        return error("scripted upstream failure") if isinstance(error, type) else error

    async def _hang(self) -> None:
        try:
            await asyncio.wait_for(self._closing.wait(), HANG_LIMIT_S)
        except TimeoutError:
            raise ReadError("the scripted upstream hung up") from None
        raise ReadError("the response was closed")

    async def read(self) -> bytes:
        await asyncio.sleep(0)
        pieces = self._pieces()
        if self.answer.raise_after is not None:
            self.chunks_read = self.answer.raise_after
            raise self._error()
        if self.answer.hang_after is not None:
            self.chunks_read = self.answer.hang_after
            await self._hang()
        self.chunks_read = len(pieces)
        return b"".join(pieces)

    def chunks(self) -> "ScriptedResponse":
        return self

    def __aiter__(self) -> "ScriptedResponse":
        return self

    async def __anext__(self) -> bytes:
        # A real read yields to the loop: a client that leaves is noticed between chunks.
        await asyncio.sleep(0)
        answer = self.answer
        if answer.raise_after is not None and self.chunks_read >= answer.raise_after:
            raise self._error()
        if answer.hang_after is not None and self.chunks_read >= answer.hang_after:
            await self._hang()
        pieces = self._pieces()
        if self.chunks_read >= len(pieces):
            raise StopAsyncIteration
        self.chunks_read += 1
        return pieces[self.chunks_read - 1]

    async def close(self) -> None:
        self.closed = True
        self._closing.set()


@dataclass
class UpstreamCall:
    """One request the gateway sent to the scripted upstream."""

    deployment: DeploymentInfo
    path: str
    body: dict
    stream: bool
    extra_headers: dict[str, str] | None
    response: ScriptedResponse | None = None


@dataclass
class ScriptedUpstream:
    """The gateway's ``UpstreamClient`` stand-in: the same ``post`` contract, answered by
    ``handler(deployment, path, body)`` (``body`` the JSON the gateway sent)."""

    handler: Handler
    calls: list[UpstreamCall] = field(default_factory=list)

    async def post(
        self,
        deployment: DeploymentInfo,
        path: str,
        body: bytes,
        *,
        stream: bool,
        extra_headers: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> ScriptedResponse:
        await asyncio.sleep(0)
        call = UpstreamCall(deployment, path, orjson.loads(body), stream, extra_headers)
        self.calls.append(call)
        call.response = ScriptedResponse(self.handler(deployment, path, call.body))
        return call.response

    async def close(self) -> None:
        pass


@dataclass
class LeftStream:
    """What a client that left a stream half-way had received."""

    status: int
    headers: dict[str, str]
    body: bytes


class InProcessGateway:
    """``usage_stream``: the Redis stream the gateway appends its usage events to (the
    configured one by default). A stream of its own keeps them from a Celery worker an
    end-to-end test left running, which would ingest and delete them."""

    def __init__(
        self, upstream: ScriptedUpstream | None = None, *, usage_stream: str | None = None
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.app = GatewayApp()
        self.usage_stream = usage_stream or settings.LEDGER_STREAM
        # The state reads the stream's name once, when it is made.
        with override_settings(LEDGER_STREAM=self.usage_stream):
            state = self.loop.run_until_complete(self.app.state())
        if upstream is not None:
            state.upstream = upstream  # the seam: what the endpoints post through
        self.upstream = upstream
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=self.app), base_url=BASE_URL, timeout=30
        )
        # The anthropic SDK takes only its own fork of httpx.
        self.anthropic_http_client = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=self.app), base_url=BASE_URL, timeout=30
        )
        self._redis = redis.Redis.from_url(settings.REDIS_URL)
        newest = self._redis.xrevrange(self.usage_stream, count=1)
        self._events_after = newest[0][0] if newest else b"0-0"

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

    def stream_and_leave(
        self, path: str, *, body: dict, headers: dict[str, str], once_received: bytes
    ) -> LeftStream:
        """POST ``body`` and disconnect once the streamed response's body holds
        ``once_received``, as a client closing its connection does."""
        return self.run(self._stream_and_leave(path, body, headers, once_received))

    async def _stream_and_leave(
        self, path: str, body: dict, headers: dict[str, str], once_received: bytes
    ) -> LeftStream:
        raw = orjson.dumps(body)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"gateway"),
                (b"content-length", str(len(raw)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in headers.items()),
            ],
            "client": ("127.0.0.1", 1),
            "server": ("gateway", 80),
        }
        gone = asyncio.Event()
        requested = False
        start: dict = {}
        parts: list[bytes] = []

        async def receive() -> dict:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": raw, "more_body": False}
            await gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body" and not gone.is_set():
                parts.append(message.get("body", b""))
                if once_received in b"".join(parts):
                    gone.set()

        await self.app(scope, receive, send)
        return LeftStream(
            start.get("status", 0),
            {k.decode(): v.decode() for k, v in start.get("headers", ())},
            b"".join(parts),
        )

    def usage_events(self) -> list[UsageEvent]:
        """The usage events appended to the Redis stream since this gateway was made."""
        entries = self._redis.xrange(self.usage_stream, min=b"(" + self._events_after)
        return [UsageEvent.from_bytes(fields[b"e"]) for _id, fields in entries]

    def close(self) -> None:
        self._redis.close()
        self.loop.run_until_complete(self.client.aclose())
        self.loop.run_until_complete(self.anthropic_http_client.aclose())
        self.loop.run_until_complete(self.app.shutdown())
        # The caches' database connections live on asgiref's worker thread: close them
        # there, or the test database cannot be flushed or dropped after the test.
        self.loop.run_until_complete(sync_to_async(connections.close_all)())
        self.loop.close()


def ingest_usage() -> None:
    """Move the usage events in the Redis stream into the ledger (the worker's task).

    A Celery worker an end-to-end test left running may hold a batch it read and has not
    committed yet: returns once the stream is empty, which it is when every event is in
    the ledger (or the dead letters), whoever ingested it."""
    from apps.ledger.services import usage_ingest

    client = redis.Redis.from_url(settings.REDIS_URL)

    def drained() -> bool:
        usage_ingest(consumer="inprocess-tests", max_seconds=30)
        return client.xlen(settings.LEDGER_STREAM) == 0

    try:
        wait_until(drained, timeout=60)
    finally:
        client.close()
