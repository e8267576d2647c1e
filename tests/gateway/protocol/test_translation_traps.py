"""One regression test per translation bug listed in docs/protocols.md §3.4.

Each test is named after the trap and would have failed on the buggy behaviour.
"""

import inspect

import orjson
import pytest

from apps.gateway.protocol.anthropic import parse_sse_events, stream_invariant_violations
from apps.gateway.protocol.anthropic_to_openai import (
    ChatStreamToMessagesStream,
    ToolNameMap,
    TranslationError,
    chat_response_to_message,
    messages_to_chat_request,
)
from apps.gateway.protocol.openai import data_chunk


def chunk(delta=None, finish=None, **choice_extra):
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice_extra}],
    }


def run(chunks, *, names=None, **kw):
    conv = ChatStreamToMessagesStream("claude-x", names or ToolNameMap(), "msg_1", 5, **kw)
    raw = conv.start()
    for c in chunks:
        raw += conv.feed(data_chunk(c))
    raw += conv.finish()
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert stream_invariant_violations(events) == []
    return events


def sdk_message(events):
    streaming = pytest.importorskip("anthropic.lib.streaming._messages")
    params = inspect.signature(streaming.accumulate_event).parameters
    snapshot, json_bufs = None, {}
    for _, data in events:
        if data["type"] == "ping":
            continue
        kwargs = {"event": data, "current_snapshot": snapshot}
        if "json_bufs" in params:
            kwargs["json_bufs"] = json_bufs
        snapshot = streaming.accumulate_event(**kwargs)
    return snapshot


def message_delta(events):
    return next(d for n, d in events if n == "message_delta")


def deltas(events, delta_type):
    return [d["delta"] for n, d in events if n == "content_block_delta"
            and d["delta"]["type"] == delta_type]  # fmt: skip


BASE = {"model": "claude-x", "max_tokens": 100}


# LiteLLM #25321 / #25390 / #25561 (PR #25411)
def test_trap_tool_input_empty_when_arguments_arrive_with_the_name():
    events = run(
        [
            chunk({"role": "assistant", "content": "Checking."}),
            # Block transition text → tool_use with the full arguments in the same chunk.
            chunk({"tool_calls": [{"index": 0, "id": "c1", "type": "function",
                                   "function": {"name": "get_weather",
                                                "arguments": '{"city":"Oslo"}'}}]}),
            # Second call: name + first fragment together, rest in the finish chunk.
            chunk({"tool_calls": [{"index": 1, "id": "c2", "type": "function",
                                   "function": {"name": "get_time", "arguments": '{"tz":'}}]}),
            chunk({"tool_calls": [{"index": 1, "function": {"arguments": '"CET"}'}}]},
                  "tool_calls"),
        ]
    )  # fmt: skip
    snap = sdk_message(events)
    tools = [b for b in snap.content if b.type == "tool_use"]
    assert [(t.name, t.input) for t in tools] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {"tz": "CET"}),
    ]


# LiteLLM #29286
def test_trap_vllm_empty_tool_calls_list_beside_content_streams_text_not_json():
    events = run(
        [
            chunk({"role": "assistant", "content": "", "tool_calls": []}),
            chunk({"content": "Hello", "tool_calls": []}),
            chunk({"content": " world", "tool_calls": []}),
            chunk({"content": "", "tool_calls": []}, "stop"),
        ]
    )
    assert deltas(events, "input_json_delta") == []
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["text"]
    assert sdk_message(events).content[0].text == "Hello world"


# LiteLLM #34692 (ollama backend)
def test_trap_end_turn_despite_tool_call_and_empty_leading_text_block():
    events = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "index": 0, "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}),
            chunk({"role": "assistant", "content": ""}, "stop"),
        ]
    )  # fmt: skip
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["tool_use"]
    assert message_delta(events)["delta"]["stop_reason"] == "tool_use"
    # Same trap, non-stream path.
    resp = {
        "id": "x",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "",
            "tool_calls": [{"id": "call_1", "function": {"name": "f", "arguments": "{}"}}]}}],
    }  # fmt: skip
    msg = chat_response_to_message(resp, model="m", names=ToolNameMap())
    assert [b["type"] for b in msg["content"]] == ["tool_use"]
    assert msg["stop_reason"] == "tool_use"


# LiteLLM #32357
def test_trap_reasoning_inside_text_block_and_duplicate_message_start():
    events = run(
        [
            chunk({"role": "assistant", "content": None, "reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"role": "assistant", "content": "Answer"}),  # role repeated mid-stream
            chunk({"content": "."}, "stop"),
        ]
    )
    names = [n for n, _ in events]
    assert names.count("message_start") == 1
    starts = [d["content_block"]["type"] for n, d in events if n == "content_block_start"]
    assert starts == ["thinking", "text"]
    text_deltas = "".join(d["text"] for d in deltas(events, "text_delta"))
    assert text_deltas == "Answer."
    snap = sdk_message(events)
    assert snap.content[0].thinking == "Thinking."
    assert snap.content[1].text == "Answer."


# LiteLLM #31069 (cache tokens 0) and CLIProxyAPI PR #1279 (message_delta without usage)
def test_trap_cache_tokens_zero_in_message_start():
    events = run(
        [
            chunk({"content": "Hi"}),
            chunk({}, "stop"),
            {"id": "chatcmpl-1", "choices": [], "usage": {
                "prompt_tokens": 1000, "completion_tokens": 3, "total_tokens": 1003,
                "prompt_tokens_details": {"cached_tokens": 800}}},
        ]
    )  # fmt: skip
    usage = message_delta(events)["usage"]
    assert usage["cache_read_input_tokens"] == 800
    assert usage["input_tokens"] == 200
    snap = sdk_message(events)  # the SDK's final usage must carry the cache read
    assert snap.usage.cache_read_input_tokens == 800
    assert snap.usage.input_tokens == 200


def test_trap_message_delta_without_usage():
    events = run([chunk({"content": "Hi there"}), chunk({}, "stop")])  # backend sent no usage
    usage = message_delta(events)["usage"]
    assert isinstance(usage["output_tokens"], int) and usage["output_tokens"] > 0
    assert "input_tokens" in usage and "cache_read_input_tokens" in usage
    start_usage = events[0][1]["message"]["usage"]
    assert "output_tokens" in start_usage


# LiteLLM #37118
def test_trap_stop_sequences_dropped():
    req, _ = messages_to_chat_request(
        {**BASE, "messages": [{"role": "user", "content": "x"}], "stop_sequences": ["###"]},
        upstream_model="up",
    )
    assert req["stop"] == ["###"]


# vLLM PR #45807
def test_trap_stop_sequence_never_reported():
    events = run(
        [chunk({"content": "a"}), chunk({"content": ""}, "stop", stop_reason="###")],
        stop_sequences=["###"],
    )
    assert message_delta(events)["delta"] == {
        "stop_reason": "stop_sequence",
        "stop_sequence": "###",
    }
    snap = sdk_message(events)
    assert (snap.stop_reason, snap.stop_sequence) == ("stop_sequence", "###")
    resp = {"id": "x", "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "###",
                                    "message": {"role": "assistant", "content": "a"}}]}  # fmt: skip
    msg = chat_response_to_message(resp, model="m", names=ToolNameMap())
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("stop_sequence", "###")


# LiteLLM #28995
def test_trap_tool_calls_not_followed_by_tool_messages():
    body = {
        **BASE,
        "messages": [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Two calls."},
                {"type": "tool_use", "id": "t1", "name": "a", "input": {}},
                {"type": "tool_use", "id": "t2", "name": "b", "input": {}}]},
            # Text placed before the results, and the results split over two user turns.
            {"role": "user", "content": [
                {"type": "text", "text": "note"},
                {"type": "tool_result", "tool_use_id": "t1", "content": "r1"}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t2", "content": [], "is_error": True}]},
        ],
    }  # fmt: skip
    req, _ = messages_to_chat_request(body, upstream_model="up")
    roles = [m["role"] for m in req["messages"]]
    assert roles == ["user", "assistant", "tool", "tool", "user"]
    assert [m["tool_call_id"] for m in req["messages"] if m["role"] == "tool"] == ["t1", "t2"]
    assert req["messages"][3]["content"] == "Error: "
    assert req["messages"][4] == {"role": "user", "content": "note"}


# LiteLLM #30557
def test_trap_custom_tool_type_merged_into_parameters():
    schema = {"type": "object", "properties": {"q": {"type": "string"}}}
    body = {
        **BASE,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "custom", "name": "search", "input_schema": schema,
                   "cache_control": {"type": "ephemeral"}, "strict": True}],
    }  # fmt: skip
    req, _ = messages_to_chat_request(body, upstream_model="up")
    fn = req["tools"][0]["function"]
    assert fn["parameters"] == schema
    assert req["tools"][0]["type"] == "function"
    assert set(fn) == {"name", "parameters"}


# vLLM 400 on thinking blocks: LiteLLM PRs #23039 / #30475
def test_trap_thinking_blocks_forwarded_to_backend():
    body = {
        **BASE,
        "thinking": {"type": "enabled", "budget_tokens": 1000},
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "abc"},
                {"type": "redacted_thinking", "data": "xyz"},
                {"type": "text", "text": "Answer"}]},
            {"role": "user", "content": "more"},
        ],
    }  # fmt: skip
    req, _ = messages_to_chat_request(body, upstream_model="up")
    dumped = orjson.dumps(req).decode()
    assert "thinking" not in dumped and "signature" not in dumped
    assert req["messages"][1] == {"role": "assistant", "content": "Answer"}


# vLLM/Mistral reject empty names, OpenAI >64 chars (LiteLLM placeholder / 55 + "_" + hash)
def test_trap_empty_and_overlong_tool_names():
    long_name = "mcp__" + "x" * 80
    body = {
        **BASE,
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": long_name, "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ],
        "tools": [
            {"name": long_name, "input_schema": {"type": "object"}},
            {"name": "", "input_schema": {"type": "object"}},
            {"name": "has space.dot", "input_schema": {"type": "object"}},
        ],
        "tool_choice": {"type": "tool", "name": long_name},
    }  # fmt: skip
    req, names = messages_to_chat_request(body, upstream_model="up")
    upstream = [t["function"]["name"] for t in req["tools"]]
    for name in upstream:
        assert 1 <= len(name) <= 64
        assert all(c.isalnum() or c in "_-" for c in name)
    assert len(upstream[0]) == 64 and upstream[0][55] == "_"
    assert len(set(upstream)) == 3
    # History and tool_choice use the same renamed name as the tool definition.
    assert req["messages"][1]["tool_calls"][0]["function"]["name"] == upstream[0]
    assert req["tool_choice"]["function"]["name"] == upstream[0]
    # …and the backend's answers are mapped back, streaming and not.
    events = run(
        [chunk({"tool_calls": [{"index": 0, "id": "c", "type": "function",
                                "function": {"name": upstream[0], "arguments": "{}"}}]}),
         chunk({}, "tool_calls")],
        names=names,
    )  # fmt: skip
    start = next(d for n, d in events if n == "content_block_start")
    assert start["content_block"]["name"] == long_name
    resp = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "function": {"name": upstream[1], "arguments": "{}"}}
                    ],
                },
            }
        ],
    }
    assert chat_response_to_message(resp, model="m", names=names)["content"][0]["name"] == ""


# LiteLLM PR #41095
def test_trap_all_unknown_blocks_become_empty_messages():
    body = {
        **BASE,
        "system": "sys",
        "messages": [
            {"role": "user", "content": [{"type": "search_result", "x": 1},
                                         {"type": "text", "text": ""}]},
            {"role": "assistant", "content": [{"type": "thinking", "thinking": "t",
                                               "signature": "s"}]},
        ],
    }  # fmt: skip
    with pytest.raises(TranslationError) as err:
        messages_to_chat_request(body, upstream_model="up")
    assert "messages" in err.value.message


def test_trap_cache_tokens_zero_in_message_start_lazy_start_uses_early_usage():
    # vLLM continuous_usage_stats: usage on the first chunk; without an explicit start()
    # message_start itself carries the real cache read.
    conv = ChatStreamToMessagesStream("claude-x", ToolNameMap(), "msg_1", 5)
    early = {"prompt_tokens": 1000, "completion_tokens": 0, "total_tokens": 1000,
             "prompt_tokens_details": {"cached_tokens": 800}}  # fmt: skip
    raw = conv.feed(data_chunk({**chunk({"role": "assistant", "content": ""}), "usage": early}))
    raw += conv.feed(data_chunk(chunk({"content": "Hi"}, "stop")))
    raw += conv.finish()
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert stream_invariant_violations(events) == []
    start_usage = events[0][1]["message"]["usage"]
    assert start_usage["cache_read_input_tokens"] == 800
    assert start_usage["input_tokens"] == 200
