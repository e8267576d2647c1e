"""A minimal pipelined asyncio Redis client for the gateway's two hot-path commands.

redis-py's asyncio client spends ~85 µs of CPU per command in its connection pool and
retry layers and packs commands in Python; hiredis (C) packs and parses, and pipelining
many requests' commands over a few connections avoids a pool altogether. Measured on
this machine: ~180 µs → ~40 µs of CPU per EVALSHA. Everything else keeps using redis-py.

hiredis still packs each argument anew (about 0.2 µs each here: 20 µs for an admission of
six scopes' keys and limits); what a caller sends again and again it can pack once
(``pack``) and send as it is (``evalsha_packed``): bench/limiter_bench.py measures it.
"""

import asyncio
import collections
import hashlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError


@dataclass(frozen=True, slots=True)
class Packed:
    """Command arguments in Redis' wire format (RESP bulk strings), sent as they are."""

    count: int
    data: bytes

    def __add__(self, other: "Packed") -> "Packed":
        return Packed(self.count + other.count, self.data + other.data)


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def _arg(value: str | bytes | int | float) -> bytes:
    kind = type(value)
    if kind is bytes:
        return value
    if kind is str:
        return value.encode()
    if kind is int:
        return b"%d" % value
    return str(value).encode()


def pack(values: Iterable[str | bytes | int | float]) -> Packed:
    """``values`` as command arguments (str as UTF-8, numbers in decimal, as hiredis
    sends them)."""
    parts = [_bulk(_arg(value)) for value in values]
    return Packed(len(parts), b"".join(parts))


class _Connection(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader()
        self.waiters: collections.deque[asyncio.Future] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.outgoing: list[bytes] = []

    def queue(self, command: bytes) -> None:
        """Coalesce the commands of concurrent requests into one write per loop turn."""
        if not self.outgoing:
            asyncio.get_running_loop().call_soon(self.flush)
        self.outgoing.append(command)

    def flush(self) -> None:
        if self.outgoing and self.transport is not None and not self.closed:
            self.transport.write(b"".join(self.outgoing))
        self.outgoing.clear()

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while (reply := self.reader.gets()) is not False:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(reply)

    def connection_lost(self, exc) -> None:
        self.closed = True
        error = RedisConnectionError(f"Redis connection lost: {exc or 'closed'}")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(error)


def _expire(conn: _Connection, waiter: asyncio.Future) -> None:
    if not waiter.done():
        waiter.set_exception(RedisTimeoutError("Redis did not answer in time"))
        # A late reply would be matched to the wrong waiter: drop the connection.
        if conn.transport is not None:
            conn.transport.close()


class FastRedis:
    def __init__(self, url: str, connections: int = 2, timeout_s: float = 5.0) -> None:
        parsed = urlparse(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._password = unquote(parsed.password) if parsed.password else None
        self._username = unquote(parsed.username) if parsed.username else None
        self._db = int(parsed.path.lstrip("/") or 0)
        self._size = connections
        self._timeout = timeout_s
        self._connections: list[_Connection | None] = [None] * connections
        self._next = itertools.cycle(range(connections))
        self._locks = [asyncio.Lock() for _ in range(connections)]
        self._scripts: dict[str, bytes] = {}  # sha → source
        self._evalsha: dict[str, bytes] = {}  # sha → the command's start, packed

    async def _connection(self, slot: int) -> _Connection:
        conn = self._connections[slot]
        if conn is not None and not conn.closed:
            return conn
        async with self._locks[slot]:
            conn = self._connections[slot]
            if conn is None or conn.closed:
                loop = asyncio.get_running_loop()
                try:
                    async with asyncio.timeout(self._timeout):
                        _transport, conn = await loop.create_connection(
                            _Connection, self._host, self._port
                        )
                except (OSError, TimeoutError) as exc:
                    raise RedisConnectionError(f"cannot connect to Redis: {exc}") from None
                setup = []
                if self._password:
                    auth = (
                        ["AUTH", self._username, self._password]
                        if self._username
                        else ["AUTH", self._password]
                    )
                    setup.append(auth)
                if self._db:
                    setup.append(["SELECT", self._db])
                for command in setup:
                    reply = await self._send(conn, hiredis.pack_command(tuple(command)))
                    if isinstance(reply, hiredis.ReplyError):
                        raise ResponseError(str(reply))
                self._connections[slot] = conn
            return conn

    async def _send(self, conn: _Connection, command: bytes) -> object:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        conn.waiters.append(waiter)
        conn.queue(command)
        # A bare timer is far cheaper than asyncio.timeout() on this path.
        timer = loop.call_later(self._timeout, _expire, conn, waiter)
        try:
            return await waiter
        finally:
            timer.cancel()

    async def execute(self, *args) -> object:
        return await self._execute(hiredis.pack_command(args))

    async def _execute(self, command: bytes) -> object:
        conn = await self._connection(next(self._next))
        reply = await self._send(conn, command)
        if isinstance(reply, hiredis.ReplyError):
            message = str(reply)
            if message.startswith("NOSCRIPT"):
                raise NoScriptError(message)
            raise ResponseError(message)
        return reply

    def register(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source.encode()
        self._evalsha[sha] = _bulk(b"EVALSHA") + _bulk(sha.encode())
        return sha

    async def evalsha(self, sha: str, keys: list, args: list) -> object:
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted Redis forgot it: EVAL also caches it again
            return await self.execute("EVAL", self._scripts[sha], len(keys), *keys, *args)

    async def evalsha_packed(
        self, sha: str, keys: Sequence[Packed], head: tuple, args: Sequence[Packed]
    ) -> object:
        """``evalsha`` of keys packed beforehand (``pack``), then the arguments ``head``
        (packed here) and ``args`` (packed beforehand)."""
        nkeys = sum(part.count for part in keys)
        argc = 3 + nkeys + len(head) + sum(part.count for part in args)
        packed_head = hiredis.pack_command(head)
        body = b"".join(
            [
                _bulk(b"%d" % nkeys),
                *[part.data for part in keys],
                packed_head[packed_head.index(b"\n") + 1 :],  # without its own count
                *[part.data for part in args],
            ]
        )
        try:
            return await self._execute(b"*%d\r\n%b%b" % (argc, self._evalsha[sha], body))
        except NoScriptError:
            script = _bulk(b"EVAL") + _bulk(self._scripts[sha])
            return await self._execute(b"*%d\r\n%b%b" % (argc, script, body))

    async def close(self) -> None:
        for conn in self._connections:
            if conn is not None and conn.transport is not None:
                conn.transport.close()
