"""DEMO BACKEND — a toy OpenAI-compatible model for the embedded default (`make serve`).

It is not a language model: it answers by echoing the last user message, streamed word by
word, with word counts as usage. It exists so a newcomer can call Tollgate at once;
mounted at /demo-upstream/v1 only when DEMO_UPSTREAM is on.
"""

import asyncio
import base64
import hashlib
import struct
import time
import uuid

import orjson

DEMO_MODEL = "tollgate-demo"


def _last_user_text(body: dict) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


async def _embeddings(send, raw: bytes) -> None:
    """Toy vectors: 8 numbers from a hash of each input (same text, same vector)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    items = body.get("input") if isinstance(body, dict) else None
    if isinstance(items, str) or (isinstance(items, list) and items and type(items[0]) is int):
        items = [items]
    if not isinstance(items, list) or not items:
        error = {"message": "input is required", "type": "invalid_request_error"}
        return await _json(send, 400, {"error": error})
    data, tokens = [], 0
    for index, item in enumerate(items):
        text = item if isinstance(item, str) else " ".join(map(str, item))
        tokens += len(text.split()) or 1
        digest = hashlib.sha256(text.encode()).digest()
        vector = [round(b / 255 - 0.5, 4) for b in digest[:8]]
        if body.get("encoding_format") == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": vector})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    await _json(
        send, 200, {"object": "list", "data": data, "model": body.get("model"), "usage": usage}
    )


def _reply_words(body: dict) -> list[str]:
    text = _last_user_text(body).strip() or "hello"
    return f"[demo backend] You said: {text}".split(" ")


async def demo_upstream(scope, receive, send) -> None:
    path = scope["path"].removeprefix("/demo-upstream")
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    if path == "/v1/models":
        payload = {
            "object": "list",
            "data": [{"id": DEMO_MODEL, "object": "model", "created": 0, "owned_by": "demo"}],
        }
        return await _json(send, 200, payload)
    if path == "/v1/embeddings" and scope["method"] == "POST":
        return await _embeddings(send, b"".join(chunks))
    if path != "/v1/chat/completions" or scope["method"] != "POST":
        return await _json(
            send, 404, {"error": {"message": "not found", "type": "invalid_request_error"}}
        )
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        return await _json(
            send, 400, {"error": {"message": "bad json", "type": "invalid_request_error"}}
        )
    words = _reply_words(body)
    prompt_tokens = sum(len(_last_user_text(body).split()) for _ in [0]) + 5
    usage = {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(words),
        "total_tokens": prompt_tokens + len(words),
    }
    cid, created, model = f"chatcmpl-{uuid.uuid4().hex[:12]}", int(time.time()), body.get("model")
    if not body.get("stream"):
        return await _json(
            send,
            200,
            {
                "id": cid,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "logprobs": None,
                        "message": {"role": "assistant", "content": " ".join(words)},
                    }
                ],
                "usage": usage,
            },
        )
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}
    for i, word in enumerate(words):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": " " + word}
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(chunk) + b"\n\n",
                "more_body": True,
            }
        )
        await asyncio.sleep(0.02)
    final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    tail = b"data: " + orjson.dumps(final) + b"\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        tail += b"data: " + orjson.dumps({**base, "choices": [], "usage": usage}) + b"\n\n"
    await send({"type": "http.response.body", "body": tail + b"data: [DONE]\n\n"})


async def _json(send, status: int, payload: dict) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": orjson.dumps(payload)})
