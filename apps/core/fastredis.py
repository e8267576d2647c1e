"""A minimal pipelined asyncio Redis client for the gateway's two hot-path commands, on a
single Redis (FastRedis), a Redis Cluster (ClusterFastRedis) or a Sentinel-managed
primary (SentinelFastRedis).

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
from redis.crc import key_slot
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


def _retrieve(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # an ASKING's reply or error: nobody waits for it


class _Scripts:
    """Lua scripts by SHA1: EVALSHA first, EVAL (which caches it again) when a Redis has
    forgotten it. Every client keeps ``_scripts`` (sha → source)."""

    _scripts: dict[str, bytes]

    def register(self, source: str) -> str:
        sha = hashlib.sha1(source.encode()).hexdigest()
        self._scripts[sha] = source.encode()
        return sha


class FastRedis(_Scripts):
    """One server (a single Redis, a cluster node, a Sentinel's primary)."""

    def __init__(self, url: str, connections: int = 2, timeout_s: float = 5.0) -> None:
        parsed = urlparse(url)
        self._host = parsed.hostname or "127.0.0.1"
        self._port = parsed.port or 6379
        self._password = unquote(parsed.password) if parsed.password else None
        self._username = unquote(parsed.username) if parsed.username else None
        self._db = int(parsed.path.lstrip("/") or 0)
        self._setup(connections, timeout_s)

    @classmethod
    def node(
        cls,
        host: str,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        db: int = 0,
        connections: int = 2,
        timeout_s: float = 5.0,
        scripts: dict[str, bytes] | None = None,
    ) -> "FastRedis":
        """A client of host:port; ``scripts`` shares the sources a NOSCRIPT reloads."""
        self = cls.__new__(cls)
        self._host, self._port, self._db = host, port, db
        self._username, self._password = username, password
        self._setup(connections, timeout_s)
        if scripts is not None:
            self._scripts = scripts
        return self

    def _setup(self, connections: int, timeout_s: float) -> None:
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

    async def raw(self, args: tuple, asking: bool = False) -> object:
        """The reply as it came, an error reply (hiredis.ReplyError) included; ``asking``
        sends ASKING first on the same connection (a cluster's ASK redirection)."""
        conn = await self._connection(next(self._next))
        if asking:
            loop = asyncio.get_running_loop()
            waiter = loop.create_future()
            conn.waiters.append(waiter)
            conn.queue(hiredis.pack_command(("ASKING",)))  # the same write as the command
            try:
                return await self._send(conn, hiredis.pack_command(args))
            finally:
                waiter.add_done_callback(_retrieve)
        return await self._send(conn, hiredis.pack_command(args))

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
        sha = super().register(source)
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


def _reply_error(message: str) -> Exception:
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    return ResponseError(message)


def _address(redirect: str) -> tuple[str, int]:
    """host:port of a MOVED/ASK error ("MOVED 3999 127.0.0.1:6381")."""
    host, _, port = redirect.split()[2].rpartition(":")
    return host, int(port)


_SLOTS = 16384
# Redirections and TRYAGAIN (a multi-key script while its slot migrates) before giving up,
# and the first back-off of TRYAGAIN / CLUSTERDOWN (doubled each time, at most 0.1 s).
_MAX_REDIRECTS = 40
_BACKOFF_S = 0.002


class ClusterFastRedis(_Scripts):
    """The same two commands on a Redis Cluster: each routed to the node serving the slot
    of its first key (every key of one script shares it: apps/core/shards.py), over that
    node's pipelined connections.

    The slot map comes from CLUSTER SLOTS of any known node. MOVED updates the slot at
    once and refreshes the whole map in the background; ASK retries once at the node
    named, after ASKING; TRYAGAIN (a script's keys split by a slot migration) and
    CLUSTERDOWN back off and retry. None of these executed the command, so retrying is
    safe; a lost connection is not retried (the command may have run): the map is
    refreshed and the error goes to the caller, as on a single Redis. NOSCRIPT loads the
    script on the node that lacks it (EVAL)."""

    def __init__(
        self,
        nodes,
        *,
        username: str | None = None,
        password: str | None = None,
        connections: int = 2,
        timeout_s: float = 5.0,
    ) -> None:
        self._startup = [tuple(node) for node in nodes]
        self._auth = {"username": username, "password": password}
        self._connections = connections
        self._timeout = timeout_s
        self._scripts: dict[str, bytes] = {}
        self._nodes: dict[tuple[str, int], FastRedis] = {}
        self._slots: list[tuple[str, int] | None] = [None] * _SLOTS
        self._loaded = False
        self._refreshing: asyncio.Task | None = None

    def _node(self, address: tuple[str, int]) -> FastRedis:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = FastRedis.node(
                *address,
                **self._auth,
                connections=self._connections,
                timeout_s=self._timeout,
                scripts=self._scripts,
            )
        return node

    async def refresh(self) -> None:
        """Load the slot map (one refresh at a time; concurrent callers wait for it)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._load_slots())
        await asyncio.shield(self._refreshing)

    def _refresh_soon(self) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._load_slots())
            self._refreshing.add_done_callback(_ignore_failure)

    async def _load_slots(self) -> None:
        known = list(dict.fromkeys([*self._nodes, *self._startup]))
        last: Exception | None = None
        for address in known:
            try:
                reply = await self._node(address).raw(("CLUSTER", "SLOTS"))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                last = exc
                continue
            if isinstance(reply, hiredis.ReplyError):
                last = ResponseError(str(reply))
                continue
            slots: list[tuple[str, int] | None] = [None] * _SLOTS
            for entry in reply:
                start, end, primary = entry[0], entry[1], entry[2]
                host = primary[0].decode() if isinstance(primary[0], bytes) else primary[0]
                owner = (host or address[0], int(primary[1]))
                for slot in range(start, end + 1):
                    slots[slot] = owner
            self._slots = slots
            self._loaded = True
            for gone in set(self._nodes) - set(slots) - set(self._startup):
                await self._nodes.pop(gone).close()
            return
        raise RedisConnectionError(f"no cluster node answered CLUSTER SLOTS: {last}")

    async def _routed(self, key: str, command: tuple, fallback: tuple | None = None) -> object:
        if not self._loaded:
            await self.refresh()
        slot = key_slot(key.encode() if isinstance(key, str) else key)
        asking: tuple[str, int] | None = None
        backoff = _BACKOFF_S
        for _attempt in range(_MAX_REDIRECTS):
            address = asking or self._slots[slot]
            if address is None:
                await self.refresh()
                address = self._slots[slot]
                if address is None:
                    raise RedisConnectionError(f"no cluster node serves slot {slot}")
            try:
                reply = await self._node(address).raw(command, asking=asking is not None)
            except (RedisConnectionError, RedisTimeoutError):
                self._refresh_soon()  # a failed-over node: the next request finds the new one
                raise
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            message = str(reply)
            if message.startswith("MOVED"):
                self._slots[slot] = _address(message)
                asking = None
                self._refresh_soon()
            elif message.startswith("ASK"):
                asking = _address(message)
            elif message.startswith("NOSCRIPT") and fallback is not None:
                command, fallback = fallback, None  # the same node (asking kept)
            elif message.startswith(("TRYAGAIN", "CLUSTERDOWN")):
                asking = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 0.1)
                if message.startswith("CLUSTERDOWN"):
                    self._refresh_soon()
            else:
                raise _reply_error(message)
        raise RedisConnectionError(f"cluster kept redirecting slot {slot}")

    async def evalsha(self, sha: str, keys: list, args: list) -> object:
        return await self._routed(
            keys[0],
            ("EVALSHA", sha, len(keys), *keys, *args),
            ("EVAL", self._scripts[sha], len(keys), *keys, *args),
        )

    async def execute(self, *args) -> object:
        """A single-key command (its key second: ``XADD stream …``)."""
        return await self._routed(args[1], args)

    async def close(self) -> None:
        if self._refreshing is not None:
            self._refreshing.cancel()
        for node in self._nodes.values():
            await node.close()


def _ignore_failure(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed background refresh is retried on next use


class SentinelFastRedis(_Scripts):
    """The same two commands on the primary the Sentinels name for ``service``: asked
    again after a lost connection or a READONLY reply (a demoted primary). READONLY means
    the command did not run, so it is retried once at the new primary; a lost connection
    is not (it may have run): the error goes to the caller, as on a single Redis."""

    def __init__(
        self,
        sentinels,
        service: str,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connections: int = 2,
        timeout_s: float = 5.0,
    ) -> None:
        self._sentinels = [tuple(s) for s in sentinels]
        self._service = service
        self._options = {
            "db": db,
            "username": username,
            "password": password,
            "connections": connections,
            "timeout_s": timeout_s,
        }
        self._timeout = timeout_s
        self._scripts: dict[str, bytes] = {}
        self._primary: FastRedis | None = None
        self._lock = asyncio.Lock()

    async def primary_address(self) -> tuple[str, int]:
        last: Exception | None = None
        for host, port in self._sentinels:
            sentinel = FastRedis.node(host, port, connections=1, timeout_s=min(self._timeout, 2))
            try:
                reply = await sentinel.raw(("SENTINEL", "get-master-addr-by-name", self._service))
            except (RedisConnectionError, RedisTimeoutError) as exc:
                last = exc
                continue
            finally:
                await sentinel.close()
            if isinstance(reply, list) and len(reply) == 2:
                return reply[0].decode(), int(reply[1])
            last = RedisConnectionError(f"sentinel {host}:{port} knows no {self._service!r}")
        raise RedisConnectionError(f"no Sentinel named a primary for {self._service!r}: {last}")

    async def _current(self) -> FastRedis:
        primary = self._primary
        if primary is not None:
            return primary
        async with self._lock:
            if self._primary is None:
                host, port = await self.primary_address()
                self._primary = FastRedis.node(host, port, **self._options, scripts=self._scripts)
            return self._primary

    async def _forget(self, primary: FastRedis) -> None:
        if self._primary is primary:
            self._primary = None
            await primary.close()

    async def _call(self, command: tuple, fallback: tuple | None = None) -> object:
        for attempt in range(2):
            primary = await self._current()
            try:
                reply = await primary.raw(command)
                if (
                    fallback is not None
                    and isinstance(reply, hiredis.ReplyError)
                    and str(reply).startswith("NOSCRIPT")
                ):
                    reply = await primary.raw(fallback)
            except (RedisConnectionError, RedisTimeoutError):
                await self._forget(primary)
                raise
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            message = str(reply)
            if message.startswith("READONLY") and attempt == 0:
                await self._forget(primary)
                continue
            raise _reply_error(message)
        raise RedisConnectionError("the primary stayed read-only")

    async def evalsha(self, sha: str, keys: list, args: list) -> object:
        return await self._call(
            ("EVALSHA", sha, len(keys), *keys, *args),
            ("EVAL", self._scripts[sha], len(keys), *keys, *args),
        )

    async def execute(self, *args) -> object:
        return await self._call(args)

    async def close(self) -> None:
        if self._primary is not None:
            await self._primary.close()
