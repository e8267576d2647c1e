"""OpenAI Chat Completions client → Anthropic-native Messages backend.

Reverse of ``anthropic_to_openai`` (docs/protocols.md §3). Pure Python.

Design choices where the spec leaves room:

* All ``system``/``developer`` messages, wherever they appear, are joined with ``\\n``
  into the top-level ``system`` string (Anthropic has no mid-conversation system role).
* ``max_tokens`` defaults to ``DEFAULT_MAX_TOKENS`` (Anthropic requires it);
  ``max_completion_tokens`` wins over ``max_tokens`` when both are sent.
* ``temperature`` is clamped to Anthropic's 0..1 (not scaled: OpenAI's default 1
  must stay 1). Whitespace-only stop strings are dropped (Anthropic rejects them).
* ``n > 1`` and non-image/PDF content parts (``input_audio``, ``file`` ids) raise
  ``TranslationError``; ``response_format``, ``seed``, penalties, ``logprobs``,
  ``logit_bias`` and ``reasoning_effort`` are dropped.
* Response thinking is exposed as the non-standard ``reasoning_content`` field
  (vLLM/DeepSeek convention); redacted thinking is dropped.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson

from .anthropic import TranslationError
from .openai import scrub_upstream_text, stream_error_chunk
from .sse import SSEParser
from .usage import (
    Usage,
    anthropic_cache_writes,
    anthropic_counts,
    anthropic_prompt,
    from_anthropic_counts,
    to_openai,
)

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "MessagesStreamToChatStream",
    "TranslationError",
    "chat_to_messages_request",
    "message_response_to_chat",
    "stop_reason_to_finish_reason",
]

DEFAULT_MAX_TOKENS = 4096

_FINISH_REASON = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def stop_reason_to_finish_reason(stop_reason: str | None) -> str:
    return _FINISH_REASON.get(stop_reason or "", "stop")


# ---------------------------------------------------------------------------
# Request
# ---------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    """Text of a string or a list of text/refusal parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") in ("text", "refusal"):
                out.append(part.get("text") or part.get("refusal") or "")
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    return ""


def _data_url_source(url: str) -> dict | None:
    """``data:<media>;base64,<data>`` → Anthropic base64 source."""
    header, sep, data = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        return None
    media_type = header[5:].split(";", 1)[0] or "application/octet-stream"
    return {"type": "base64", "media_type": media_type, "data": data}


def _image_block(part: dict, path: str) -> dict:
    image_url = part.get("image_url")
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str) or not url:
        raise TranslationError(f"{path}.image_url.url: Field required")
    if url.startswith("data:"):
        source = _data_url_source(url)
        if source is None:
            raise TranslationError(f"{path}.image_url.url: only base64 data URLs are supported")
        return {"type": "image", "source": source}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any, path: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        return []
    blocks: list[dict] = []
    for j, part in enumerate(content):
        ppath = f"{path}.{j}"
        if isinstance(part, str):
            part = {"type": "text", "text": part}
        if not isinstance(part, dict):
            continue
        ptype = part.get("type")
        if ptype == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif ptype == "image_url":
            blocks.append(_image_block(part, ppath))
        elif ptype == "file":
            file = part.get("file") or {}
            source = _data_url_source(file.get("file_data") or "")
            if source is None:
                raise TranslationError(
                    f"{ppath}.file: only inline file_data (base64 data URL) is supported"
                )
            blocks.append({"type": "document", "source": source})
        else:
            raise TranslationError(f"{ppath}.type: content part {ptype!r} is not supported")
    return blocks


def _parse_arguments(arguments: Any) -> dict:
    """Tool-call arguments string → object (Anthropic requires an object)."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw_arguments": arguments}
    return value if isinstance(value, dict) else {"_raw_arguments": arguments}


def _assistant_blocks(msg: dict, legacy_ids: list[str]) -> list[dict]:
    blocks: list[dict] = []
    text = _text_of(msg.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    for k, call in enumerate(msg.get("tool_calls") or []):
        if not isinstance(call, dict):
            continue
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": str(call.get("id") or f"toolu_missing_{len(legacy_ids)}_{k}"),
                "name": str(fn.get("name") or ""),
                "input": _parse_arguments(fn.get("arguments")),
            }
        )
    fc = msg.get("function_call")
    if isinstance(fc, dict):  # legacy: the id is invented and reused by the "function" reply
        legacy_id = f"toolu_legacy_{len(legacy_ids)}"
        legacy_ids.append(legacy_id)
        blocks.append(
            {
                "type": "tool_use",
                "id": legacy_id,
                "name": str(fc.get("name") or ""),
                "input": _parse_arguments(fc.get("arguments")),
            }
        )
    return blocks


def _tool_result_block(msg: dict, tool_use_id: str) -> dict:
    content = msg.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    if isinstance(content, list):
        content = [
            {"type": "text", "text": p["text"]}
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and p.get("text")
        ]
    # An empty result is one without content (Anthropic refuses empty text blocks).
    if content and isinstance(content, str | list):
        block["content"] = content
    return block


def _merge_turns(turns: list[dict]) -> list[dict]:
    out: list[dict] = []
    for turn in turns:
        if out and out[-1]["role"] == turn["role"]:
            out[-1]["content"].extend(turn["content"])
        else:
            out.append(turn)
    return out


def _tool_choice(tc: Any, parallel: Any) -> dict | None:
    choice: dict[str, Any] | None
    if tc is None:
        choice = None
    elif tc == "none":
        return {"type": "none"}
    elif tc == "auto":
        choice = {"type": "auto"}
    elif tc == "required":
        choice = {"type": "any"}
    elif isinstance(tc, dict):
        fn = tc.get("function") if isinstance(tc.get("function"), dict) else tc
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("tool_choice.function.name: Field required")
        choice = {"type": "tool", "name": name}
    else:
        raise TranslationError(f"tool_choice: unsupported value {tc!r}")
    if parallel is False:
        choice = choice or {"type": "auto"}
        choice["disable_parallel_tool_use"] = True
    return choice


def chat_to_messages_request(body: dict, *, upstream_model: str) -> dict:
    """Translate a validated Chat Completions body into an Anthropic Messages body.

    Raises ``TranslationError`` for features with no Anthropic equivalent.
    """
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise TranslationError("n: only n=1 is supported for this model")

    system_parts: list[str] = []
    turns: list[dict] = []
    legacy_ids: list[str] = []
    for i, msg in enumerate(body.get("messages") or []):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        path = f"messages.{i}.content"
        if role in ("system", "developer"):
            text = _text_of(msg.get("content"))
            if text:
                system_parts.append(text)
        elif role == "user":
            blocks = _user_blocks(msg.get("content"), path)
            if blocks:
                turns.append({"role": "user", "content": blocks})
        elif role == "assistant":
            blocks = _assistant_blocks(msg, legacy_ids)
            if blocks:
                turns.append({"role": "assistant", "content": blocks})
        elif role == "tool":
            block = _tool_result_block(msg, str(msg.get("tool_call_id") or ""))
            turns.append({"role": "user", "content": [block]})
        elif role == "function":
            tool_id = legacy_ids[-1] if legacy_ids else "toolu_legacy_0"
            turns.append({"role": "user", "content": [_tool_result_block(msg, tool_id)]})

    # Consecutive tool messages (and a following user message) become one user turn.
    turns = _merge_turns(turns)
    if not turns:
        raise TranslationError("messages: at least one non-system message with content is required")
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1].get("type") == "text":
        # Anthropic rejects a final assistant (prefill) turn ending in whitespace.
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
        if not last["content"][-1]["text"]:
            last["content"].pop()
            if not last["content"]:
                turns.pop()
    if not turns:
        raise TranslationError("messages: at least one non-system message with content is required")

    max_tokens = body.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = body.get("max_tokens")
    out: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": max_tokens if max_tokens is not None else DEFAULT_MAX_TOKENS,
        "messages": turns,
    }
    if system_parts:
        out["system"] = "\n".join(system_parts)

    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    stops = [s for s in stops if isinstance(s, str) and s.strip()]
    if stops:
        out["stop_sequences"] = stops

    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if isinstance(body.get("top_k"), int):
        out["top_k"] = body["top_k"]

    user = body.get("user") or body.get("safety_identifier")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}

    tools: list[dict] = []
    for j, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict):
            continue
        if tool.get("type", "function") != "function":
            raise TranslationError(f"tools.{j}.type: only function tools are supported")
        tools.append(_anthropic_tool(tool.get("function") or {}))
    for fn in body.get("functions") or []:  # legacy
        if isinstance(fn, dict):
            tools.append(_anthropic_tool(fn))
    tc = body.get("tool_choice", body.get("function_call"))
    if tools:
        out["tools"] = tools
        choice = _tool_choice(tc, body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice

    if body.get("stream"):
        out["stream"] = True
    return out


def _anthropic_tool(fn: dict) -> dict:
    params = fn.get("parameters")
    tool: dict[str, Any] = {"name": str(fn.get("name") or "")}
    if fn.get("description"):
        tool["description"] = fn["description"]
    if not isinstance(params, dict):
        params = {"type": "object", "properties": {}}
    elif "type" not in params:
        # Anthropic requires an object schema; OpenAI takes {} for "no arguments".
        params = {"type": "object", **params}
    tool["input_schema"] = params
    return tool


# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------


def _chat_usage(usage: Any) -> dict:
    """An Anthropic usage object shown as OpenAI's (counts it lacks are 0)."""
    input_tokens, output_tokens, write, read = anthropic_counts(usage)
    return to_openai(from_anthropic_counts(input_tokens or 0, output_tokens or 0, write, read))


def _chat_id(backend_id: Any) -> str:
    return "chatcmpl-" + str(backend_id or "")


def message_response_to_chat(resp: dict, *, model: str, created: int | None = None) -> dict:
    """Anthropic Message → ``chat.completion`` object."""
    texts: list[str] = []
    thinking: list[str] = []
    calls: list[dict] = []
    for block in resp.get("content") or []:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype == "text":
            texts.append(block.get("text") or "")
        elif btype == "thinking":
            thinking.append(block.get("thinking") or "")
        elif btype == "tool_use":
            calls.append(
                {
                    "id": str(block.get("id") or ""),
                    "type": "function",
                    "function": {
                        "name": str(block.get("name") or ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    text = "".join(texts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    if calls:
        message["tool_calls"] = calls
    finish = stop_reason_to_finish_reason(resp.get("stop_reason"))
    if calls and finish == "stop":
        finish = "tool_calls"
    return {
        "id": _chat_id(resp.get("id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "system_fingerprint": None,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish}],
        "usage": _chat_usage(resp.get("usage")),
    }


class MessagesStreamToChatStream:
    """An Anthropic event stream (raw upstream bytes) → OpenAI chunks.

    A stream converter (see the package header): ``feed`` returns encoded
    ``data: …\\n\\n`` lines. After ``message_stop`` it has sent ``[DONE]``; after an
    ``error`` event it has sent the error object (its message through ``scrub``); both
    set ``done``, and later calls return ``b""``. If the upstream ends without either,
    call ``fail(...)`` (§4).
    """

    def __init__(
        self,
        model: str,
        include_usage: bool,
        chat_id: str,
        created: int,
        *,
        scrub: Callable[[str], str] = scrub_upstream_text,
    ) -> None:
        self.model = model
        self.scrub = scrub
        self._parser = SSEParser()
        self.error: dict | None = None  # the upstream's error event's object
        self.content_deltas = 0  # content_block_delta events seen
        self.final_usage = False  # message_delta carried output_tokens
        self._stopped = False
        self.include_usage = include_usage
        self.chat_id = chat_id
        self.created = created
        self._role_sent = False
        self._done = False
        self._tool_count = 0
        # anthropic block index → {"type", "tool" (OpenAI tool index), "input", "got_delta"}
        self._blocks: dict[int, dict] = {}
        self._input_tokens: int | None = None
        self._output_tokens: int | None = None
        self._cache_read: int | None = None
        self._cache_creation: int | None = None
        self._cache_creation_ttl: object = None  # usage.cache_creation, as the upstream said
        self.service_tier: object = None
        self._stop_reason: str | None = None
        self._finish_sent = False
        # The price shown in the usage chunk (see the package header), and whether the
        # end (usage chunk, [DONE]) waits for finish() to price it.
        self.cost_of: Callable[[], str] | None = None
        self._end_pending = False

    # -- properties --------------------------------------------------------

    @property
    def prompt_tokens(self) -> int | None:
        if self._input_tokens is None:
            return None
        return anthropic_prompt(self._input_tokens, self._cache_creation, self._cache_read)

    @property
    def completion_tokens(self) -> int | None:
        return self._output_tokens

    @property
    def cached_tokens(self) -> int | None:
        return self._cache_read

    def cache_writes(self) -> tuple[int, int]:
        """(5m, 1h) cache writes as far as the upstream told us."""
        return anthropic_cache_writes(self._cache_creation, self._cache_creation_ttl)

    @property
    def stop_reason(self) -> str | None:
        """Anthropic stop_reason from message_delta."""
        return self._stop_reason

    @property
    def finish_reason(self) -> str | None:
        if self._stop_reason is None:
            return None
        return self._finish_for(self._stop_reason)

    @property
    def done(self) -> bool:
        return self._done

    @property
    def complete(self) -> bool:
        """message_stop arrived (and [DONE] went out)."""
        return self._stopped

    @property
    def usage(self) -> dict | None:
        """The upstream's usage as far as told (message_delta's values over message_start's)."""
        if self._input_tokens is None and self._output_tokens is None:
            return None
        usage = {"input_tokens": self._input_tokens, "output_tokens": self._output_tokens}
        if self._cache_read is not None:
            usage["cache_read_input_tokens"] = self._cache_read
        if self._cache_creation is not None:
            usage["cache_creation_input_tokens"] = self._cache_creation
        return usage

    def start(self) -> bytes:
        return b""

    # -- helpers -----------------------------------------------------------

    def _finish_for(self, stop_reason: str | None) -> str:
        finish = stop_reason_to_finish_reason(stop_reason)
        return "tool_calls" if self._tool_count and finish == "stop" else finish

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        payload: dict[str, Any] = {
            "id": self.chat_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [
                {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            ],
        }
        if self.include_usage:
            payload["usage"] = None
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def _take_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        # message_delta values are cumulative and override message_start (§2.4).
        input_tokens, output_tokens, write, read = anthropic_counts(usage)
        if input_tokens is not None:
            self._input_tokens = input_tokens
        if output_tokens is not None:
            self._output_tokens = output_tokens
        if read is not None:
            self._cache_read = read
        if write is not None:
            self._cache_creation = write
        if isinstance(usage.get("cache_creation"), dict):
            self._cache_creation_ttl = usage["cache_creation"]
        if usage.get("service_tier") is not None:
            self.service_tier = usage["service_tier"]

    def _tool_delta(self, tool_index: int, function: dict, **extra: Any) -> bytes:
        return self._chunk({"tool_calls": [{"index": tool_index, **extra, "function": function}]})

    # -- events ------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Raw upstream bytes in (b"" once it closed), chat chunks out."""
        if self._done:
            return b""
        out = b""
        for event, payload in self._parser.feed(data) if data else self._parser.flush():
            if event is None or event == b"ping":
                continue
            try:
                parsed = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            out += self._event(event.decode("utf-8", "replace"), parsed)
            if self._done:
                break
        return out

    def _event(self, event_type: str, data: Any) -> bytes:
        if self._done or not isinstance(data, dict):
            return b""
        if event_type == "content_block_delta":
            self.content_deltas += 1
        elif event_type == "message_delta":
            usage = data.get("usage")
            if isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int):
                self.final_usage = True
        if event_type == "message_start":
            message = data.get("message") or {}
            self._take_usage(message.get("usage"))
            return b"" if self._role_sent else self._chunk({"content": ""})
        if event_type == "content_block_start":
            return self._block_start(data)
        if event_type == "content_block_delta":
            return self._block_delta(data)
        if event_type == "content_block_stop":
            block = self._blocks.get(data.get("index"))
            if block and block["tool"] is not None and not block["got_delta"] and block["input"]:
                # Input given whole in content_block_start and never streamed.
                args = orjson.dumps(block["input"]).decode()
                return self._tool_delta(block["tool"], {"arguments": args})
            return b""
        if event_type == "message_delta":
            self._take_usage(data.get("usage"))
            delta = data.get("delta") or {}
            self._stop_reason = delta.get("stop_reason") or self._stop_reason
            return self._finish_chunk()
        if event_type == "message_stop":
            out = self._finish_chunk()
            self._done = self._stopped = True
            if self.cost_of is not None:
                self._end_pending = True
                return out
            if self.include_usage:
                out += self._usage_chunk()
            return out + b"data: [DONE]\n\n"
        if event_type == "error":
            err = data.get("error")
            self.error = err if isinstance(err, dict) else {"message": str(err)}
            err = err if isinstance(err, dict) else {}
            etype = "invalid_request_error" if err.get("type") == "invalid_request_error" else None
            said = scrub_upstream_text(self.scrub(str(err.get("message") or "")))
            return self.fail(said or "upstream error", etype or "server_error")
        return b""  # ping and unknown events

    def _finish_chunk(self) -> bytes:
        if self._finish_sent:
            return b""
        self._finish_sent = True
        return self._chunk({}, self._finish_for(self._stop_reason))

    def _usage_chunk(self, cost: str | None = None) -> bytes:
        usage = Usage(self.prompt_tokens or 0, self._output_tokens or 0, self._cache_read or 0)
        shown = to_openai(usage)
        if cost is not None:
            shown["cost"] = cost
        payload = {
            "id": self.chat_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": shown,
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def _block_start(self, data: dict) -> bytes:
        block = data.get("content_block") or {}
        index = data.get("index")
        btype = block.get("type")
        state: dict[str, Any] = {"type": btype, "tool": None, "input": None, "got_delta": False}
        self._blocks[index] = state
        if btype == "tool_use":
            state["tool"] = self._tool_count
            state["input"] = block.get("input") if isinstance(block.get("input"), dict) else {}
            self._tool_count += 1
            return self._tool_delta(
                state["tool"],
                {"name": str(block.get("name") or ""), "arguments": ""},
                id=str(block.get("id") or f"call_{self._tool_count}"),
                type="function",
            )
        if btype == "text" and block.get("text"):
            return self._chunk({"content": block["text"]})
        if btype == "thinking" and block.get("thinking"):
            return self._chunk({"reasoning_content": block["thinking"]})
        return b""

    def _block_delta(self, data: dict) -> bytes:
        state = self._blocks.get(data.get("index"))
        delta = data.get("delta") or {}
        dtype = delta.get("type")
        if dtype == "text_delta" and delta.get("text"):
            return self._chunk({"content": delta["text"]})
        if dtype == "thinking_delta" and delta.get("thinking"):
            return self._chunk({"reasoning_content": delta["thinking"]})
        if dtype == "input_json_delta" and state and state["tool"] is not None:
            partial = delta.get("partial_json") or ""
            if not partial:
                return b""
            state["got_delta"] = True
            return self._tool_delta(state["tool"], {"arguments": partial})
        return b""  # signature_delta, citations_delta, unknown

    def finish(self, estimated_usage: dict | None = None) -> bytes:
        """The end (finish chunk, usage chunk if asked, [DONE]) unless message_stop sent it."""
        out = b"" if self._end_pending else self._event("message_stop", {})
        if self._end_pending:  # held by message_stop: priced now
            self._end_pending = False
            usage = self._usage_chunk(self.cost_of()) if self.include_usage else b""
            out += usage + b"data: [DONE]\n\n"
        return out

    def fail(self, message: str, error_type: str = "server_error") -> bytes:
        """``data: {"error": …}`` after a started stream; nothing follows."""
        if self._done:
            return b""
        self._done = True
        return stream_error_chunk(message, error_type)
