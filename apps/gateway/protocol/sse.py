"""Incremental Server-Sent Events parsing (WHATWG rules) and OpenAI-surface framing."""

from collections.abc import Iterator
from typing import Any

import orjson

DONE_EVENT = b"data: [DONE]\n\n"


def named_event(event_type: str, data: Any) -> bytes:
    """One named SSE event: ``event: <type>\\ndata: <compact json>\\n\\n``."""
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class SSEParser:
    """Feed raw bytes as they arrive; get (event name, data) for every dispatched event.

    Lines may end in LF, CR or CRLF, even split across reads; multiple data lines are
    joined by LF; comments and unknown fields are ignored.
    """

    __slots__ = ("_buffer", "_event", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._event: bytes | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes | None, bytes]]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            # A CR at the very end may be the first half of a CRLF still in flight.
            keep_cr = buffer.endswith(b"\r")
            if keep_cr:
                buffer = buffer[:-1]
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buffer += b"\r"
        *lines, self._buffer = buffer.split(b"\n")
        for line in lines:
            if not line:
                if self._data or self._event is not None:
                    data = b"\n".join(self._data)
                    event, self._event, self._data = self._event, None, []
                    yield event, data
                continue
            if line[0] == 58:  # ":" comment
                continue
            name, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":
                self._data.append(value)
            elif name == b"event":
                self._event = value

    def idle(self) -> bool:
        """Nothing pending from earlier reads: the next read starts an event."""
        return not self._buffer and not self._data and self._event is None

    def flush(self) -> Iterator[tuple[bytes | None, bytes]]:
        """Dispatch what an upstream left unterminated when it closed."""
        if self._buffer:
            yield from self.feed(b"\n\n")
        elif self._data:
            yield from self.feed(b"\n")
