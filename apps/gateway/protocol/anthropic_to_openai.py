"""Anthropic Messages client → OpenAI-compatible Chat Completions backend.

Request (§3.1), non-stream response (§3.2) and the chunk → event state machine (§3.3)
of docs/protocols.md. Pure Python, no Django.

Design choices where the spec leaves room:

* Server tools (a ``type`` other than absent/``"custom"``, e.g. ``web_search_20250305``)
  have no OpenAI equivalent and are dropped; forcing one via ``tool_choice`` raises
  ``TranslationError``. Tool ``strict``/``cache_control``/``type`` are never forwarded.
* ``thinking`` request parameter and thinking/redacted_thinking history blocks are
  dropped (OSS backends reject them). Backend ``reasoning_content``/``reasoning`` is
  returned as a ``thinking`` block with an empty signature (``emit_thinking=False``
  drops it instead).
* Tool-call ``arguments`` always become a JSON object (``tool_arguments``): parsed,
  repaired (control characters in strings, a truncated object), or else the text as
  ``{"_raw_arguments": "<text>"}`` so the client sees what the model produced instead
  of a silent ``{}`` or a parse error; streamed pieces are repaired as they pass.
* ``stop_reason`` follows what was emitted: any tool_use block → ``tool_use`` (Ollama
  reports "stop"), unless the answer was cut by ``length`` (→ ``max_tokens``: the last
  call is likely incomplete); ``finish_reason:"tool_calls"`` with no call →
  ``end_turn``. vLLM's matched stop string becomes ``stop_sequence`` (only if the
  client asked for it, when ``stop_sequences`` is passed). ``content_filter`` →
  ``refusal``.
* Stop sequences on servers that do not say which one matched: with
  ``match_stop_sequences`` the text is matched here (``stops``), cut before the first
  stop string and reported as ``stop_sequence``; the request then goes upstream
  without ``stop``. Tool calls after the cut are not part of the
  answer (the model would not have reached them); streams stop reading there.
* Whitespace-only text is not worth a block: it is held back and only emitted once
  real text follows, or as the sole content of an otherwise empty response.
* Streaming tool calls: the first call streams live; a call that starts while another
  tool block is open is buffered and emitted whole at the end (or before the next
  text/thinking block). Late argument fragments for the live or a buffered call are
  therefore never lost; fragments for a call already flushed (only possible if the
  backend interleaves text between one call's fragments) are dropped and counted in
  ``dropped_argument_fragments``.
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
from collections.abc import Callable
from typing import Any

import orjson

from .anthropic import TranslationError, messages_sse_event
from .openai import UpstreamChatChunks
from .stops import StopMatcher, find_stop
from .tool_arguments import ToolArgumentsStream, parse_tool_arguments
from .usage import Usage, openai_counts, openai_reasoning, to_anthropic

__all__ = [
    "ChatStreamToMessagesStream",
    "ToolNameMap",
    "TranslationError",
    "chat_response_to_message",
    "finish_reason_to_stop_reason",
    "messages_to_chat_request",
    "parse_tool_arguments",
]

_VALID_TOOL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_INVALID_TOOL_CHARS = re.compile(r"[^A-Za-z0-9_-]")


# ---------------------------------------------------------------------------
# Tool names
# ---------------------------------------------------------------------------


def _upstream_tool_name(name: str) -> str:
    if _VALID_TOOL_NAME.fullmatch(name):
        return name
    # Hash of the original keeps the rename deterministic across requests, so
    # tool_use blocks replayed in history map to the same upstream name.
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    stem = _INVALID_TOOL_CHARS.sub("_", name)[:55] or "tool"
    return f"{stem}_{digest}"


class ToolNameMap:
    """Bidirectional client ⇄ upstream tool-name mapping for one request."""

    def __init__(self) -> None:
        self._to_upstream: dict[str, str] = {}
        self._to_client: dict[str, str] = {}

    def upstream(self, client_name: str) -> str:
        """Register (if needed) and return the backend-safe name."""
        if client_name in self._to_upstream:
            return self._to_upstream[client_name]
        up = _upstream_tool_name(client_name)
        self._to_upstream[client_name] = up
        self._to_client.setdefault(up, client_name)
        return up

    def client(self, upstream_name: str) -> str:
        """Name the client declared for a backend name (unknown names pass through)."""
        return self._to_client.get(upstream_name, upstream_name)

    @property
    def renamed(self) -> dict[str, str]:
        """client name → upstream name, only for names that changed."""
        return {c: u for c, u in self._to_upstream.items() if c != u}

    def __bool__(self) -> bool:
        return bool(self.renamed)


# ---------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------


def _blocks(content: Any) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list):
        return [b for b in content if isinstance(b, dict)]
    return []


def _image_part(source: dict) -> dict | None:
    stype = source.get("type")
    if stype == "base64":
        url = f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    elif stype == "url" and source.get("url"):
        url = source["url"]
    else:
        return None  # e.g. "file" sources reference Anthropic-side storage
    return {"type": "image_url", "image_url": {"url": url}}


def _text_of_document(block: dict) -> str | None:
    src = block.get("source") or {}
    if src.get("type") == "text" and isinstance(src.get("data"), str):
        return src["data"]
    return None


def _user_parts(block: dict) -> list[dict]:
    """OpenAI user content parts for one non-tool_result Anthropic block."""
    btype = block.get("type")
    if btype == "text":
        text = block.get("text") or ""
        return [{"type": "text", "text": text}] if text else []
    if btype == "image":
        part = _image_part(block.get("source") or {})
        return [part] if part else []
    if btype == "document":
        text = _text_of_document(block)
        return [{"type": "text", "text": text}] if text else []
    return []  # thinking, server tool results, unknown: nothing a backend can use


def _tool_result_message(block: dict) -> tuple[dict, list[dict]]:
    """(role=tool message, image parts that must move to the trailing user message)."""
    content = block.get("content")
    texts: list[str] = []
    images: list[dict] = []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for inner in content:
            if not isinstance(inner, dict):
                continue
            if inner.get("type") == "text" and inner.get("text"):
                texts.append(inner["text"])
            elif inner.get("type") == "image":
                part = _image_part(inner.get("source") or {})
                if part:
                    images.append(part)
            elif inner.get("type") == "document":
                text = _text_of_document(inner)
                if text:
                    texts.append(text)
    text = "\n".join(texts)
    if block.get("is_error"):
        text = "Error: " + text
    msg = {"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")), "content": text}
    return msg, images


def _user_content(parts: list[dict]) -> str | list[dict]:
    # Plain strings are the most widely accepted shape by OSS chat templates.
    if all(p["type"] == "text" for p in parts):
        return "\n".join(p["text"] for p in parts)
    return parts


def _translate_user(blocks: list[dict]) -> list[dict]:
    tool_msgs: list[dict] = []
    parts: list[dict] = []
    for block in blocks:
        if block.get("type") == "tool_result":
            msg, images = _tool_result_message(block)
            tool_msgs.append(msg)
            parts.extend(images)
        else:
            parts.extend(_user_parts(block))
    # Tool messages first: a user message between tool_calls and tool results is a 400.
    out = tool_msgs
    if parts:
        out.append({"role": "user", "content": _user_content(parts)})
    return out


def _arguments_json(value: Any) -> str:
    # Ollama parses the arguments of replayed calls as JSON: never an empty string.
    if isinstance(value, str):
        return value if value.strip() else "{}"
    return orjson.dumps(value if value is not None else {}).decode()


def _translate_assistant(blocks: list[dict], names: ToolNameMap) -> list[dict]:
    texts: list[str] = []
    calls: list[dict] = []
    for block in blocks:
        btype = block.get("type")
        if btype == "text" and block.get("text"):
            texts.append(block["text"])
        elif btype == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id", "")),
                    "type": "function",
                    "function": {
                        "name": names.upstream(str(block.get("name", ""))),
                        "arguments": _arguments_json(block.get("input")),
                    },
                }
            )
        # thinking / redacted_thinking / server tool blocks: dropped (vLLM 400s on them)
    if not texts and not calls:
        return []
    # A string even beside tool_calls: llama-cpp-python refuses null, Ollama drops the
    # call ids of a message without string content.
    msg: dict[str, Any] = {"role": "assistant", "content": "\n".join(texts)}
    if calls:
        msg["tool_calls"] = calls
    return [msg]


def _merge_same_role(messages: list[dict]) -> list[dict]:
    """Merge adjacent user/user and assistant/assistant messages (many templates need alternation)."""
    out: list[dict] = []
    for msg in messages:
        prev = out[-1] if out else None
        if prev is None or prev["role"] != msg["role"] or msg["role"] not in ("user", "assistant"):
            out.append(msg)
            continue
        if msg["role"] == "user":
            a, b = prev["content"], msg["content"]
            if isinstance(a, str) and isinstance(b, str):
                prev["content"] = f"{a}\n{b}"
            else:
                pa = [{"type": "text", "text": a}] if isinstance(a, str) else a
                pb = [{"type": "text", "text": b}] if isinstance(b, str) else b
                prev["content"] = pa + pb
        else:
            texts = [t for t in (prev.get("content"), msg.get("content")) if t]
            prev["content"] = "\n".join(texts)
            calls = prev.get("tool_calls", []) + msg.get("tool_calls", [])
            if calls:
                prev["tool_calls"] = calls
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(
            b["text"]
            for b in system
            if isinstance(b, dict) and b.get("type") == "text" and b.get("text")
        )
    return ""


def _is_client_tool(tool: dict) -> bool:
    return tool.get("type") in (None, "custom")


def _function_tool(tool: dict, names: ToolNameMap) -> dict:
    schema = tool.get("input_schema")
    # Copy only the schema; the tool's own "type"/"cache_control"/"strict" stay out (#30557).
    params = dict(schema) if isinstance(schema, dict) else {}
    params.setdefault("type", "object")
    if params.get("type") == "object":
        params.setdefault("properties", {})
    fn: dict[str, Any] = {"name": names.upstream(str(tool.get("name", "")))}
    if tool.get("description"):
        fn["description"] = tool["description"]
    fn["parameters"] = params
    return {"type": "function", "function": fn}


def messages_to_chat_request(body: dict, *, upstream_model: str) -> tuple[dict, ToolNameMap]:
    """Translate a validated Anthropic Messages body into a Chat Completions body.

    Raises ``TranslationError`` when nothing usable remains (→ 400 invalid_request_error).
    """
    names = ToolNameMap()
    out: dict[str, Any] = {"model": upstream_model}
    messages: list[dict] = []

    system = _system_text(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})

    # Merge consecutive same-role turns first so one user turn's tool_results stay together.
    turns: list[tuple[str, list[dict]]] = []
    for msg in body.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        role, blocks = msg.get("role"), _blocks(msg.get("content"))
        if turns and turns[-1][0] == role:
            turns[-1][1].extend(blocks)
        else:
            turns.append((role, blocks))

    translated: list[dict] = []
    for role, blocks in turns:
        if role == "user":
            translated.extend(_translate_user(blocks))
        elif role == "assistant":
            translated.extend(_translate_assistant(blocks, names))
    translated = _merge_same_role(translated)
    if not translated:
        raise TranslationError(
            "messages: no content could be translated for this model "
            "(only empty, thinking or unsupported content blocks)"
        )
    messages.extend(translated)
    out["messages"] = messages

    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    stops = body.get("stop_sequences")
    if stops:
        out["stop"] = list(stops)
    for field in ("temperature", "top_p", "top_k"):
        if body.get(field) is not None:
            out[field] = body[field]
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("user_id"), str):
        out["user"] = metadata["user_id"]

    tools = [t for t in body.get("tools") or [] if isinstance(t, dict)]
    client_tools = [t for t in tools if _is_client_tool(t)]
    declared = {str(t.get("name", "")) for t in client_tools}
    if client_tools:
        out["tools"] = [_function_tool(t, names) for t in client_tools]

    tc = body.get("tool_choice")
    if isinstance(tc, dict):
        ttype = tc.get("type")
        if ttype == "tool":
            name = str(tc.get("name", ""))
            if name not in declared:
                raise TranslationError(
                    f"tool_choice.name: tool {name!r} is not a client tool in tools"
                )
            choice: Any = {"type": "function", "function": {"name": names.upstream(name)}}
        else:
            choice = {"auto": "auto", "any": "required", "none": "none"}.get(ttype, "auto")
        if client_tools:
            out["tool_choice"] = choice
            if tc.get("disable_parallel_tool_use") and ttype != "none":
                out["parallel_tool_calls"] = False
        elif ttype == "any":
            raise TranslationError("tool_choice: 'any' requires at least one client tool")

    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out, names


# ---------------------------------------------------------------------------
# Shared response helpers
# ---------------------------------------------------------------------------

_STOP_REASON = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def finish_reason_to_stop_reason(
    finish_reason: str | None,
    matched_stop: Any = None,
    *,
    saw_tool_use: bool = False,
    stop_sequences: list[str] | None = None,
) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence) for an OpenAI finish_reason.

    ``tool_use`` is decided by what was emitted, not by the backend's claim: any
    tool_use block forces it (Ollama says "stop"), none forbids it.

    ``matched_stop`` is vLLM's ``choices[].stop_reason`` (string = matched stop text,
    int = stop token id). When ``stop_sequences`` is given, only a string the client
    asked for is reported (server-side stop strings would confuse it).
    """
    reason = _STOP_REASON.get(finish_reason or "", "end_turn")
    if reason == "max_tokens":
        return reason, None
    if saw_tool_use:
        return "tool_use", None
    if reason == "tool_use":  # the backend claimed tool calls but sent none
        reason = "end_turn"
    if (
        reason == "end_turn"
        and isinstance(matched_stop, str)
        and matched_stop
        and (stop_sequences is None or matched_stop in stop_sequences)
    ):
        return "stop_sequence", matched_stop
    return reason, None


def _new_tool_id() -> str:
    return "toolu_" + secrets.token_hex(12)


def _anthropic_usage(usage: Any) -> dict:
    """An OpenAI usage object shown as Anthropic's (counts it lacks are 0)."""
    prompt, completion, cached = openai_counts(usage)
    return to_anthropic(Usage(prompt or 0, completion or 0, cached or 0))


def _reasoning_of(obj: dict) -> str | None:
    # vLLM < 0.10 / DeepSeek: reasoning_content; newer vLLM, Ollama, OpenRouter: reasoning.
    for key in ("reasoning_content", "reasoning"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
    return None


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


# ---------------------------------------------------------------------------
# Non-stream response
# ---------------------------------------------------------------------------


def chat_response_to_message(
    resp: dict,
    *,
    model: str,
    names: ToolNameMap,
    stop_sequences: list[str] | None = None,
    match_stop_sequences: bool = False,
    emit_thinking: bool = True,
) -> dict:
    """Chat Completions response → Anthropic Message (§3.2).

    ``match_stop_sequences``: the backend was not sent ``stop_sequences``; the text is
    cut at the first one here."""
    choices = resp.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}

    content: list[dict] = []
    reasoning = _reasoning_of(message)
    if reasoning and emit_thinking:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})

    text = _content_text(message.get("content")) or (message.get("refusal") or "")
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, dict)]
    if isinstance(message.get("function_call"), dict):  # legacy shape
        calls.append({"function": message["function_call"]})
    matched = find_stop(text, stop_sequences) if match_stop_sequences and stop_sequences else None
    if matched is not None:
        text = text[: matched[0]]
        calls = []  # generated after the stop string: the answer ended before them
    if text and (text.strip() or not calls):
        content.append({"type": "text", "text": text})

    seen_ids: set[str] = set()
    for call in calls:
        fn = call.get("function") or {}
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id or call_id in seen_ids:
            call_id = _new_tool_id()
        seen_ids.add(call_id)
        content.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": names.client(str(fn.get("name") or "")),
                "input": parse_tool_arguments(fn.get("arguments")),
            }
        )

    if matched is not None:
        stop_reason, stop_sequence = "stop_sequence", matched[1]
    else:
        stop_reason, stop_sequence = finish_reason_to_stop_reason(
            choice.get("finish_reason"),
            choice.get("stop_reason"),
            saw_tool_use=bool(calls),
            stop_sequences=stop_sequences,
        )
    backend_id = str(resp.get("id") or secrets.token_hex(12))
    return {
        "id": backend_id if backend_id.startswith("msg_") else "msg_" + backend_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": _anthropic_usage(resp.get("usage")),
    }


# ---------------------------------------------------------------------------
# Streaming: OpenAI chunks → Anthropic events (§3.3)
# ---------------------------------------------------------------------------


class _ToolCall:
    __slots__ = ("args", "block_index", "id", "name", "repair", "state")

    def __init__(self) -> None:
        self.id: str | None = None
        self.name: str | None = None
        self.args: list[str] = []  # fragments not yet emitted
        self.state = "pending"  # pending → live → closed
        self.block_index: int | None = None
        self.repair = ToolArgumentsStream()


class ChatStreamToMessagesStream:
    """Stateful converter from an upstream chat-completions stream to Anthropic events.

    A stream converter (see the package header): ``start()`` once, ``feed(data)`` per
    read of upstream bytes, then ``finish()`` at ``[DONE]``/EOF, or ``fail(...)`` on
    upstream failure. If the upstream ended without any ``finish_reason``
    (``complete`` is false) the stream was probably truncated: ``fail()``, not
    ``finish()`` (§4).

    ``match_stop_sequences``: the backend was not sent ``stop_sequences``; text is
    matched here (a possible start of one is held back) and, once one matched,
    ``stopped_on_sequence`` (so ``done``) is true and later chunks add only usage: the
    driver stops reading the upstream and calls ``finish()``.
    """

    def __init__(
        self,
        model: str,
        names: ToolNameMap,
        message_id: str,
        input_tokens: int,
        *,
        stop_sequences: list[str] | None = None,
        match_stop_sequences: bool = False,
        emit_thinking: bool = True,
    ) -> None:
        self.model = model
        self.names = names
        self.message_id = message_id if message_id.startswith("msg_") else "msg_" + message_id
        self.input_tokens_estimate = input_tokens
        self.cost_of: Callable[[], str] | None = None  # the price finish() shows
        self._stop_sequences = stop_sequences
        matcher = StopMatcher(stop_sequences or ()) if match_stop_sequences else None
        self._stops = matcher if matcher else None
        self._emit_thinking = emit_thinking

        self._started = False
        self._closed = False
        self._upstream = UpstreamChatChunks()  # its [DONE] or error ends it
        self.usage: dict | None = None  # the upstream's last usage object
        self.content_chunks = 0  # chunks that produced a content_block_delta
        self._next_index = 0
        self._open: str | None = None  # "text" | "thinking" | "tool"
        self._open_tool: _ToolCall | None = None
        self._pending_ws = ""  # whitespace-only text held back
        self._tools: dict[int, _ToolCall] = {}
        self._tool_order: list[_ToolCall] = []
        self._ids: set[str] = set()
        self._emitted_chars = 0

        self._finish_reason: str | None = None
        self._matched_stop: Any = None
        self._prompt_tokens: int | None = None
        self._completion_tokens: int | None = None
        self._cached_tokens: int | None = None
        self.service_tier: object = None  # the usage chunk's
        self._stop_reason: str | None = None
        self._stop_sequence: str | None = None
        self.dropped_argument_fragments = 0

    # -- public properties -------------------------------------------------

    @property
    def prompt_tokens(self) -> int | None:
        return self._prompt_tokens

    @property
    def completion_tokens(self) -> int | None:
        return self._completion_tokens

    @property
    def cached_tokens(self) -> int | None:
        return self._cached_tokens

    @property
    def reasoning_tokens(self) -> int:
        return openai_reasoning(self.usage, self._completion_tokens)

    @property
    def output_tokens(self) -> int:
        """Backend count if seen, else ceil(emitted chars / 4)."""
        if self._completion_tokens is not None:
            return self._completion_tokens
        return math.ceil(self._emitted_chars / 4)

    @property
    def finish_reason(self) -> str | None:
        """Raw upstream finish_reason (None = none seen yet)."""
        return self._finish_reason

    @property
    def stop_reason(self) -> str | None:
        """Anthropic stop_reason sent in message_delta (None until ``finish()``)."""
        return self._stop_reason

    @property
    def stop_sequence(self) -> str | None:
        return self._stop_sequence

    @property
    def stopped_on_sequence(self) -> bool:
        """The gateway matched one of the client's stop sequences in the text."""
        return self._stops is not None and self._stops.matched is not None

    @property
    def saw_tool_use(self) -> bool:
        return bool(self._tool_order)

    @property
    def complete(self) -> bool:
        """The upstream ended its answer: [DONE], a finish_reason, or our stop sequence."""
        return self.error is None and (
            self._upstream.ended or self.stopped_on_sequence or self._finish_reason is not None
        )

    @property
    def done(self) -> bool:
        """Stop reading: the upstream said its last word, or a stop sequence matched."""
        return self._upstream.ended or self.stopped_on_sequence

    # -- event helpers -----------------------------------------------------

    def _ev(self, event_type: str, data: dict) -> bytes:
        return messages_sse_event(event_type, {"type": event_type, **data})

    def _open_block(self, kind: str, block: dict) -> bytes:
        out = self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = kind
        out += self._ev("content_block_start", {"index": index, "content_block": block})
        return out

    def _delta(self, delta: dict) -> bytes:
        return self._ev("content_block_delta", {"index": self._next_index - 1, "delta": delta})

    def _close_block(self) -> bytes:
        if self._open is None:
            return b""
        out = b""
        if self._open_tool is not None:
            closing = self._open_tool.repair.finish()
            if closing:
                out = self._delta({"type": "input_json_delta", "partial_json": closing})
            self._open_tool.state = "closed"
            self._open_tool = None
        self._open = None
        return out + self._ev("content_block_stop", {"index": self._next_index - 1})

    def _start_tool(self, call: _ToolCall) -> bytes:
        if not call.id or call.id in self._ids:
            call.id = _new_tool_id()
        self._ids.add(call.id)
        out = self._open_block(
            "tool",
            {
                "type": "tool_use",
                "id": call.id,
                "name": self.names.client(call.name or ""),
                "input": {},
            },
        )
        call.state = "live"
        call.block_index = self._next_index - 1
        self._open_tool = call
        return out + self._flush_args(call)

    def _flush_args(self, call: _ToolCall) -> bytes:
        joined = "".join(call.args)
        call.args = []
        if not joined:
            return b""
        self._emitted_chars += len(joined)
        piece = call.repair.feed(joined)
        if not piece:
            return b""
        return self._delta({"type": "input_json_delta", "partial_json": piece})

    def _flush_pending_tools(self) -> bytes:
        """Emit every buffered call whole (each start, args, stop)."""
        out = b""
        for call in self._tool_order:
            if call.state == "pending":
                out += self._start_tool(call)
                out += self._close_block()
        return out

    # -- state machine -----------------------------------------------------

    def _usage(self, output_tokens: int) -> dict:
        """The Anthropic usage object: backend numbers if seen, else the prompt estimate."""
        cached = self._cached_tokens or 0
        prompt = self._prompt_tokens
        if prompt is None:
            prompt = self.input_tokens_estimate + cached
        return to_anthropic(Usage(prompt, output_tokens, cached))

    def start(self) -> bytes:
        """message_start (+ ping). Idempotent.

        Calling ``feed()`` without ``start()`` emits message_start lazily, using the
        first chunk's usage when the backend sends it early (vLLM
        ``continuous_usage_stats``), so even clients that read cache tokens from
        message_start only get real numbers.
        """
        if self._started:
            return b""
        self._started = True
        message = {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(0),
        }
        return self._ev("message_start", {"message": message}) + self._ev("ping", {})

    def feed(self, data: bytes) -> bytes:
        """Raw upstream bytes in (b"" once it closed), Anthropic events out."""
        if self._closed or self._upstream.ended:
            return b""
        out = b""
        for chunk in self._upstream.read(data):
            piece = self._feed_chunk(chunk)
            if piece:
                if b"content_block_delta" in piece:
                    self.content_chunks += 1
                out += piece
        return out

    @property
    def error(self) -> dict | None:
        """The upstream's in-band error, if one ended its stream."""
        return self._upstream.error

    def _feed_chunk(self, chunk: dict) -> bytes:
        """Translate one parsed upstream chunk into zero or more Anthropic events."""
        usage = chunk.get("usage")
        if isinstance(usage, dict):  # cumulative when present on every chunk, so keep latest
            prompt, completion, cached = openai_counts(usage)
            if prompt is not None:
                self._prompt_tokens = prompt
            if completion is not None:
                self._completion_tokens = completion
            if cached is not None:
                self._cached_tokens = cached
            self.usage = usage
            self.service_tier = chunk.get("service_tier")
        out = self.start()
        if self.stopped_on_sequence:
            return out

        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return out  # usage-only or Azure prompt_filter_results chunk
        choice = next((c for c in choices if isinstance(c, dict) and c.get("index", 0) == 0), None)
        if choice is None:
            return out

        delta = choice.get("delta")
        if isinstance(delta, dict) and delta:
            out += self._feed_delta(delta)

        # Remember only: usage usually arrives in a later chunk.
        if choice.get("finish_reason"):
            self._finish_reason = choice["finish_reason"]
            if choice.get("stop_reason") is not None:
                self._matched_stop = choice["stop_reason"]
        return out

    def _feed_delta(self, delta: dict) -> bytes:
        out = b""
        reasoning = _reasoning_of(delta)
        if reasoning and self._emit_thinking:
            if self._open != "thinking":
                out += self._flush_pending_tools()
                out += self._open_block(
                    "thinking", {"type": "thinking", "thinking": "", "signature": ""}
                )
            self._emitted_chars += len(reasoning)
            out += self._delta({"type": "thinking_delta", "thinking": reasoning})

        text = _content_text(delta.get("content")) or (delta.get("refusal") or "")
        stops = self._stops
        if text and stops is not None:
            text = stops.feed(text)
            if stops.matched is not None:
                self._emitted_chars += stops.cut_chars
                return out + (self._feed_text(text) if text else b"")
        if text:
            out += self._feed_text(text)

        calls = delta.get("tool_calls")
        if isinstance(calls, list):  # [] (vLLM beside content) is simply absent
            for pos, tc in enumerate(calls):
                if isinstance(tc, dict):
                    out += self._feed_tool_delta(tc, pos)
        elif isinstance(delta.get("function_call"), dict):  # legacy single call
            out += self._feed_tool_delta({"index": 0, "function": delta["function_call"]}, 0)
        return out

    def _feed_text(self, text: str) -> bytes:
        if self._open != "text":
            if not (self._pending_ws + text).strip():
                self._pending_ws += text
                return b""
            text, self._pending_ws = self._pending_ws + text, ""
            out = self._flush_pending_tools()
            out += self._open_block("text", {"type": "text", "text": ""})
        else:
            out = b""
        self._emitted_chars += len(text)
        return out + self._delta({"type": "text_delta", "text": text})

    def _resolve_index(self, tc: dict, pos: int) -> int:
        index = tc.get("index")
        if isinstance(index, int) and not isinstance(index, bool):
            return index
        # No index (some Ollama/llama.cpp builds): a new id means a new call.
        tc_id = tc.get("id")
        if isinstance(tc_id, str) and tc_id and all(c.id != tc_id for c in self._tool_order):
            return max(self._tools, default=-1) + 1
        if self._tool_order:
            known = [k for k, c in self._tools.items() if c.id == tc_id and tc_id]
            return known[0] if known else max(self._tools)
        return pos

    def _feed_tool_delta(self, tc: dict, pos: int) -> bytes:
        index = self._resolve_index(tc, pos)
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else {}
        call = self._tools.get(index)
        if call is None:
            call = self._tools[index] = _ToolCall()
            self._tool_order.append(call)
        # First id/name win; repeats are ignored, never concatenated.
        if call.id is None and isinstance(tc.get("id"), str) and tc["id"]:
            call.id = tc["id"]
        if call.name is None and isinstance(fn.get("name"), str) and fn["name"]:
            call.name = fn["name"]
        args = fn.get("arguments")
        if isinstance(args, dict):  # some Ollama builds send an object
            args = orjson.dumps(args).decode()
        if isinstance(args, str) and args:
            if call.state == "closed":
                self.dropped_argument_fragments += 1
            else:
                call.args.append(args)

        out = b""
        if call.state == "pending" and call.name is not None and self._open != "tool":
            self._pending_ws = ""  # whitespace before a tool call is noise
            out += self._start_tool(call)
        elif call.state == "live":
            out += self._flush_args(call)
        return out

    def finish(self, estimated_usage: dict | None = None) -> bytes:
        """Close everything: last content_block_stop, message_delta, message_stop (the
        output count is the upstream's, else our own estimate: ``estimated_usage`` is
        not needed)."""
        if self._closed:
            return b""
        out = self.start()
        if self._stops is not None:
            held = self._stops.flush()
            if held:
                out += self._feed_text(held)
        if self._pending_ws and self._next_index == 0 and not self._tool_order:
            # Whitespace-only answer: keep it rather than return no content at all.
            out += self._open_block("text", {"type": "text", "text": ""})
            out += self._delta({"type": "text_delta", "text": self._pending_ws})
            self._pending_ws = ""
        out += self._close_block()
        out += self._flush_pending_tools()
        self._closed = True

        if self.stopped_on_sequence:
            stop_reason, stop_sequence = "stop_sequence", self._stops.matched
        else:
            stop_reason, stop_sequence = finish_reason_to_stop_reason(
                self._finish_reason,
                self._matched_stop,
                saw_tool_use=self.saw_tool_use,
                stop_sequences=self._stop_sequences,
            )
        self._stop_reason, self._stop_sequence = stop_reason, stop_sequence
        usage = self._usage(self.output_tokens)
        if self.cost_of is not None:
            usage["cost"] = self.cost_of()
        out += self._ev(
            "message_delta",
            {"delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence}, "usage": usage},
        )
        out += self._ev("message_stop", {})
        return out

    def fail(self, message: str, error_type: str = "api_error") -> bytes:
        """``event: error`` after a started stream; nothing is emitted afterwards."""
        if self._closed:
            return b""
        self._closed = True
        return self._ev("error", {"error": {"type": error_type, "message": message}})
