"""The gateway's minimal ASGI plumbing: one request/response exchange."""

import asyncio
import contextlib
import os
import time
from typing import Any

from apps.gateway.errors import (
    BodyTooLarge,
    ContentLengthInvalid,
    GatewayError,
    render_anthropic,
    render_openai,
    status_for,
)

JSON_CONTENT_TYPE = (b"content-type", b"application/json")
SSE_HEADERS = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)


class ClientGone(Exception):
    pass


class Exchange:
    """One HTTP request on a /v1 route and the response we send for it."""

    __slots__ = (
        "scope",
        "receive",
        "send",
        "request_id",
        "headers",
        "protocol",
        "started_at",
        "created_at",
        "response_started",
        "finished",
        "disconnected",
        "extra_headers",
        "first_byte_at",
    )

    def __init__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope = scope
        self.receive = receive
        self.send = send
        self.request_id = "req_" + os.urandom(12).hex()
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.protocol = "openai"
        self.started_at = time.perf_counter()
        self.created_at = time.time()
        self.response_started = False
        self.finished = False
        self.disconnected = False
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.first_byte_at: float | None = None

    def repeats_any(self, names: frozenset[bytes]) -> bool:
        """Whether one of ``names`` came more than once (``headers`` keeps the last)."""
        raw = self.scope["headers"]
        if len(raw) == len(self.headers):  # no name repeated at all: the usual case
            return False
        seen = set()
        for name, _value in raw:
            if name in names:
                if name in seen:
                    return True
                seen.add(name)
        return False

    async def read_body(self, max_bytes: int) -> bytes:
        declared = self.headers.get(b"content-length")
        if declared is not None:
            try:
                too_large = int(declared) > max_bytes
            except ValueError:
                raise ContentLengthInvalid() from None
            if too_large:
                raise BodyTooLarge(max_bytes)
        parts = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone()
            body = message.get("body", b"")
            size += len(body)
            if size > max_bytes:
                raise BodyTooLarge(max_bytes)
            parts.append(body)
            if not message.get("more_body", False):
                return b"".join(parts)

    def _response_headers(self, extra: tuple | list) -> list[tuple[bytes, bytes]]:
        rid = self.request_id.encode()
        headers = [(b"x-request-id", rid), *extra, *self.extra_headers]
        if self.protocol == "anthropic":
            headers.append((b"request-id", rid))
        return headers

    async def respond(
        self, status: int, body: bytes, headers: tuple | list = (JSON_CONTENT_TYPE,)
    ) -> None:
        self.response_started = True
        # A length (not chunked encoding) lets the server write the body in one go.
        headers = [*headers, (b"content-length", str(len(body)).encode())]
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": self._response_headers(headers),
            }
        )
        await self.send({"type": "http.response.body", "body": body})
        self.finished = True

    async def respond_error(self, error: GatewayError) -> None:
        """``error`` in the route's protocol, unless a response already started."""
        if self.response_started:
            return
        self.extra_headers.extend(error.headers)
        if self.protocol == "anthropic":
            body = render_anthropic(error, self.request_id)
        else:
            body = render_openai(error)
        await self.respond(status_for(error, self.protocol), body)

    async def start_stream(self) -> None:
        self.response_started = True
        await self.send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": self._response_headers(SSE_HEADERS),
            }
        )

    async def stream_send(self, data: bytes) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.perf_counter()
        await self.send({"type": "http.response.body", "body": data, "more_body": True})

    async def stream_end(self, data: bytes = b"") -> None:
        await self.send({"type": "http.response.body", "body": data})
        self.finished = True

    async def watch_disconnect(self, task: asyncio.Task) -> None:
        """Cancel the request's task when the client goes away before we finished."""
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                if not self.finished:
                    task.cancel()
                return

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started_at) * 1000)

    def ttft_ms(self) -> int | None:
        if self.first_byte_at is None:
            return None
        return int((self.first_byte_at - self.started_at) * 1000)


class KeepAlive:
    """Sends ``payload`` on a stream whenever nothing was sent for ``interval`` seconds.

    One timer per stream, re-armed from the last send; the relay calls ``touch`` after
    each send and ``stop`` before the stream's last bytes. ``payload`` must be a whole
    event, and the relay must send whole events, so a ping never splits one."""

    __slots__ = ("exchange", "payload", "interval", "last", "stopped", "_loop", "_timer", "_task")

    def __init__(self, exchange: Exchange, payload: bytes, interval: float) -> None:
        self.exchange = exchange
        self.payload = payload
        self.interval = interval
        self.stopped = False
        self._task: asyncio.Task | None = None
        self._loop = asyncio.get_running_loop()
        self.last = self._loop.time()
        self._timer = self._loop.call_later(interval, self._check)

    def touch(self) -> None:
        self.last = self._loop.time()

    def stop(self) -> None:
        self.stopped = True
        self._timer.cancel()

    def _check(self) -> None:
        if self.stopped:
            return
        idle = self._loop.time() - self.last
        if idle >= self.interval * 0.99:
            self._task = self._loop.create_task(self._ping())
            self.last += idle
            idle = 0.0
        self._timer = self._loop.call_later(self.interval - idle, self._check)

    async def _ping(self) -> None:
        exchange = self.exchange
        if self.stopped or exchange.disconnected or exchange.finished:
            return
        with contextlib.suppress(Exception):  # the client went away: the relay will see it
            await exchange.send(
                {"type": "http.response.body", "body": self.payload, "more_body": True}
            )
