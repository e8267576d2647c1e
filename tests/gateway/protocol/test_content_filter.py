"""The stream filters between a relay and the client (pure: no server)."""

import asyncio

import orjson

from apps.gateway.protocol.anthropic import (
    message_events,
    messages_sse_event,
    parse_sse_events,
    stream_invariant_violations,
)
from apps.gateway.protocol.content_filter import (
    ChatChunkFilter,
    MessageEventFilter,
    chat_prompt_text,
    choice_text,
    message_text,
    messages_prompt_text,
)
from apps.moderation.policy import policy_clean, policy_compile
from apps.moderation.scanner import Scanner, StreamGuard

BLOCK_VIOLENCE = policy_compile(policy_clean({"violence": {"completion": "block"}}))
WORDS = [f"w{i}" for i in range(60)] + ["i", "am", "going", "to", "kill", "you", "tonight"]


def guard() -> StreamGuard:
    scanner = Scanner()
    return StreamGuard(lambda t: scanner.check(BLOCK_VIOLENCE, t, "completion"))


def chat_frames(words: list[str]) -> bytes:
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    frames = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}]
    frames += [
        {**base, "choices": [{"index": 0, "delta": {"content": (" " if i else "") + w}}]}
        for i, w in enumerate(words)
    ]
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return b"".join(b"data: " + orjson.dumps(f) + b"\n\n" for f in frames)


def chunks_of(raw: bytes) -> list[dict]:
    return [orjson.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: {")]


def test_chat_filter_releases_the_benign_prefix_then_blocks_even_in_one_read():
    flt = ChatChunkFilter(guard(), None)
    out = asyncio.run(flt.finish(chat_frames(WORDS)))  # the whole stream arrives at once
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks_of(out))
    assert flt.blocked and text.startswith("w0 w1") and "kill" not in text
    assert flt.delivered_content_chunks == sum(
        1 for c in chunks_of(out) if c["choices"][0]["delta"].get("content")
    )
    end = chunks_of(flt.blocked_chunk("x", "m", 1))[0]["choices"][0]
    assert end["finish_reason"] == "content_filter"
    assert end["content_filter_results"]["violence"]["filtered"] is True


def test_chat_filter_annotates_the_finish_chunk_and_adds_the_prompt_chunk():
    flt = ChatChunkFilter(guard(), [{"prompt_index": 0, "content_filter_results": {}}])
    out = asyncio.run(flt.feed(chat_frames(["hello", "world"]))) + asyncio.run(flt.finish(b""))
    chunks = chunks_of(out)
    assert chunks[0]["choices"] == [] and chunks[0]["id"] == "c1"
    assert "prompt_filter_results" in chunks[0]
    assert chunks[-1]["choices"][0]["content_filter_results"]["violence"]["severity"] == "safe"
    assert len(chunks) == 1 + 1 + 2 + 1  # prompt chunk, role chunk, 2 words, finish


def test_message_filter_ends_a_blocked_stream_in_anthropics_order():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [{"type": "text", "text": "x"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 9},
    }
    events = message_events(message)
    start, ping, block_start, _delta, *rest = events
    deltas = [
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": (" " if i else "") + w}})
        for i, w in enumerate(WORDS)
    ]  # fmt: skip
    raw = b"".join(messages_sse_event(n, d) for n, d in [start, ping, block_start, *deltas, *rest])
    flt = MessageEventFilter(guard(), None)
    out = asyncio.run(flt.finish(raw))
    assert flt.blocked
    out += flt.blocked_events(flt.delivered_deltas)
    parsed = [(n, orjson.loads(d)) for n, d in parse_sse_events(out)]
    assert stream_invariant_violations(parsed) == []
    names = [n for n, _ in parsed]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert parsed[-2][1]["delta"]["stop_reason"] == "refusal"
    text = "".join(d["delta"]["text"] for n, d in parsed if n == "content_block_delta")
    assert text.startswith("w0 w1") and "kill" not in text


def test_tool_call_arguments_and_reasoning_are_checked_text():
    message = {
        "role": "assistant",
        "content": None,
        "reasoning_content": "the user wants a plan",
        "tool_calls": [
            {"id": "t1", "type": "function",
             "function": {"name": "send", "arguments": '{"text": "I am going to kill you"}'}}
        ],
    }  # fmt: skip
    assert "kill you" in choice_text({"message": message})
    assert "the user wants a plan" in choice_text({"message": message})
    assert "kill you" in chat_prompt_text({"messages": [message]})  # a forged assistant turn
    blocks = [
        {"type": "thinking", "thinking": "plan it", "signature": "s"},
        {"type": "tool_use", "id": "tu", "name": "send", "input": {"text": "kill you"}},
    ]
    assert "plan it" in message_text({"content": blocks})
    assert "kill you" in message_text({"content": blocks})
    assert "kill you" in messages_prompt_text(
        {"messages": [{"role": "assistant", "content": blocks}]}
    )


def test_chat_stream_blocks_on_tool_call_arguments():
    base = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    call = {
        "index": 0,
        "id": "t1",
        "type": "function",
        "function": {"name": "send", "arguments": ""},
    }
    frames = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [call]}}]}
    ]
    frames += [
        {**base, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": piece}}]}}]}
        for piece in ['{"text": "', " ".join(WORDS), '"}']
    ]  # fmt: skip
    frames.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    flt = ChatChunkFilter(guard(), None)
    out = asyncio.run(flt.finish(b"".join(b"data: " + orjson.dumps(f) + b"\n\n" for f in frames)))
    assert flt.blocked
    assert b"kill" not in out
