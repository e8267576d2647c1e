"""A cheap OpenAI-compatible mock upstream for the gateway benchmark.

Non-stream: a fixed completion with usage. Stream: 20 content chunks, a finish chunk, the
usage chunk (when asked) and [DONE]; --pace-ms spaces the chunks.
"""

import argparse
import asyncio

import orjson
from aiohttp import web

BASE = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1, "model": "m"}
USAGE = {"prompt_tokens": 12, "completion_tokens": 20, "total_tokens": 32}
COMPLETION = orjson.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "word " * 20},
            }
        ],
        "usage": USAGE,
    }
)


def _chunk(delta: dict, finish=None) -> bytes:
    payload = {**BASE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + orjson.dumps(payload) + b"\n\n"


CHUNKS = [_chunk({"role": "assistant", "content": "word"})] + [
    _chunk({"content": " word"}) for _ in range(19)
]
TAIL = _chunk({}, "stop")
USAGE_CHUNK = b"data: " + orjson.dumps({**BASE, "choices": [], "usage": USAGE}) + b"\n\n"


def build(pace_ms: float) -> web.Application:
    async def chat(request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        if not body.get("stream"):
            return web.Response(body=COMPLETION, content_type="application/json")
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in CHUNKS:
            await response.write(chunk)
            if pace_ms:
                await asyncio.sleep(pace_ms / 1000)
        tail = TAIL
        if (body.get("stream_options") or {}).get("include_usage"):
            tail += USAGE_CHUNK
        await response.write(tail + b"data: [DONE]\n\n")
        return response

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--pace-ms", type=float, default=0)
    args = parser.parse_args()
    web.run_app(build(args.pace_ms), host=args.host, port=args.port, print=None, access_log=None)
