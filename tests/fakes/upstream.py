"""A fake OpenAI-compatible inference server for the tests (run as a separate process).

Behaviour is steered by directives in the last user message, e.g. "#status=503",
"#chunks=20", "#delay_ms=50", "#cut=3" (drop the connection after 3 chunks),
"#mid_error", "#no_usage", "#hang". It records every request it received and counts
requests in flight and cancelled streams: GET /_stats, POST /_reset.
"""

import argparse
import asyncio
import re
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


def _prompt_tokens(body: dict) -> int:
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in body.get("messages") or [])


def _answer(body: dict, directives: dict[str, str]) -> tuple[list[str], list | None, str]:
    """(words, tool_calls, finish_reason) the fake model produces."""
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
                    "function": {"name": tool, "arguments": '{"city": "Oslo"}'},
                }
            ],
            "tool_calls",
        )
    if last.get("role") == "tool":
        return ["The", "tool", "said:", _text_of(last.get("content"))], None, "stop"
    count = int(directives.get("chunks", "5"))
    words = [f"w{i}" for i in range(count)]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    for i, word in enumerate(words):
        if word in stops:
            return words[:i], None, "stop"
    max_tokens = body.get("max_tokens") or body.get("max_completion_tokens")
    if isinstance(max_tokens, int) and max_tokens < len(words):
        return words[:max_tokens], None, "length"
    return words, None, "stop"


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
        words, tool_calls, finish = _answer(body, directives)
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
            request, body, directives, words, tool_calls, finish, usage, (cid, created, model)
        )
    finally:
        STATE["in_flight"] -= 1


async def _stream(request, body, directives, words, tool_calls, finish, usage, ident):
    cid, created, model = ident
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
            for piece in ('{"city"', ': "Oslo"}'):
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
            event([{"index": i, "delta": {}, "finish_reason": finish} for i in range(n)])
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
    app.router.add_get("/v1/models", models)
    app.router.add_get("/_stats", stats)
    app.router.add_post("/_reset", reset)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(build_app(), host="127.0.0.1", port=args.port, print=None, access_log=None)
