"""The pooled upstream HTTP client, one per process: the only module that imports aiohttp.

aiohttp directly: on this machine it costs ~0.28 ms CPU per proxied request against
~0.55 ms for httpx over the aiohttp transport and ~1.8 ms for httpx's default one; the
0.5 ms per-request budget leaves no room for the httpx layer on the hot path.

aiohttp's exceptions are mapped here, once, into the transport errors below; what is
above sees an ``UpstreamResponse`` (status, headers, ``read()``, its chunks, ``close()``).
"""

import asyncio
import time
from collections.abc import Mapping

import aiohttp

from apps.gateway.caches import DeploymentInfo


class TransportError(Exception):
    """The upstream could not be reached or failed mid-answer; ``label`` names the kind
    for the upstream-error metric."""

    label = "connect"


class ConnectError(TransportError):
    """No connection (refused, DNS, reset before the request went out): nothing was sent."""


class ConnectTimeout(ConnectError):
    label = "connect_timeout"


class RemoteDisconnected(TransportError):
    """The connection closed under the request, most often a pooled keep-alive connection
    the upstream had just closed: a fresh connection may well succeed."""

    label = "disconnected"


class ReadTimeout(TransportError):
    """Sent, but no answer in time: the upstream may be working on it."""

    label = "timeout"


class FirstByteTimeout(TransportError):
    """Sent, but nothing came back (no headers, or a stream's first chunk) within the
    deployment's first-byte deadline: abandoned, nothing has reached the client."""

    label = "first_byte_timeout"


class ReadError(TransportError):
    """The answer broke off while its body was read (or timed out between chunks)."""

    label = "read"


class UpstreamResponse:
    """An upstream's answer, headers received. ``async for chunk in response.chunks()``
    yields the body's bytes as they come (raising ReadError when it breaks off)."""

    __slots__ = (
        "_response",
        "_readany",
        "_first",
        "_idle_s",
        "_last",
        "_clock",
        "_timer",
        "status",
        "headers",
        "first_byte_s",
    )

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._readany = response.content.readany
        self._first: bytes | None = None  # the peeked first chunk, replayed first
        self._idle_s = 0.0
        self._last = 0.0  # the loop's time of the latest read (watch_idle)
        self._clock = time.monotonic
        self._timer: asyncio.TimerHandle | None = None
        self.status: int = response.status
        self.headers: Mapping[str, str] = response.headers
        # Seconds from sending the request to its first byte (the first chunk of a
        # stream, the headers of anything else).
        self.first_byte_s: float = 0.0

    def watch_idle(self, seconds: float) -> None:
        """Break the body off (ReadError) once ``seconds`` pass without a byte: a
        stream's pause between chunks, in place of the connection's ``sock_read`` (which
        every request sets again). One timer a response, moved on only when it fires: a
        read costs a clock read, not the cancel and new timer per read that ``sock_read``
        costs (~2.4 µs, a twentieth of a relayed chunk)."""
        connection = self._response.connection
        if connection is not None and connection.protocol is not None:
            connection.protocol.read_timeout = None
        loop = asyncio.get_running_loop()
        self._clock = loop.time
        self._idle_s = seconds
        self._last = loop.time()
        self._timer = loop.call_at(self._last + seconds, self._idle_check)

    def _idle_check(self) -> None:
        content = self._response.content
        if content.is_eof():
            self._timer = None
            return
        due = self._last + self._idle_s
        if self._clock() < due:  # read since: wait for the rest of the pause
            self._timer = asyncio.get_running_loop().call_at(due, self._idle_check)
            return
        self._timer = None
        content.set_exception(aiohttp.ServerTimeoutError(f"no data for {self._idle_s:g} s"))
        self._response.close()  # the upstream stops generating

    async def _peek(self) -> None:
        """Read the body's first chunk now (a stream's first byte), to replay it."""
        try:
            self._first = await self._readany()
        except TimeoutError as exc:  # sock_read: timeout_s without a byte
            raise ReadTimeout(str(exc)) from exc
        except aiohttp.ClientError as exc:
            raise ReadError(str(exc)) from exc

    async def read(self) -> bytes:
        try:
            rest = await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReadError(str(exc)) from exc
        first, self._first = self._first, None
        return first + rest if first else rest

    def chunks(self) -> "UpstreamResponse":
        return self

    def __aiter__(self) -> "UpstreamResponse":
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
            raise StopAsyncIteration
        # What aiohttp's own iter_any() does, with its exceptions mapped.
        try:
            data = await self._readany()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReadError(str(exc)) from exc
        if not data:
            raise StopAsyncIteration
        self._last = self._clock()
        return data

    async def close(self) -> None:
        """Give the connection back (closed when the body was left unread, which stops a
        server still generating)."""
        if self._timer is not None:  # watch_idle's
            self._timer.cancel()
            self._timer = None
        response = self._response
        response.release()
        await response.wait_for_close()


class UpstreamClient:
    """``pool_size``: the most connections open at once (0: no bound). The pool is never
    a hidden concurrency limit: a request waiting for a pooled connection is not timed by
    the deployment's ``connect_timeout_s`` (``sock_connect`` times the TCP connect only),
    so a full pool slows requests down and never fails them as an upstream outage would.
    How many requests a process takes is the operator's ``max_concurrent`` and the
    process's load bound (apps/gateway/load.py)."""

    def __init__(self, pool_size: int = 0) -> None:
        self._pool_size = pool_size
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._pool_size, limit_per_host=0, ttl_dns_cache=300, keepalive_timeout=30
            )
            self._session = aiohttp.ClientSession(
                connector=connector, auto_decompress=True, skip_auto_headers=("User-Agent",)
            )
        return self._session

    async def post(
        self,
        deployment: DeploymentInfo,
        path: str,
        body: bytes,
        *,
        stream: bool,
        extra_headers: dict[str, str] | None = None,
        deadline: float | None = None,
    ) -> UpstreamResponse:
        """POST ``body``; the answer once its first byte arrived (close() it after use).

        ``deadline`` (``time.monotonic()`` seconds): the request's overall deadline, by
        default the deployment's ``timeout_s`` from now. A 2xx stream's first chunk is read
        here (then replayed), so that a stream which sends nothing before its
        ``first_byte_timeout_s`` raises FirstByteTimeout; past the deadline ReadTimeout.
        After the first byte, a stream may pause up to ``timeout_s`` between chunks.
        """
        headers = {"Content-Type": "application/json", **deployment.headers}
        if extra_headers:
            headers.update(extra_headers)
        sent = time.monotonic()
        budget = deployment.timeout_s if deadline is None else max(deadline - sent, 0.001)
        first_byte = deployment.first_byte_timeout_s
        # sock_connect, not connect: aiohttp's connect includes the wait for a pooled
        # connection, which is load, not an unreachable upstream.
        # A stream's sock_read times its first byte; after it, watch_idle its pauses.
        if stream:
            timeout = aiohttp.ClientTimeout(
                total=None,
                sock_connect=deployment.connect_timeout_s,
                sock_read=deployment.timeout_s,
            )
        else:
            timeout = aiohttp.ClientTimeout(total=budget, sock_connect=deployment.connect_timeout_s)
        # A timer of our own only when aiohttp's do not say it already (an asyncio
        # timeout costs ~4.5 µs): a first-byte deadline, or a stream retried late, which
        # only has what is left of the overall deadline.
        first_byte_bound = first_byte is not None and first_byte < budget
        if first_byte_bound:
            limit: float | None = first_byte
        elif stream and budget < deployment.timeout_s:
            limit = budget
        else:
            limit = None
        url = deployment.base_url + path
        waiting = None
        try:
            if limit is None:
                response = await self._send(url, body, headers, timeout, stream)
            else:
                waiting = asyncio.timeout(limit)
                async with waiting:
                    response = await self._send(url, body, headers, timeout, stream)
        # Order matters: aiohttp's connect timeout is a TimeoutError, and its connector
        # error a ClientOSError.
        except aiohttp.ConnectionTimeoutError as exc:
            raise ConnectTimeout(str(exc)) from exc
        except TimeoutError as exc:
            if waiting is not None and waiting.expired() and first_byte_bound:
                raise FirstByteTimeout(f"nothing within {limit:g} s") from exc
            raise ReadTimeout(str(exc)) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ConnectError(str(exc)) from exc
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            raise RemoteDisconnected(str(exc)) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ConnectError(str(exc)) from exc
        response.first_byte_s = time.monotonic() - sent
        if stream and response.status < 300:  # after the first byte: pauses of timeout_s
            response.watch_idle(deployment.timeout_s)
        return response

    async def _send(
        self,
        url: str,
        body: bytes,
        headers: dict[str, str],
        limits: aiohttp.ClientTimeout,
        stream: bool,
    ) -> UpstreamResponse:
        """The POST, and a 2xx stream's first chunk read (a stream's first byte)."""
        response = UpstreamResponse(
            await self.session.post(url, data=body, headers=headers, timeout=limits)
        )
        if stream and response.status < 300:
            try:
                await response._peek()
            except BaseException:
                await response.close()
                raise
        return response

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
