"""Anthropic Messages API shapes: errors, request validation, SSE framing, token estimate.

Pure Python (no Django). See docs/protocols.md §2; bare § numbers below are its sections.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

import orjson

from .bounds import TokenBounds, json_bytes, text_bytes
from .sse import SSEParser, named_event
from .usage import anthropic_cache_writes, anthropic_prompt, count, from_anthropic

__all__ = [
    "ANTHROPIC_ERROR_TYPES",
    "IMAGE_TOKEN_ESTIMATE",
    "TranslationError",
    "anthropic_error_body",
    "anthropic_error_type_for_status",
    "anthropic_model",
    "anthropic_model_list",
    "MessagesStreamRelay",
    "anthropic_usage_counts",
    "estimate_message_tokens",
    "messages_prompt_bound",
    "message_events",
    "messages_sse_event",
    "parse_sse_events",
    "status_for_anthropic_error_type",
    "stream_invariant_violations",
    "validate_messages_request",
]


class TranslationError(ValueError):
    """A request cannot be translated; answer 400 ``invalid_request_error`` with ``.message``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------
# Errors (§2.5)
# ---------------------------------------------------------------------------

status_for_anthropic_error_type: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    # The SDK maps only 529 to OverloadedError, so overload is always sent as 529.
    "overloaded_error": 529,
}

ANTHROPIC_ERROR_TYPES = frozenset(status_for_anthropic_error_type)

_TYPE_FOR_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type_for_status(status: int) -> str:
    """Anthropic ``error.type`` for an HTTP status (ours or a backend's).

    Unlisted 4xx (408, 409, 422, …) become ``invalid_request_error``; unlisted 5xx and
    anything else ``api_error``. Send the result with ``status_for_anthropic_error_type``
    so that 503 goes out as 529.
    """
    if status in _TYPE_FOR_STATUS:
        return _TYPE_FOR_STATUS[status]
    if 400 <= status < 500:
        return "invalid_request_error"
    return "api_error"


def anthropic_error_body(error_type: str, message: str, request_id: str | None = None) -> dict:
    """``{"type":"error","error":{"type","message"},"request_id"}``."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


# ---------------------------------------------------------------------------
# Models (§2.6)
# ---------------------------------------------------------------------------

MODEL_LIST_DEFAULT_LIMIT = 20
MODEL_LIST_MAX_LIMIT = 1000


def anthropic_model(name: str, display_name: str, created: int) -> dict:
    """One model object: ``{"type":"model","id","display_name","created_at"}`` (RFC 3339)."""
    created_at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": name,
        "display_name": display_name or name,
        "created_at": created_at,
    }


def _query(scope: dict) -> dict[str, str]:
    raw = scope.get("query_string") or b""
    try:
        parsed = parse_qs(raw.decode("latin-1"), keep_blank_values=False)
    except ValueError:
        return {}
    return {k: v[-1] for k, v in parsed.items() if v}


def anthropic_model_list(objects: list[dict], scope: dict) -> dict:
    """A page of model objects in Anthropic's list shape.

    Honours ``limit`` (1–1000, default 20; an invalid value falls back to the default),
    ``after_id`` (the page after that id) and ``before_id`` (the page just before it).
    An unknown id yields an empty page. ``has_more`` says whether more exist in the
    direction of travel, as the SDK's paginator expects.
    """
    query = _query(scope)
    try:
        limit = int(query.get("limit", MODEL_LIST_DEFAULT_LIMIT))
    except ValueError:
        limit = MODEL_LIST_DEFAULT_LIMIT
    limit = min(max(limit, 1), MODEL_LIST_MAX_LIMIT)
    ids = [o["id"] for o in objects]
    after_id, before_id = query.get("after_id"), query.get("before_id")
    if before_id is not None:
        end = ids.index(before_id) if before_id in ids else 0
        start = max(end - limit, 0)
        page, has_more = objects[start:end], start > 0
    else:
        if after_id is not None:
            start = ids.index(after_id) + 1 if after_id in ids else len(objects)
        else:
            start = 0
        page = objects[start : start + limit]
        has_more = start + limit < len(objects)
    return {
        "data": page,
        "has_more": has_more,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
    }


# ---------------------------------------------------------------------------
# SSE framing (§2.4)
# ---------------------------------------------------------------------------


def messages_sse_event(event_type: str, data: dict) -> bytes:
    """One Anthropic SSE event: ``event: <type>\\ndata: <compact json>\\n\\n``."""
    return named_event(event_type, data)


PING_EVENT = messages_sse_event("ping", {"type": "ping"})


def message_events(message: dict) -> list[tuple[str, dict]]:
    """The event sequence that streams a complete Message (a backend that answered a
    stream request with a plain JSON body is replayed through this)."""
    usage = dict(message.get("usage") or {})
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 0},
    }
    events: list[tuple[str, dict]] = [
        ("message_start", {"type": "message_start", "message": start}),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    for block in message.get("content") or []:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        deltas: list[dict] = []
        if btype == "text":
            opened = {"type": "text", "text": ""}
            if block.get("text"):
                deltas.append({"type": "text_delta", "text": block["text"]})
        elif btype == "tool_use":
            opened = {**block, "input": {}}
            if block.get("input"):
                partial = orjson.dumps(block["input"]).decode()
                deltas.append({"type": "input_json_delta", "partial_json": partial})
        elif btype == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            if block.get("thinking"):
                deltas.append({"type": "thinking_delta", "thinking": block["thinking"]})
            if block.get("signature"):
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:
            opened = block
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        index += 1
    usage.setdefault("output_tokens", 0)
    delta = {
        "stop_reason": message.get("stop_reason"),
        "stop_sequence": message.get("stop_sequence"),
    }
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events


def parse_sse_events(raw: bytes | str) -> list[tuple[str | None, str]]:
    """Parse a complete SSE byte string into ``(event_name, data)`` pairs.

    ``SSEParser``'s rules (LF/CR/CRLF, comments, multi-line data, §4) over a whole
    buffer (tests, small upstream bodies), what an unterminated last event holds too.
    """
    parser = SSEParser()
    data = raw.encode() if isinstance(raw, str) else raw
    return [
        (None if name is None else name.decode(), payload.decode())
        for name, payload in (*parser.feed(data), *parser.flush())
    ]


def stream_invariant_violations(events: Iterable[tuple[str | None, dict]]) -> list[str]:
    """Check an Anthropic event sequence against the SDK accumulator's invariants (§2.4).

    Returns human-readable problems (empty list = valid). Used by tests; also handy
    for debugging a live stream.
    """
    problems: list[str] = []
    started = stopped = errored = False
    next_index = 0
    open_index: int | None = None
    block_types: dict[int, str] = {}
    json_parts: dict[int, list[str]] = {}
    saw_message_delta = False
    for pos, (name, data) in enumerate(events):
        where = f"event {pos} ({name})"
        if not isinstance(data, dict) or data.get("type") != name:
            problems.append(f"{where}: data.type {data.get('type')!r} != event name")
        if stopped or errored:
            problems.append(f"{where}: event after message_stop/error")
        if name == "error":
            errored = True
            continue
        if name == "ping":
            continue
        if not started:
            if name != "message_start":
                problems.append(f"{where}: first event is not message_start")
            started = True
            if name == "message_start":
                continue
        if name == "message_start":
            problems.append(f"{where}: duplicate message_start")
        elif name == "content_block_start":
            idx = data.get("index")
            if open_index is not None:
                problems.append(f"{where}: block {idx} started while {open_index} is open")
            if idx != next_index:
                problems.append(f"{where}: index {idx}, expected {next_index}")
            next_index += 1
            open_index = idx
            block_types[idx] = data["content_block"]["type"]
            json_parts[idx] = []
        elif name == "content_block_delta":
            idx = data.get("index")
            if idx != open_index:
                problems.append(f"{where}: delta for block {idx} but open is {open_index}")
            delta = data.get("delta", {})
            expected = {
                "text_delta": "text",
                "input_json_delta": "tool_use",
                "thinking_delta": "thinking",
                "signature_delta": "thinking",
            }.get(delta.get("type"))
            if expected != block_types.get(idx):
                problems.append(f"{where}: {delta.get('type')} on a {block_types.get(idx)} block")
            if delta.get("type") == "input_json_delta":
                json_parts[idx].append(delta.get("partial_json", ""))
            if delta.get("type") == "text_delta" and not delta.get("text"):
                problems.append(f"{where}: empty text_delta")
        elif name == "content_block_stop":
            idx = data.get("index")
            if idx != open_index:
                problems.append(f"{where}: stop for block {idx} but open is {open_index}")
            open_index = None
            if block_types.get(idx) == "tool_use":
                joined = "".join(json_parts[idx])
                if joined:
                    try:
                        parsed = orjson.loads(joined)
                    except orjson.JSONDecodeError:
                        problems.append(f"{where}: partial_json does not join to JSON: {joined!r}")
                    else:
                        if not isinstance(parsed, dict):
                            problems.append(f"{where}: tool input is not an object")
        elif name == "message_delta":
            if open_index is not None:
                problems.append(f"{where}: message_delta while block {open_index} is open")
            usage = data.get("usage")
            if not isinstance(usage, dict) or not isinstance(usage.get("output_tokens"), int):
                problems.append(f"{where}: message_delta.usage.output_tokens missing")
            saw_message_delta = True
        elif name == "message_stop":
            if not saw_message_delta:
                problems.append(f"{where}: message_stop without message_delta")
            stopped = True
        else:
            problems.append(f"{where}: unknown event")
    if started and not (stopped or errored):
        problems.append("stream ended without message_stop or error")
    return problems


# ---------------------------------------------------------------------------
# Request validation (§2.2)
# ---------------------------------------------------------------------------


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _validate_source(source: object, path: str) -> str | None:
    if not isinstance(source, dict):
        return f"{path}.source: Field required"
    stype = source.get("type")
    if stype == "base64":
        if not isinstance(source.get("media_type"), str):
            return f"{path}.source.media_type: Field required"
        if not isinstance(source.get("data"), str):
            return f"{path}.source.data: Field required"
    elif stype == "url":
        if not isinstance(source.get("url"), str):
            return f"{path}.source.url: Field required"
    elif stype == "text":
        if not isinstance(source.get("data"), str):
            return f"{path}.source.data: Input should be a valid string"
    elif not isinstance(stype, str):
        return f"{path}.source.type: Field required"
    return None


def _validate_block(block: object, path: str, *, in_tool_result: bool = False) -> str | None:
    if not isinstance(block, dict):
        return f"{path}: Input should be an object"
    btype = block.get("type")
    if not isinstance(btype, str):
        return f"{path}.type: Field required"
    cache_control = block.get("cache_control")
    if cache_control is not None and not isinstance(cache_control, dict):
        return f"{path}.cache_control: Input should be an object"
    if btype == "text":
        if not isinstance(block.get("text"), str):
            return f"{path}.text: Field required"
    elif btype in ("image", "document"):
        return _validate_source(block.get("source"), path)
    elif btype == "tool_use" and not in_tool_result:
        if not isinstance(block.get("id"), str):
            return f"{path}.id: Field required"
        if not isinstance(block.get("name"), str):
            return f"{path}.name: Field required"
        if not isinstance(block.get("input"), dict):
            return f"{path}.input: Input should be a valid dictionary"
    elif btype == "tool_result" and not in_tool_result:
        if not isinstance(block.get("tool_use_id"), str):
            return f"{path}.tool_use_id: Field required"
        content = block.get("content")
        if content is not None and not isinstance(content, str):
            if not isinstance(content, list):
                return f"{path}.content: Input should be a valid string or list"
            for i, inner in enumerate(content):
                err = _validate_block(inner, f"{path}.content.{i}", in_tool_result=True)
                if err:
                    return err
        if "is_error" in block and not isinstance(block["is_error"], bool | None):
            return f"{path}.is_error: Input should be a valid boolean"
    elif btype == "thinking":
        for field in ("thinking", "signature"):
            if not isinstance(block.get(field, ""), str):
                return f"{path}.{field}: Input should be a valid string"
    # Unknown block types pass validation; translation drops what it cannot map.
    return None


def _validate_tool_choice(tc: object) -> str | None:
    if not isinstance(tc, dict):
        return "tool_choice: Input should be an object"
    ttype = tc.get("type")
    if ttype not in ("auto", "any", "tool", "none"):
        return "tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'"
    if ttype == "tool" and not isinstance(tc.get("name"), str):
        return "tool_choice.name: Field required"
    dpt = tc.get("disable_parallel_tool_use")
    if dpt is not None and not isinstance(dpt, bool):
        return "tool_choice.disable_parallel_tool_use: Input should be a valid boolean"
    return None


def validate_messages_request(body: object, *, require_max_tokens: bool = True) -> str | None:
    """Return the first problem with a Messages request (``field.path: reason``) or None.

    ``require_max_tokens=False`` validates a ``count_tokens`` body. Checks shapes the
    translators rely on; semantic checks (model exists, limits) are the caller's job.
    """
    if not isinstance(body, dict):
        return "Request body must be a JSON object"

    model = body.get("model")
    if model is None:
        return "model: Field required"
    if not isinstance(model, str) or not model:
        return "model: Input should be a non-empty string"

    if "max_tokens" not in body or body.get("max_tokens") is None:
        if require_max_tokens:
            return "max_tokens: Field required"
    else:
        mt = body["max_tokens"]
        if not _is_int(mt):
            return "max_tokens: Input should be a valid integer"
        if mt < 1:
            return "max_tokens: Input should be greater than or equal to 1"

    messages = body.get("messages")
    if messages is None:
        return "messages: Field required"
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for i, msg in enumerate(messages):
        path = f"messages.{i}"
        if not isinstance(msg, dict):
            return f"{path}: Input should be an object"
        role = msg.get("role")
        if role is None:
            return f"{path}.role: Field required"
        if role not in ("user", "assistant"):
            return f"{path}.role: Input should be 'user' or 'assistant'"
        if "content" not in msg:
            return f"{path}.content: Field required"
        content = msg["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"{path}.content: Input should be a valid string or list of content blocks"
        for j, block in enumerate(content):
            err = _validate_block(block, f"{path}.content.{j}")
            if err:
                return err

    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            return "system: Input should be a valid string or list of text blocks"
        for j, block in enumerate(system):
            if not isinstance(block, dict) or block.get("type") != "text":
                return f"system.{j}.type: Input should be 'text'"
            err = _validate_block(block, f"system.{j}")
            if err:
                return err

    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list):
            return "stop_sequences: Input should be a valid list"
        for j, s in enumerate(stops):
            if not isinstance(s, str):
                return f"stop_sequences.{j}: Input should be a valid string"

    for field, hi in (("temperature", 1.0), ("top_p", 1.0)):
        v = body.get(field)
        if v is None:
            continue
        if not _is_number(v):
            return f"{field}: Input should be a valid number"
        if not 0.0 <= v <= hi:
            return f"{field}: Input should be between 0 and {hi:g}"
    top_k = body.get("top_k")
    if top_k is not None:
        if not _is_int(top_k):
            return "top_k: Input should be a valid integer"
        if top_k < 0:
            return "top_k: Input should be greater than or equal to 0"

    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return "tools: Input should be a valid list"
        for j, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return f"tools.{j}: Input should be an object"
            if not isinstance(tool.get("name"), str):
                return f"tools.{j}.name: Field required"
            ttype = tool.get("type")
            if ttype is not None and not isinstance(ttype, str):
                return f"tools.{j}.type: Input should be a valid string"
            schema = tool.get("input_schema")
            if ttype in (None, "custom") and not isinstance(schema, dict):
                return f"tools.{j}.input_schema: Field required"
            description = tool.get("description")
            if description is not None and not isinstance(description, str):
                return f"tools.{j}.description: Input should be a valid string"

    if body.get("tool_choice") is not None:
        err = _validate_tool_choice(body["tool_choice"])
        if err:
            return err

    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        return "stream: Input should be a valid boolean"

    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict):
            return "metadata: Input should be an object"
        uid = metadata.get("user_id")
        if uid is not None and not isinstance(uid, str):
            return "metadata.user_id: Input should be a valid string"

    thinking = body.get("thinking")
    if thinking is not None:
        if not isinstance(thinking, dict):
            return "thinking: Input should be an object"
        if not isinstance(thinking.get("type"), str):
            return "thinking.type: Field required"
        budget = thinking.get("budget_tokens")
        if thinking["type"] == "enabled" and not _is_int(budget):
            return "thinking.budget_tokens: Input should be a valid integer"
    return None


# ---------------------------------------------------------------------------
# Token estimate (§2.6 fallback)
# ---------------------------------------------------------------------------

#: Fixed charge per image/document: Anthropic bills ~(w*h)/750, capped near 1600.
IMAGE_TOKEN_ESTIMATE = 1600
_PER_MESSAGE_OVERHEAD = 4
_REQUEST_OVERHEAD = 3
_PER_TOOL_OVERHEAD = 8


def _text_bytes(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    return len(orjson.dumps(value))


def _block_cost(block: Any) -> tuple[int, int]:
    """(text bytes, fixed tokens) for one content block."""
    if isinstance(block, str):
        return _text_bytes(block), 0
    if not isinstance(block, dict):
        return 0, 0
    btype = block.get("type")
    if btype == "text":
        return _text_bytes(block.get("text") or ""), 0
    if btype in ("image", "document"):
        src = block.get("source") or {}
        if btype == "document" and src.get("type") == "text":
            return _text_bytes(src.get("data") or ""), 0
        return 0, IMAGE_TOKEN_ESTIMATE
    if btype == "tool_use":
        return _text_bytes(block.get("name") or "") + _text_bytes(block.get("input") or {}), 0
    if btype == "tool_result":
        content = block.get("content")
        if isinstance(content, list):
            b = f = 0
            for inner in content:
                ib, fi = _block_cost(inner)
                b, f = b + ib, f + fi
            return b, f
        return _text_bytes(content or ""), 0
    if btype == "thinking":
        return _text_bytes(block.get("thinking") or ""), 0
    return 0, 0


def estimate_message_tokens(body: dict) -> int:
    """Rough input-token count for a Messages (or count_tokens) body.

    Estimator: ceil(UTF-8 bytes of all text / 4) + 4 per message + 3 per request,
    tools charged as their JSON definition + 8 each, images/binary documents a flat
    ``IMAGE_TOKEN_ESTIMATE``. Used only when the backend cannot tokenize; over-
    rather than under-counts for typical English/code.
    """
    text_bytes = 0
    fixed = _REQUEST_OVERHEAD
    system = body.get("system")
    if isinstance(system, str):
        text_bytes += _text_bytes(system)
    elif isinstance(system, list):
        for block in system:
            b, f = _block_cost(block)
            text_bytes, fixed = text_bytes + b, fixed + f
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        fixed += _PER_MESSAGE_OVERHEAD
        content = msg.get("content")
        blocks = [content] if isinstance(content, str) else content or []
        for block in blocks:
            b, f = _block_cost(block)
            text_bytes, fixed = text_bytes + b, fixed + f
    for tool in body.get("tools") or []:
        if isinstance(tool, dict):
            fixed += _PER_TOOL_OVERHEAD
            text_bytes += _text_bytes(
                {k: tool.get(k) for k in ("name", "description", "input_schema") if k in tool}
            )
    return math.ceil(text_bytes / 4) + fixed


def _block_bound(block: Any, bounds: TokenBounds) -> int:
    if not isinstance(block, dict):
        return json_bytes(block)
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return text_bytes(block["text"])
    if kind == "image":
        return bounds.per_image
    if kind == "document":
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            return json_bytes(source.get("data"))
        # A PDF: its pages' text is within its bytes; each page also goes in as an image.
        return json_bytes(block) + bounds.per_image
    if kind == "tool_result" and isinstance(block.get("content"), list):
        rest = {k: v for k, v in block.items() if k != "content"}
        return json_bytes(rest) + sum(_block_bound(b, bounds) for b in block["content"])
    return json_bytes(block)


def messages_prompt_bound(body: dict, bounds: TokenBounds) -> int:
    """An upper bound of a Messages request's input tokens (see protocol/bounds.py): the
    UTF-8 bytes of the system prompt and every block (tool use, results and thinking by
    their JSON), images at ``per_image``, tools by their JSON, plus the template
    allowances (``per_request`` also covers the tool-use system prompt Anthropic adds)."""
    total = bounds.per_request
    system = body.get("system")
    if isinstance(system, list):
        total += sum(_block_bound(b, bounds) for b in system)
    else:
        total += json_bytes(system)
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += bounds.per_message
        content = message.get("content") if isinstance(message, dict) else message
        if isinstance(content, list):
            total += sum(_block_bound(b, bounds) for b in content)
        else:
            total += json_bytes(content)
    for name in ("tools", "tool_choice"):
        total += json_bytes(body.get(name))
    return total


# ---------------------------------------------------------------------------
# Usage and the passthrough stream relay (Anthropic-native backends)
# ---------------------------------------------------------------------------


def anthropic_usage_counts(usage: Any) -> tuple[int, int, int] | None:
    """(prompt, completion, cached) of an Anthropic usage object in the ledger's
    convention (``protocol.usage.from_anthropic``), or None."""
    mapped = from_anthropic(usage)
    return None if mapped is None else (mapped.prompt, mapped.completion, mapped.cached)


# The end of an SSE event: a blank line, whatever the line endings.
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r|\n\r\n")
_USAGE_KEYS = (
    "input_tokens",
    "output_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
)


def _last_event_end(buffer: bytes) -> int:
    return max(
        (i + len(sep) for sep in (b"\n\n", b"\r\r", b"\n\r\n") if (i := buffer.rfind(sep)) >= 0),
        default=0,
    )


def _events(data: bytes) -> Iterable[tuple[str | None, bytes]]:
    """(event name, raw bytes) of each complete event in ``data``, then the rest."""
    position = 0
    for match in _EVENT_END.finditer(data):
        raw = data[position : match.end()]
        position = match.end()
        parsed = parse_sse_events(raw)
        yield (parsed[0][0] if parsed else None), raw
    if position < len(data):
        yield None, data[position:]


def _split_before(data: bytes, name: bytes) -> tuple[bytes, bytes]:
    """``data`` cut before the last event called ``name`` (all of it held if none)."""
    wanted, position, cut = name.decode(), 0, 0
    for event, raw in _events(data):
        if event == wanted:
            cut = position
        position += len(raw)
    return data[:cut], data[cut:]


def _edit_events(data: bytes, name: bytes, edit) -> bytes:
    """``data`` with each event called ``name`` re-framed after ``edit(its JSON)``."""
    wanted, out = name.decode(), []
    for event, raw in _events(data):
        if event == wanted:
            try:
                payload = orjson.loads(parse_sse_events(raw)[0][1])
            except (orjson.JSONDecodeError, IndexError):
                payload = None
            if isinstance(payload, dict):
                edit(payload)
                raw = messages_sse_event(wanted, payload)
        out.append(raw)
    return b"".join(out)


class MessagesStreamRelay:
    """Relays an Anthropic-native backend's event stream to an Anthropic client.

    Bytes pass through unchanged, cut only at event boundaries (so a stream the
    upstream truncates never leaves the client half an event before our ``error``),
    except ``message_start``, whose ``message.model`` is rewritten to the public name.
    Only message_start / message_delta / message_stop / error are JSON-parsed, to
    capture usage (message_delta values override message_start's, §2.4) and the end.
    A stream converter (see the package header): the upstream's own ``message_stop`` or
    ``error`` goes through ``feed``, so ``finish()`` adds nothing and ``fail()`` adds an
    error only when the upstream sent none. An event left unterminated at EOF is dropped.
    """

    __slots__ = (
        "public_model",
        "usage",
        "cache_creation",
        "service_tier",
        "final_usage",
        "content_deltas",
        "stopped",
        "error",
        "_parser",
        "_pending",
        "_start_done",
        "_closed",
        "cost_of",
        "_held",
    )

    def __init__(self, public_model: str) -> None:
        self.public_model = public_model
        # The price finish() shows in message_delta's usage; with it, the stream from
        # the final message_delta on is held until finish() (see the package header).
        self.cost_of: Callable[[], str] | None = None
        self._held: bytes | None = None
        self.usage: dict[str, int] = {}
        self.cache_creation: object = None  # the cache writes by TTL, as the upstream said
        self.service_tier: object = None
        self.final_usage = False  # message_delta carried output_tokens
        self.content_deltas = 0
        self.stopped = False  # message_stop seen
        self.error: dict | None = None  # the upstream's error event
        self._parser = SSEParser()
        self._pending = b""
        self._start_done = False
        self._closed = False

    @property
    def finished(self) -> bool:
        return self.stopped or self.error is not None

    done = finished

    @property
    def complete(self) -> bool:
        return self.stopped

    def start(self) -> bytes:
        return b""

    def finish(self, estimated_usage: dict | None = None) -> bytes:
        if self._closed:
            return b""
        self._closed = True
        held, self._held = self._held, None
        if held is None or self.cost_of is None:
            return held or b""
        return _edit_events(held, b"message_delta", self._priced_delta)

    def _priced_delta(self, data: dict) -> None:
        if isinstance(data.get("usage"), dict):
            data["usage"]["cost"] = self.cost_of()

    def fail(self, message: str, error_type: str = "api_error") -> bytes:
        held, self._held = self._held or b"", None
        if self._closed or self.finished:
            return held
        self._closed = True
        error = {"type": "error", "error": {"type": error_type, "message": message}}
        return held + messages_sse_event("error", error)

    def feed(self, data: bytes) -> bytes:
        """Raw upstream bytes in, the bytes to send on (complete events only)."""
        if not data or self._closed:
            return b""
        for event, payload in self._parser.feed(data):
            self._observe(event, payload)
        buffer = self._pending + data if self._pending else data
        cut = _last_event_end(buffer)
        if cut == 0:
            self._pending = buffer
            return b""
        ready, self._pending = buffer[:cut], buffer[cut:]
        if not self._start_done:
            ready = self._rewrite_start(ready)
        if self.cost_of is not None:
            if self._held is not None:
                self._held += ready
                return b""
            if self.final_usage:
                ready, self._held = _split_before(ready, b"message_delta")
        return ready

    def counts(self) -> tuple[int | None, int | None, int]:
        """(prompt, completion, cached) as far as the upstream told us (None = unknown)."""
        usage = self.usage
        input_tokens = usage.get("input_tokens")
        cached = usage.get("cache_read_input_tokens", 0)
        prompt = (
            None
            if input_tokens is None
            else anthropic_prompt(input_tokens, usage.get("cache_creation_input_tokens"), cached)
        )
        completion = usage.get("output_tokens") if self.final_usage else None
        return prompt, completion, cached

    def cache_writes(self) -> tuple[int, int]:
        """(5m, 1h) cache writes as far as the upstream told us."""
        return anthropic_cache_writes(
            self.usage.get("cache_creation_input_tokens"), self.cache_creation
        )

    def _observe(self, event: bytes | None, payload: bytes) -> None:
        if event == b"content_block_delta":
            self.content_deltas += 1
            return
        if event not in (b"message_start", b"message_delta", b"message_stop", b"error"):
            return
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        if not isinstance(data, dict):
            return
        if event == b"message_stop":
            self.stopped = True
        elif event == b"error":
            error = data.get("error")
            self.error = error if isinstance(error, dict) else {"message": str(error)}
        else:
            holder = data.get("message") if event == b"message_start" else data
            usage = holder.get("usage") if isinstance(holder, dict) else None
            if isinstance(usage, dict):
                for key in _USAGE_KEYS:
                    if (n := count(usage.get(key))) is not None:
                        self.usage[key] = n
                if isinstance(usage.get("cache_creation"), dict):
                    self.cache_creation = usage["cache_creation"]
                if usage.get("service_tier") is not None:
                    self.service_tier = usage["service_tier"]
                if event == b"message_delta" and _is_int(usage.get("output_tokens")):
                    self.final_usage = True

    def _rewrite_start(self, ready: bytes) -> bytes:
        out: list[bytes] = []
        position = 0
        for match in _EVENT_END.finditer(ready):
            raw = ready[position : match.end()]
            position = match.end()
            if self._start_done:
                out.append(raw)
                continue
            parsed = parse_sse_events(raw)
            name = parsed[0][0] if parsed else None
            if name == "message_start":
                try:
                    data = orjson.loads(parsed[0][1])
                    data["message"]["model"] = self.public_model
                    raw = messages_sse_event("message_start", data)
                except (orjson.JSONDecodeError, KeyError, TypeError):
                    pass
                self._start_done = True
            elif parsed and name != "ping":
                self._start_done = True  # no message_start first: nothing to rewrite
            out.append(raw)
        out.append(ready[position:])
        return b"".join(out)
