"""Content-filter shapes on both surfaces (no Django): the texts a check reads, the
results written into answers, and the stream filters that sit between a relay and the
client.

OpenAI surface (docs/protocols.md §1.6, Azure's shapes):
  * prompt: ``prompt_filter_results: [{"prompt_index": 0, "content_filter_results": …}]``
    at the top level of a completion; in a stream, a first chunk with ``choices: []``
    and ``prompt_filter_results`` (same id/model as the rest, so SDK helpers accumulate
    it like any chunk);
  * completion: ``content_filter_results`` on every choice (streams: on the choice of
    the chunk that carries ``finish_reason``); a block withholds the content and ends
    with ``finish_reason: "content_filter"``.
Anthropic surface: ``prompt_filter_results`` as an extra top-level field of the Message
(streams: of ``message_start.message``), ``content_filter_results`` as an extra field of
the Message (streams: of ``message_delta``); a block ends with ``stop_reason: "refusal"``
(streams: content_block_stop for an open block, message_delta, message_stop). SDKs keep
unknown fields, so nothing breaks.
"""

from __future__ import annotations

from typing import Any

import orjson

from apps.gateway.protocol.sse import SSEParser
from apps.moderation.scanner import StreamGuard

WITHHELD_REFUSAL = "The completion was withheld by this API key's content policy."


# --------------------------------------------------------------------------- texts


# Tool-call arguments and reasoning are text a model produced (or a client forged) like
# any other: they are checked too, each part on its own line so words never merge.
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def _parts_text(content: Any, out: list[str]) -> None:
    if isinstance(content, str):
        out.append(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, dict):
                text = part.get("text")
                if isinstance(text, str):
                    out.append(text)
                elif part.get("type") == "tool_result":
                    _parts_text(part.get("content"), out)
                else:
                    _block_extra_text(part, out)


def _block_extra_text(block: dict, out: list[str]) -> None:
    """An Anthropic block's non-``text`` text: tool_use input, thinking."""
    kind = block.get("type")
    if kind in ("tool_use", "server_tool_use") and block.get("input") is not None:
        out.append(orjson.dumps(block["input"]).decode())
    elif kind == "thinking" and isinstance(block.get("thinking"), str):
        out.append(block["thinking"])


def _chat_message_text(message: dict, out: list[str]) -> None:
    _parts_text(message.get("content"), out)
    for name in _REASONING_FIELDS:
        if isinstance(message.get(name), str):
            out.append(message[name])
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            out.append(function["arguments"])
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and isinstance(legacy.get("arguments"), str):
        out.append(legacy["arguments"])


def chat_prompt_text(body: dict) -> str:
    """Every message's text (all roles: a client may forge assistant turns)."""
    out: list[str] = []
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            _chat_message_text(message, out)
    return "\n".join(out)


def messages_prompt_text(body: dict) -> str:
    out: list[str] = []
    _parts_text(body.get("system"), out)
    for message in body.get("messages") or ():
        if isinstance(message, dict):
            _parts_text(message.get("content"), out)
    return "\n".join(out)


def choice_text(choice: Any) -> str:
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        return ""
    out: list[str] = []
    _chat_message_text(message, out)
    return "\n".join(out)


def message_text(message: dict) -> str:
    out: list[str] = []
    for block in message.get("content") or ():
        if isinstance(block, dict):
            if block.get("type") == "text":
                out.append(str(block.get("text") or ""))
            else:
                _block_extra_text(block, out)
    return "\n".join(out)


def chat_delta_text(delta: dict) -> str:
    """The text a stream's ``delta`` adds (a delta has a message's fields, in pieces)."""
    out: list[str] = []
    _chat_message_text(delta, out)
    return "".join(out)


def message_delta_text(delta: dict) -> str:
    """The text an Anthropic ``content_block_delta`` adds (text, tool input, thinking)."""
    for name in ("text", "partial_json", "thinking"):
        value = delta.get(name)
        if isinstance(value, str):
            return value
    return ""


def prompt_filter_results(results: dict) -> list[dict]:
    return [{"prompt_index": 0, "content_filter_results": results}]


def withhold_choice(choice: dict, results: dict) -> None:
    """A blocked choice: content withheld, finish_reason content_filter."""
    message = choice.get("message")
    if isinstance(message, dict):
        message["content"] = None
        message["refusal"] = WITHHELD_REFUSAL
        for name in ("tool_calls", "function_call", "reasoning_content", "audio"):
            message.pop(name, None)
    choice["finish_reason"] = "content_filter"
    choice["content_filter_results"] = results


def withhold_message(message: dict, results: dict) -> None:
    message["content"] = []
    message["stop_reason"] = "refusal"
    message["stop_sequence"] = None
    message["content_filter_results"] = results


def openai_content_filter_error(results: dict) -> dict[str, Any]:
    """The extra fields of Azure's prompt-blocked 400 (merged into the error object)."""
    return {
        "status": 400,
        "innererror": {
            "code": "ResponsibleAIPolicyViolation",
            "content_filter_result": results,
        },
    }


# --------------------------------------------------------------------------- streams


class ChatChunkFilter:
    """Between a chat-completions relay and the client: ``data:`` frames in, the frames
    safe to send out. ``guard`` None = only the prompt results to show."""

    def __init__(self, guard: StreamGuard | None, prompt_results: list | None) -> None:
        self.guard = guard
        self.prompt_results = prompt_results
        self._buffer = b""
        self._ident: dict[str, Any] | None = None
        self._indexes: set[int] = set()

    @property
    def blocked(self) -> bool:
        return self.guard is not None and self.guard.blocked

    @property
    def delivered_content_chunks(self) -> int:
        return self.guard.delivered_text_items if self.guard is not None else 0

    delivered = delivered_content_chunks  # what a block bills, as MessageEventFilter's

    def _frames(self, data: bytes) -> list[bytes]:
        buffer = self._buffer + data
        *frames, self._buffer = buffer.split(b"\n\n")
        return [f for f in frames if f]

    def _first(self, chunk: dict) -> bytes:
        self._ident = {
            "id": chunk.get("id", ""),
            "object": "chat.completion.chunk",
            "created": chunk.get("created", 0),
            "model": chunk.get("model", ""),
        }
        if self.prompt_results is None:
            return b""
        prompt_chunk = {**self._ident, "choices": [], "prompt_filter_results": self.prompt_results}
        return b"data: " + orjson.dumps(prompt_chunk) + b"\n\n"

    async def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for frame in self._frames(data):
            payload = frame[6:] if frame.startswith(b"data: ") else None
            chunk = None
            if payload is not None and payload[:1] == b"{":
                try:
                    chunk = orjson.loads(payload)
                except orjson.JSONDecodeError:
                    chunk = None
            if isinstance(chunk, dict) and self._ident is None and "error" not in chunk:
                out.append(self._first(chunk))
            if self.guard is None:
                out.append(frame + b"\n\n")
                continue
            text, final = "", False
            if isinstance(chunk, dict) and isinstance(chunk.get("choices"), list):
                parts = []
                for choice in chunk["choices"]:
                    if not isinstance(choice, dict):
                        continue
                    index = choice.get("index", 0)
                    if isinstance(index, int):
                        self._indexes.add(index)
                    delta = choice.get("delta")
                    if isinstance(delta, dict):
                        parts.append(chat_delta_text(delta))
                    if choice.get("finish_reason") is not None:
                        final = True
                text = "".join(parts)
            item = (frame, chunk if final else None)
            for released in await self.guard.push(item, text, final=final):
                out.append(self._render(released))
            if self.guard.blocked:
                break
        return b"".join(out)

    async def finish(self, tail: bytes) -> bytes:
        """The relay's last bytes (usage chunk, [DONE] or an error): what is still held
        is checked first."""
        out = [await self.feed(tail)] if tail else []
        if self.guard is not None and not self.guard.blocked:
            out.extend(self._render(item) for item in await self.guard.flush())
        if self._buffer and not self.blocked:
            out.append(self._buffer)
            self._buffer = b""
        return b"".join(out)

    def _render(self, item: tuple[bytes, dict | None]) -> bytes:
        frame, final_chunk = item
        verdict = self.guard.verdict if self.guard is not None else None
        if final_chunk is None or verdict is None:
            return frame + b"\n\n"
        for choice in final_chunk.get("choices") or ():
            if isinstance(choice, dict) and choice.get("finish_reason") is not None:
                choice["content_filter_results"] = verdict.results
        return b"data: " + orjson.dumps(final_chunk) + b"\n\n"

    def blocked_chunk(self, fallback_id: str, fallback_model: str, created: int) -> bytes:
        """The chunk that ends a blocked stream: finish_reason content_filter + results."""
        ident = self._ident or {
            "id": fallback_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": fallback_model,
        }
        results = self.guard.verdict.results if self.guard and self.guard.verdict else {}
        chunk = {
            **ident,
            "choices": [
                {
                    "index": index,
                    "delta": {},
                    "logprobs": None,
                    "finish_reason": "content_filter",
                    "content_filter_results": results,
                }
                for index in sorted(self._indexes or {0})
            ],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


def _event(name: bytes, payload: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


class MessageEventFilter:
    """Between an Anthropic-shaped relay and the client: SSE bytes in, the events safe to
    send out (re-framed one by one; comments dropped)."""

    def __init__(self, guard: StreamGuard | None, prompt_results: list | None) -> None:
        self.guard = guard
        self.prompt_results = prompt_results
        self._parser = SSEParser()
        self.open_block: int | None = None  # as the client has seen it
        self.delivered_deltas = 0

    @property
    def blocked(self) -> bool:
        return self.guard is not None and self.guard.blocked

    @property
    def delivered(self) -> int:
        """What a block bills: the content deltas the client got."""
        return self.delivered_deltas

    async def feed(self, data: bytes) -> bytes:
        return await self._events(self._parser.feed(data))

    async def finish(self, tail: bytes) -> bytes:
        out = [await self.feed(tail)] if tail else []
        out.append(await self._events(self._parser.flush()))
        if self.guard is not None and not self.guard.blocked:
            out.extend(self._release(item) for item in await self.guard.flush())
        return b"".join(out)

    async def _events(self, events) -> bytes:
        out: list[bytes] = []
        for name, payload in events:
            if name is None:
                continue
            data = None
            text, final = "", False
            if name == b"message_start" and self.prompt_results is not None:
                data = _loads(payload)
                if isinstance(data, dict) and isinstance(data.get("message"), dict):
                    data["message"]["prompt_filter_results"] = self.prompt_results
                    payload = orjson.dumps(data)
            elif name == b"content_block_delta" and self.guard is not None:
                data = _loads(payload)
                delta = data.get("delta") if isinstance(data, dict) else None
                if isinstance(delta, dict):
                    text = message_delta_text(delta)
            elif name in (b"content_block_start", b"content_block_stop", b"message_delta"):
                data = _loads(payload)
                final = name == b"message_delta"
            item = (name, payload, data if isinstance(data, dict) else None)
            if self.guard is None:
                out.append(self._release(item))
                continue
            for released in await self.guard.push(item, text, final=final):
                out.append(self._release(released))
            if self.guard.blocked:
                break
        return b"".join(out)

    def _release(self, item: tuple[bytes, bytes, dict | None]) -> bytes:
        name, payload, data = item
        if name == b"content_block_start" and data is not None:
            self.open_block = data.get("index")
        elif name == b"content_block_stop":
            self.open_block = None
        elif name == b"content_block_delta":
            self.delivered_deltas += 1
        elif name == b"message_delta" and data is not None and self.guard is not None:
            verdict = self.guard.verdict
            if verdict is not None:
                data["content_filter_results"] = verdict.results
                payload = orjson.dumps(data)
        return _event(name, payload)

    def blocked_events(self, output_tokens: int) -> bytes:
        results = self.guard.verdict.results if self.guard and self.guard.verdict else {}
        out = []
        if self.open_block is not None:
            stop = {"type": "content_block_stop", "index": self.open_block}
            out.append(_event(b"content_block_stop", orjson.dumps(stop)))
            self.open_block = None
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": "refusal", "stop_sequence": None},
            "usage": {"output_tokens": output_tokens},
            "content_filter_results": results,
        }
        out.append(_event(b"message_delta", orjson.dumps(delta)))
        out.append(_event(b"message_stop", b'{"type":"message_stop"}'))
        return b"".join(out)


def _loads(payload: bytes) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
