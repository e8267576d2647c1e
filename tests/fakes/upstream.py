"""A fake inference server for the tests (run as a separate process): OpenAI-compatible
(POST /v1/chat/completions) and Anthropic-native (POST /v1/messages and
/v1/messages/count_tokens, answering in Anthropic's format: content blocks, tool_use,
stop_sequence, event streams with pings and input_json_delta).

Behaviour is steered by directives in the user/system messages:
- "#status=503", "#chunks=20", "#delay_ms=50", "#cut=3" (drop the connection after 3
  chunks), "#mid_error" ("#mid_error=leak": its message carries secrets), "#no_usage",
  "#hang", "#unterminated_end" (the finish_reason event without its blank line, then the
  close);
- "#silent" (a stream's headers, then nothing), "#retry_after=N" (with "#status=429": a
  retry-after header), "#for=MODEL" (the message's directives apply only to requests for
  that upstream model: one message steers one deployment);
- "#say=i_will_kill_you" (the answer's words: the underscores are spaces; after the
  "#chunks" words when both are given) and "#sayrev=uoy_llik" (the same, written reversed
  so the prompt itself reads as nothing);
- Anthropic route: "#cache_read=N" and "#cache_create=N" (cache token counts in its usage),
  "#cache_create_1h=N" (N of those written with the 1-hour TTL: usage.cache_creation),
  "#input_tokens=N" (its input_tokens), "#service_tier=X" (usage.service_tier);
- chat route: "#prompt_tokens=N" and "#cached=N" (the usage's prompt and cached counts),
  "#reasoning=N" (completion_tokens_details.reasoning_tokens), "#service_tier=X" (the
  answer's, and every stream chunk's),
  "#omit=completion_tokens,prompt_tokens_details" (usage without those fields);
- tools: "#tool_calls=N" calls a tool until the conversation holds N tool results
  (default 1), then answers; a tool call cut by max_tokens (below the 5 tokens a call
  takes) ends with "length"; "#args=newline|truncated|notjson" makes its arguments a raw
  newline inside a string, an object cut short (finish_reason "length") or not JSON;
- any route: "#prompt_x=N" reports N times the gateway's ⌈bytes/4⌉-style prompt estimate
  (a chat template that adds a long system prompt), "#completion_tokens=N" reports N
  completion tokens whatever it said (a server ignoring max_tokens), "#error=KIND" answers
  an error body as real servers shape it (see ``_error_body``; "#error=key" quotes the
  API key it received), with "#status=N" or the kind's usual status;
  "#fail_model=NAME" keeps "#error" and "#status" to requests for upstream models whose
  name starts with NAME (the others answer normally: a fallback served by the same fake).

Under /llama/v1/... it behaves as llama-cpp-python's server: a chat request its pydantic
schema (tests/fakes/llama_schema.py) refuses is an HTTP 500 with its JSON error; a stop
string ends the answer before it, stripped, with "stop" and no ``stop_reason``; a cut tool
call still says "tool_calls"; streams carry no usage (it ignores ``stream_options``).

"#gate=NAME" (chat and embeddings routes) holds the request until the test opens that gate: POST
/_gates/NAME (every request already waiting, and later ones, go on; /_reset closes them).

"--delay-ms N" (command line) makes every chat answer wait N ms before its first byte: a
slower server, for the tests of latency-based balancing.

It records every request it received and counts requests in flight and cancelled streams:
GET /_stats, POST /_reset.
"""

import argparse
import asyncio
import base64
import re
import struct
import time
import uuid

import orjson
from aiohttp import web
from llama_schema import chat_request_errors

STATE = {"requests": [], "in_flight": 0, "max_in_flight": 0, "cancelled": 0, "completed": 0}
DIRECTIVE = re.compile(r"#(\w+)(?:=([\w.,-]+))?")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _scoped(text: str, model: object) -> dict[str, str]:
    """A message's directives; none when it says "#for=MODEL" and the request is for
    another (upstream) model, so one message steers one deployment only."""
    found = {k: v or "1" for k, v in DIRECTIVE.findall(text)}
    if "for" in found and found.pop("for") != model:
        return {}
    return found


def _directives(body: dict) -> dict[str, str]:
    found: dict[str, str] = {}
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("user", "system"):
            found.update(_scoped(_text_of(message.get("content")), body.get("model")))
    return found


def _words(directives: dict[str, str]) -> list[str]:
    said = directives.get("say") or (directives.get("sayrev") or "")[::-1]
    default = "0" if said else "5"
    words = [f"w{i}" for i in range(int(directives.get("chunks", default)))]
    return words + [w for w in said.split("_") if w]


def _prompt_tokens(body: dict) -> int:
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in body.get("messages") or [])


def _inflated(directives: dict[str, str], texts: list[str], per_item: int, fixed: int):
    """N × (⌈UTF-8 bytes / 4⌉ + per_item per text + fixed) for "#prompt_x=N", else None."""
    if "prompt_x" not in directives:
        return None
    estimate = -(-sum(len(t.encode()) for t in texts) // 4) + per_item * len(texts) + fixed
    return int(directives["prompt_x"]) * estimate


def _reported_completion(directives: dict[str, str], tokens: int) -> int:
    return int(directives["completion_tokens"]) if "completion_tokens" in directives else tokens


MALFORMED_ARGUMENTS = {
    "newline": '{"text": "line one\nline two", "city": "Oslo"}',
    "truncated": '{"city": "Oslo", "note": "bring an umbr',
    "notjson": "city=Oslo, days=2",
}


def _tool_arguments(directives: dict[str, str]) -> str:
    """A tool call's arguments: the "#say"/"#sayrev" words when given (as a message to send)."""
    if "args" in directives:
        return MALFORMED_ARGUMENTS[directives["args"]]
    if "say" in directives or "sayrev" in directives:
        return orjson.dumps({"message": " ".join(_words(directives))}).decode()
    return '{"city": "Oslo"}'


def _answer(
    body: dict, directives: dict[str, str]
) -> tuple[list[str], list | None, str, str | None]:
    """(words, tool_calls, finish_reason, matched stop string) the fake model produces.

    The matched stop string is reported as vLLM does (``choices[].stop_reason``)."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    results = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "tool")
    rounds = int(directives.get("tool_calls", "1"))
    wants_tool = last.get("role") != "tool" or results < rounds
    if body.get("tools") and body.get("tool_choice") != "none" and wants_tool:
        tool = body["tools"][0]["function"]["name"]
        arguments, finish = _tool_arguments(directives), "tool_calls"
        if directives.get("args") == "truncated":
            finish = "length"
        max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
        if isinstance(max_tokens, int) and max_tokens < 5:
            arguments, finish = arguments[: max_tokens * 3], "length"
        call = {
            "id": "call_" + uuid.uuid4().hex[:8],
            "type": "function",
            "function": {"name": tool, "arguments": arguments},
        }
        return [], [call], finish, None
    if last.get("role") == "tool":
        return ["The", "tool", "said:", _text_of(last.get("content"))], None, "stop", None
    words = _words(directives)
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    for i, word in enumerate(words):
        if word in stops:
            return words[:i], None, "stop", word
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens < len(words):
        return words[:max_tokens], None, "length", None
    return words, None, "stop", None


def _llama(request: web.Request) -> bool:
    return request.path.startswith("/llama/")


def _received_credential(request: web.Request) -> str:
    return request.headers.get("Authorization") or request.headers.get("x-api-key", "")


def _leaky_message(request: web.Request) -> str:
    """An error message echoing what a careless server may: the credentials it received,
    its own URL, an internal hostname and IP address, and a key of ours."""
    received = _received_credential(request)
    return (
        f"Invalid request to http://{request.host}{request.path} (pod vllm-0.inference.svc"
        f".cluster.local:8000, 10.0.0.7:8000) with {received}; "
        f"api_key={received.removeprefix('Bearer ')} and tg-Zx8Qm3LkT0pWc9YvB1nR4sHd6fJa2Ge7uKiO5lX0"
        "; max_tokens must be at most 4096"
    )


def _for_model(found: dict[str, str], body: dict) -> dict[str, str]:
    """With "#fail_model=NAME", the failure directives only for upstream models NAME…."""
    if "fail_model" in found and not str(body.get("model")).startswith(found["fail_model"]):
        found.pop("error", None)
        found.pop("status", None)
    return found


CONTEXT_ERRORS = {
    "context": {
        "message": "This model's maximum context length is 4096 tokens. However, your "
        "messages resulted in 5000 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    },
    "vllm_context": {
        "message": "This model's maximum context length is 2048 tokens. However, you "
        "requested 3000 tokens (2990 in the messages, 10 in the completion). Please reduce "
        "the length of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    "llama_context": {
        "code": 400,
        "message": "the request exceeds the available context size, try increasing it",
        "type": "exceed_context_size_error",
        "n_prompt_tokens": 4476,
        "n_ctx": 4096,
    },
    "anthropic_context": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 208000 tokens > 200000 maximum",
    },
}


def _error_body(request: web.Request, directives: dict[str, str]) -> web.Response | None:
    """#error=detail (FastAPI's validation list, 422: vLLM, llama-cpp-python),
    text (a plain-text 500: llama-cpp-python), ollama ({"error": "..."}, 400),
    leak (an OpenAI-shaped 400 whose message carries secrets and internal addresses),
    key (a 401 quoting the API key it received, bare, as OpenAI's "Incorrect API key
    provided" does, in the route's own shape); prompts too long as servers say it:
    context (OpenAI's context_length_exceeded), vllm_context, llama_context (llama.cpp's
    exceed_context_size_error), anthropic_context ("prompt is too long"); content_filter
    (Azure's prompt refusal, 400)."""
    kind = directives.get("error")
    if kind is None:
        return None
    default = {"detail": 422, "text": 500, "key": 401}.get(kind, 400)
    status = int(directives.get("status", default))
    if kind == "detail":
        detail = [
            {
                "type": "missing",
                "loc": ["body", "messages", 0, "content"],
                "msg": "Field required",
                "input": {"role": "user"},
            },
            {
                "type": "less_than_equal",
                "loc": ["body", "temperature"],
                "msg": "Input should be less than or equal to 2",
                "input": 7,
            },
        ]
        return web.json_response({"detail": detail}, status=status)
    if kind == "text":
        return web.Response(
            text="Requested tokens (5000) exceed context window of 4096", status=status
        )
    if kind in CONTEXT_ERRORS:
        error = CONTEXT_ERRORS[kind]
        if "/messages" in request.path:
            return web.json_response({"type": "error", "error": error}, status=status)
        return web.json_response({"error": error}, status=status)
    if kind == "content_filter":
        error = {
            "message": "The response was filtered due to the prompt triggering content policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
        }
        return web.json_response({"error": error}, status=status)
    if kind == "ollama":
        return web.json_response({"error": 'model "fake" does not support tools'}, status=status)
    if kind == "key":
        key = _received_credential(request).removeprefix("Bearer ")
        message = f"Incorrect API key provided: {key}. Check the key and retry."
        if "/messages" in request.path:
            error = {"type": "authentication_error", "message": message}
            return web.json_response({"type": "error", "error": error}, status=status)
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        return web.json_response({"error": error}, status=status)
    if "/messages" in request.path:
        error = {"type": "invalid_request_error", "message": _leaky_message(request)}
        return web.json_response({"type": "error", "error": error}, status=status)
    error = {"message": _leaky_message(request), "type": "invalid_request_error", "code": None}
    return web.json_response({"error": error}, status=status)


async def chat(request: web.Request) -> web.StreamResponse:
    raw = await request.read()
    body = orjson.loads(raw)
    STATE["requests"].append(
        {
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": body,
            "path": request.path,
        }
    )
    if _llama(request) and (refusal := chat_request_errors(body)) is not None:
        error = {"message": refusal, "type": "internal_server_error", "param": None, "code": None}
        return web.json_response({"error": error}, status=500)
    directives = _for_model(_directives(body), body)
    STATE["in_flight"] += 1
    STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
    try:
        if "reject_stream_options" in directives and "stream_options" in body:
            return web.json_response(
                {
                    "error": {
                        "message": "Unrecognized request argument: stream_options",
                        "type": "invalid_request_error",
                    }
                },
                status=400,
            )
        if (failure := _error_body(request, directives)) is not None:
            return failure
        if "status" in directives:
            status = int(directives["status"])
            retry_after = directives.get("retry_after")
            return web.json_response(
                {
                    "error": {
                        "message": f"fake failure {status}",
                        "type": "server_error",
                        "code": status,
                    }
                },
                status=status,
                headers={"retry-after": retry_after} if retry_after else None,
            )
        if "hang" in directives:
            await asyncio.sleep(3600)
        if "hold_ms" in directives:
            await asyncio.sleep(int(directives["hold_ms"]) / 1000)
        if "gate" in directives:
            await _gate(directives["gate"]).wait()
        if DELAY_S:
            await asyncio.sleep(DELAY_S)
        words, tool_calls, finish, matched = _answer(body, directives)
        llama = _llama(request)
        if llama:
            matched = None
            if tool_calls:
                finish = "tool_calls"
        n = body.get("n") or 1
        prompt = _prompt_tokens(body)
        texts = [_text_of(m.get("content")) for m in body.get("messages") or []]
        prompt = _inflated(directives, texts, 4, 3) or prompt
        usage = {
            "prompt_tokens": int(directives.get("prompt_tokens", prompt)),
            "completion_tokens": _reported_completion(
                directives, len(words) * n + (5 if tool_calls else 0)
            ),
            "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": int(directives.get("cached", "0"))},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if "reasoning" in directives:
            usage["completion_tokens_details"] = {"reasoning_tokens": int(directives["reasoning"])}
        for field in directives.get("omit", "").split(","):
            usage.pop(field, None)
        cid, created, model = "chatcmpl-" + uuid.uuid4().hex[:10], int(time.time()), body["model"]
        if not body.get("stream"):
            choices = [
                {
                    "index": i,
                    "finish_reason": finish,
                    **({} if llama else {"stop_reason": matched}),
                    "logprobs": None,
                    "message": {
                        "role": "assistant",
                        "content": " ".join(words) or None,
                        "tool_calls": tool_calls,
                    },
                }
                for i in range(n)
            ]
            answer = {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": choices,
            }
            if "service_tier" in directives:
                answer["service_tier"] = directives["service_tier"]
            if "no_usage" not in directives:
                answer["usage"] = usage
            STATE["completed"] += 1
            return web.Response(body=orjson.dumps(answer), content_type="application/json")
        return await _stream(
            request,
            body,
            directives,
            words,
            tool_calls,
            (finish, matched, llama),
            usage,
            (cid, created, model),
        )
    finally:
        STATE["in_flight"] -= 1


async def _stream(request, body, directives, words, tool_calls, finished, usage, ident):
    cid, created, model = ident
    finish, matched, llama = finished
    stop_field = {} if llama else {"stop_reason": matched}
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    if "service_tier" in directives:
        base["service_tier"] = directives["service_tier"]
    include_usage = (
        (body.get("stream_options") or {}).get("include_usage")
        and "no_usage" not in directives
        and not _llama(request)
    )
    delay = int(directives.get("delay_ms", "0")) / 1000
    cut = int(directives["cut"]) if "cut" in directives else None
    n = body.get("n") or 1
    if "silent" in directives:
        await asyncio.sleep(3600)  # headers sent, then nothing: a stuck server

    def event(choices, **extra) -> bytes:
        chunk = {**base, "choices": choices, **extra}
        if include_usage:
            chunk.setdefault("usage", None)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    try:
        for i in range(n):
            await response.write(
                event(
                    [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ]
                )
            )
        if tool_calls:
            call = tool_calls[0]
            await response.write(
                event(
                    [
                        {
                            "index": 0,
                            "delta": {
                                "tool_calls": [
                                    {
                                        "index": 0,
                                        "id": call["id"],
                                        "type": "function",
                                        "function": {
                                            "name": call["function"]["name"],
                                            "arguments": "",
                                        },
                                    }
                                ]
                            },
                            "finish_reason": None,
                        }
                    ]
                )
            )
            arguments = call["function"]["arguments"]
            for piece in (arguments[:8], arguments[8:]):
                await response.write(
                    event(
                        [
                            {
                                "index": 0,
                                "delta": {
                                    "tool_calls": [{"index": 0, "function": {"arguments": piece}}]
                                },
                                "finish_reason": None,
                            }
                        ]
                    )
                )
        for position, word in enumerate(words):
            if cut is not None and position >= cut:
                request.transport.close()
                return response
            if position == len(words) // 2 and "mid_error" in directives:
                said = (
                    _leaky_message(request)
                    if directives["mid_error"] == "leak"
                    else "fake mid-stream failure"
                )
                error = {"error": {"message": said, "type": "server_error"}}
                await response.write(b"data: " + orjson.dumps(error) + b"\n\n")
                return response
            text = word if position == 0 else " " + word
            await response.write(
                event(
                    [
                        {"index": i, "delta": {"content": text}, "finish_reason": None}
                        for i in range(n)
                    ]
                )
            )
            if delay:
                await asyncio.sleep(delay)
        last = event(
            [{"index": i, "delta": {}, "finish_reason": finish, **stop_field} for i in range(n)]
        )
        if "unterminated_end" in directives:
            # The last event without its blank line, then the close: no usage, no [DONE].
            await response.write(last.rstrip(b"\n"))
            return response
        await response.write(last)
        if include_usage:
            await response.write(
                b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
            )
        await response.write(b"data: [DONE]\n\n")
        STATE["completed"] += 1
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        STATE["cancelled"] += 1
        raise


# ---------------------------------------------------------------------------
# Anthropic-native routes
# ---------------------------------------------------------------------------

ANTHROPIC_ERROR_TYPE = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


def _blocks_text(content) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_blocks_text(block.get("content")))
    return " ".join(parts)


def _anthropic_directives(body: dict) -> dict[str, str]:
    texts = [_blocks_text(body.get("system"))]
    texts += [
        _blocks_text(m.get("content"))
        for m in body.get("messages") or []
        if isinstance(m, dict) and m.get("role") == "user"
    ]
    found: dict[str, str] = {}
    for text in texts:
        found.update(_scoped(text, body.get("model")))
    return found


def _anthropic_input_tokens(body: dict) -> int:
    system = len(_blocks_text(body.get("system")).split())
    return system + sum(
        len(_blocks_text(m.get("content")).split()) + 3
        for m in body.get("messages") or []
        if isinstance(m, dict)
    )


def _anthropic_answer(body: dict, directives: dict[str, str]) -> tuple[list[dict], str, str | None]:
    """(content blocks, stop_reason, stop_sequence) the fake Claude produces."""
    messages = body.get("messages") or []
    last = messages[-1] if messages else {}
    content = last.get("content")
    results = (
        [b for b in content or [] if isinstance(b, dict) and b.get("type") == "tool_result"]
        if isinstance(content, list)
        else []
    )
    tools = body.get("tools") or []
    choice = (body.get("tool_choice") or {}).get("type")
    if tools and choice != "none" and not results:
        return (
            [
                {"type": "text", "text": "Let me check."},
                {
                    "type": "tool_use",
                    "id": "toolu_" + uuid.uuid4().hex[:20],
                    "name": tools[0]["name"],
                    "input": {"city": "Oslo", "days": [1, 2]},
                },
            ],
            "tool_use",
            None,
        )
    if results:
        return (
            [{"type": "text", "text": "The tool said: " + _blocks_text(results[0].get("content"))}],
            "end_turn",
            None,
        )
    words = _words(directives)
    stops = body.get("stop_sequences") or []
    stop_reason, stop_sequence = "end_turn", None
    for i, word in enumerate(words):
        if word in stops:
            words, stop_reason, stop_sequence = words[:i], "stop_sequence", word
            break
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < len(words):
        words, stop_reason = words[:max_tokens], "max_tokens"
    return [{"type": "text", "text": " ".join(words)}], stop_reason, stop_sequence


def _record(request: web.Request, body) -> None:
    STATE["requests"].append(
        {
            "headers": {str(k): v for k, v in request.headers.items()},
            "body": body,
            "path": request.path,
        }
    )


def _anthropic_error(status: int, message: str | None = None) -> web.Response:
    error_type = ANTHROPIC_ERROR_TYPE.get(status, "api_error")
    return web.json_response(
        {
            "type": "error",
            "error": {"type": error_type, "message": message or f"fake failure {status}"},
            "request_id": "req_fake",
        },
        status=status,
    )


def _sse(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps({"type": name, **data}) + b"\n\n"


async def messages(request: web.Request) -> web.StreamResponse:
    body = orjson.loads(await request.read())
    _record(request, body)
    if "x-api-key" not in request.headers or "anthropic-version" not in request.headers:
        return _anthropic_error(401, "missing x-api-key or anthropic-version")
    directives = _for_model(_anthropic_directives(body), body)
    STATE["in_flight"] += 1
    STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
    try:
        if (failure := _error_body(request, directives)) is not None:
            return failure
        if "status" in directives:
            return _anthropic_error(int(directives["status"]))
        if "hang" in directives:
            await asyncio.sleep(3600)
        if "hold_ms" in directives:
            await asyncio.sleep(int(directives["hold_ms"]) / 1000)
        content, stop_reason, stop_sequence = _anthropic_answer(body, directives)
        text_words = sum(len(b["text"].split()) for b in content if b["type"] == "text")
        texts = [_blocks_text(m.get("content")) for m in body.get("messages") or []]
        inflated = _inflated(directives, [_blocks_text(body.get("system")), *texts], 4, 3)
        usage = {
            "input_tokens": int(
                directives.get("input_tokens", inflated or _anthropic_input_tokens(body))
            ),
            "cache_creation_input_tokens": int(directives.get("cache_create", "0")),
            "cache_read_input_tokens": int(directives.get("cache_read", "0")),
            "output_tokens": _reported_completion(
                directives, text_words + (7 if stop_reason == "tool_use" else 0)
            ),
        }
        if "cache_create_1h" in directives:
            hour = int(directives["cache_create_1h"])
            usage["cache_creation"] = {
                "ephemeral_5m_input_tokens": usage["cache_creation_input_tokens"] - hour,
                "ephemeral_1h_input_tokens": hour,
            }
        if "service_tier" in directives:
            usage["service_tier"] = directives["service_tier"]
        message = {
            "id": "msg_" + uuid.uuid4().hex[:20],
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": stop_sequence,
            "usage": usage,
        }
        # (#json_stream: a server that answers a stream request with a plain Message)
        if not body.get("stream") or "json_stream" in directives:
            STATE["completed"] += 1
            return web.Response(body=orjson.dumps(message), content_type="application/json")
        return await _messages_stream(request, directives, message)
    finally:
        STATE["in_flight"] -= 1


async def _messages_stream(request, directives, message) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    delay = int(directives.get("delay_ms", "0")) / 1000
    cut = int(directives["cut"]) if "cut" in directives else None
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    deltas = 0
    try:
        await response.write(_sse("message_start", {"message": start}))
        await response.write(_sse("ping", {}))
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await response.write(
                    _sse(
                        "content_block_start",
                        {"index": index, "content_block": {"type": "text", "text": ""}},
                    )
                )
                words = block["text"].split(" ")
                for position, word in enumerate(words):
                    if cut is not None and deltas >= cut:
                        request.transport.close()
                        return response
                    if position == len(words) // 2 and "mid_error" in directives:
                        said = (
                            _leaky_message(request)
                            if directives["mid_error"] == "leak"
                            else "Overloaded"
                        )
                        await response.write(
                            _sse("error", {"error": {"type": "overloaded_error", "message": said}})
                        )
                        return response
                    text = word if position == 0 else " " + word
                    await response.write(
                        _sse(
                            "content_block_delta",
                            {"index": index, "delta": {"type": "text_delta", "text": text}},
                        )
                    )
                    deltas += 1
                    if position == 1:
                        await response.write(_sse("ping", {}))
                    if delay:
                        await asyncio.sleep(delay)
            else:
                await response.write(
                    _sse(
                        "content_block_start",
                        {"index": index, "content_block": {**block, "input": {}}},
                    )
                )
                raw = orjson.dumps(block["input"]).decode()
                cut_at = len(raw) // 3
                for piece in ("", raw[:cut_at], raw[cut_at:]):
                    await response.write(
                        _sse(
                            "content_block_delta",
                            {
                                "index": index,
                                "delta": {"type": "input_json_delta", "partial_json": piece},
                            },
                        )
                    )
            await response.write(_sse("content_block_stop", {"index": index}))
        final_usage = {"output_tokens": usage["output_tokens"]}
        await response.write(
            _sse(
                "message_delta",
                {
                    "delta": {
                        "stop_reason": message["stop_reason"],
                        "stop_sequence": message["stop_sequence"],
                    },
                    "usage": final_usage,
                },
            )
        )
        await response.write(_sse("message_stop", {}))
        STATE["completed"] += 1
        return response
    except (asyncio.CancelledError, ConnectionResetError):
        STATE["cancelled"] += 1
        raise


async def count_tokens(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())
    _record(request, body)
    directives = _anthropic_directives(body)
    if (failure := _error_body(request, directives)) is not None:
        return failure
    if "status" in directives:
        return _anthropic_error(int(directives["status"]))
    return web.json_response({"input_tokens": _anthropic_input_tokens(body) + 1000})


async def embeddings(request: web.Request) -> web.Response:
    """Three-dimensional vectors; usage = words (or token ids); "#no_usage" in an input
    leaves usage out, "#status=N" answers that status."""
    body = orjson.loads(await request.read())
    _record(request, body)
    value = body.get("input")
    items = [value] if isinstance(value, str) or (value and type(value[0]) is int) else value
    text = " ".join(i for i in items if isinstance(i, str))
    directives = dict(DIRECTIVE.findall(text))
    if (failure := _error_body(request, directives)) is not None:
        return failure
    if "status" in directives:
        return web.json_response(
            {"error": {"message": "fake failure"}}, status=int(directives["status"])
        )
    if "hold_ms" in directives:
        await asyncio.sleep(int(directives["hold_ms"]) / 1000)
    if "gate" in directives:
        await _gate(directives["gate"]).wait()
    data = []
    tokens = 0
    for index, item in enumerate(items):
        tokens += (
            len(item.split())
            if isinstance(item, str)
            else len(item)
            if isinstance(item, list)
            else 1
        )
        vector = [0.5, -0.25, float(index)]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack("<3f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    tokens = _inflated(directives, [i for i in items if isinstance(i, str)], 0, 0) or tokens
    answer = {"object": "list", "data": data, "model": body.get("model")}
    if "no_usage" not in directives:
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
    return web.json_response(answer)


async def tokenize(request: web.Request) -> web.Response:
    """vLLM's /tokenize (server root) for chat messages: words + 7 per message, answered
    only when a message says "#tokenize" (else 404, as servers without it do)."""
    body = orjson.loads(await request.read())
    if "tokenize" not in _directives(body):
        return web.json_response({"detail": "Not Found"}, status=404)
    _record(request, body)
    count = sum(len(_text_of(m.get("content")).split()) + 7 for m in body.get("messages") or [])
    return web.json_response({"count": count, "max_model_len": 8192, "tokens": [1] * count})


async def models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})


async def stats(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(STATE), content_type="application/json")


GATES: dict[str, asyncio.Event] = {}
DELAY_S = 0.0


def _gate(name: str) -> asyncio.Event:
    return GATES.setdefault(name, asyncio.Event())


async def gate_open(request: web.Request) -> web.Response:
    _gate(request.match_info["name"]).set()
    return web.json_response({})


async def reset(request: web.Request) -> web.Response:
    STATE.update(requests=[], in_flight=0, max_in_flight=0, cancelled=0, completed=0)
    for gate in GATES.values():
        gate.set()  # nobody waits for ever on a gate of an earlier test
    GATES.clear()
    return web.json_response({})


def build_app() -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/llama/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/tokenize", tokenize)
    app.router.add_post("/v1/messages/count_tokens", count_tokens)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    app.router.add_post("/_gates/{name}", gate_open)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    DELAY_S = args.delay_ms / 1000
    web.run_app(build_app(), host=args.host, port=args.port, print=None, access_log=None)
