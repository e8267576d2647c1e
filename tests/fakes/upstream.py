"""A fake inference server for the tests (run as a separate process): OpenAI-compatible
(POST /v1/chat/completions) and Anthropic-native (POST /v1/messages and
/v1/messages/count_tokens, answering in Anthropic's format: content blocks, tool_use,
stop_sequence, event streams with pings and input_json_delta).

Behaviour is steered by directives in the user/system messages, e.g. "#status=503",
"#chunks=20", "#delay_ms=50", "#cut=3" (drop the connection after 3 chunks),
"#mid_error", "#no_usage", "#hang", "#say=i_will_kill_you" (the answer's words: the
underscores are spaces; after the "#chunks" words when both are given) and
"#sayrev=uoy_llik" (the same, written reversed so the prompt itself reads as nothing);
Anthropic route also "#cache_read=N" and
"#cache_create=N" (cache token counts in its usage). "#args=newline|truncated|notjson"
makes a tool call's arguments a raw newline inside a string, an object cut short (with
finish_reason "length", as when max_tokens cut it) or text that is not JSON. It records
every request it received and counts requests in flight and cancelled streams:
GET /_stats, POST /_reset.

Under /llama/v1/ the chat route behaves as llama-cpp-python does on a stop string: it
stops before it and strips it, with ``finish_reason: "stop"`` and no ``stop_reason``
(so end of turn and a stop string look the same).
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

STATE = {"requests": [], "in_flight": 0, "max_in_flight": 0, "cancelled": 0, "completed": 0}
DIRECTIVE = re.compile(r"#(\w+)(?:=([\w.,-]+))?")


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _directives(body: dict) -> dict[str, str]:
    found: dict[str, str] = {}
    for message in body.get("messages") or []:
        if isinstance(message, dict) and message.get("role") in ("user", "system"):
            found.update(
                {k: v or "1" for k, v in DIRECTIVE.findall(_text_of(message.get("content")))}
            )
    return found


def _words(directives: dict[str, str]) -> list[str]:
    said = directives.get("say") or (directives.get("sayrev") or "")[::-1]
    default = "0" if said else "5"
    words = [f"w{i}" for i in range(int(directives.get("chunks", default)))]
    return words + [w for w in said.split("_") if w]


def _prompt_tokens(body: dict) -> int:
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in body.get("messages") or [])


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
    if body.get("tools") and body.get("tool_choice") != "none" and last.get("role") != "tool":
        tool = body["tools"][0]["function"]["name"]
        return (
            [],
            [
                {
                    "id": "call_" + uuid.uuid4().hex[:8],
                    "type": "function",
                    "function": {"name": tool, "arguments": _tool_arguments(directives)},
                }
            ],
            "length" if directives.get("args") == "truncated" else "tool_calls",
            None,
        )
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
    directives = _directives(body)
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
        if "status" in directives:
            status = int(directives["status"])
            return web.json_response(
                {
                    "error": {
                        "message": f"fake failure {status}",
                        "type": "server_error",
                        "code": status,
                    }
                },
                status=status,
            )
        if "hang" in directives:
            await asyncio.sleep(3600)
        if "hold_ms" in directives:
            await asyncio.sleep(int(directives["hold_ms"]) / 1000)
        words, tool_calls, finish, matched = _answer(body, directives)
        llama = request.path.startswith("/llama/")
        n = body.get("n") or 1
        prompt = _prompt_tokens(body)
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": len(words) * n + (5 if tool_calls else 0),
            "total_tokens": 0,
            "prompt_tokens_details": {"cached_tokens": 0},
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
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
    include_usage = (body.get("stream_options") or {}).get(
        "include_usage"
    ) and "no_usage" not in directives
    delay = int(directives.get("delay_ms", "0")) / 1000
    cut = int(directives["cut"]) if "cut" in directives else None
    n = body.get("n") or 1

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
                await response.write(
                    b'data: {"error": {"message": "fake mid-stream failure", "type": "server_error"}}\n\n'
                )
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
        await response.write(
            event(
                [{"index": i, "delta": {}, "finish_reason": finish, **stop_field} for i in range(n)]
            )
        )
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
        found.update({k: v or "1" for k, v in DIRECTIVE.findall(text)})
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
    directives = _anthropic_directives(body)
    STATE["in_flight"] += 1
    STATE["max_in_flight"] = max(STATE["max_in_flight"], STATE["in_flight"])
    try:
        if "status" in directives:
            return _anthropic_error(int(directives["status"]))
        if "hang" in directives:
            await asyncio.sleep(3600)
        if "hold_ms" in directives:
            await asyncio.sleep(int(directives["hold_ms"]) / 1000)
        content, stop_reason, stop_sequence = _anthropic_answer(body, directives)
        text_words = sum(len(b["text"].split()) for b in content if b["type"] == "text")
        usage = {
            "input_tokens": _anthropic_input_tokens(body),
            "cache_creation_input_tokens": int(directives.get("cache_create", "0")),
            "cache_read_input_tokens": int(directives.get("cache_read", "0")),
            "output_tokens": text_words + (7 if stop_reason == "tool_use" else 0),
        }
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
        if not body.get("stream"):
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
                        await response.write(
                            _sse(
                                "error",
                                {"error": {"type": "overloaded_error", "message": "Overloaded"}},
                            )
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
    if "status" in directives:
        return web.json_response(
            {"error": {"message": "fake failure"}}, status=int(directives["status"])
        )
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


async def reset(request: web.Request) -> web.Response:
    STATE.update(requests=[], in_flight=0, max_in_flight=0, cancelled=0, completed=0)
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
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)
