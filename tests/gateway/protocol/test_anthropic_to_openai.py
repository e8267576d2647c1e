"""Anthropic client → OpenAI-compatible backend: request, response, stream state machine."""

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
    parse_tool_arguments,
)
from apps.gateway.protocol.openai import data_chunk

# -- helpers ------------------------------------------------------------------


def chunk(delta=None, finish=None, *, usage=None, no_delta=False, **choice_extra):
    choice = {"index": 0, "finish_reason": finish, "logprobs": None, **choice_extra}
    if not no_delta:
        choice["delta"] = delta if delta is not None else {}
    out = {
        "id": "chatcmpl-abc",
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": "qwen",
        "choices": [choice],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def usage_chunk(prompt=52, completion=17, cached=None):
    usage = {"prompt_tokens": prompt, "completion_tokens": completion,
             "total_tokens": prompt + completion}  # fmt: skip
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"id": "chatcmpl-abc", "object": "chat.completion.chunk", "created": 1,
            "model": "qwen", "choices": [], "usage": usage}  # fmt: skip


def tc(index=0, id=None, name=None, args=None, type_="function"):
    call = {"index": index}
    if id is not None:
        call["id"] = id
        call["type"] = type_
    fn = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    call["function"] = fn
    return call


def run(chunks, *, names=None, input_tokens=11, **kw):
    conv = ChatStreamToMessagesStream(
        "claude-x", names or ToolNameMap(), "msg_1", input_tokens, **kw
    )
    raw = conv.start()
    for c in chunks:
        raw += conv.feed(data_chunk(c))
    raw += conv.finish()
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert stream_invariant_violations(events) == []
    return events, conv


def sdk_message(events):
    """Replay events through the anthropic SDK's own stream accumulator."""
    streaming = pytest.importorskip("anthropic.lib.streaming._messages")
    accumulate = streaming.accumulate_event
    params = inspect.signature(accumulate).parameters
    snapshot = None
    json_bufs: dict = {}
    for _, data in events:
        if data["type"] in ("ping", "error"):
            continue
        kwargs = {"event": data, "current_snapshot": snapshot}
        if "json_bufs" in params:
            kwargs["json_bufs"] = json_bufs
        snapshot = accumulate(**kwargs)
    return snapshot


def blocks_of(events):
    """Rebuild content blocks from raw events (independent of the SDK)."""
    blocks = []
    for name, data in events:
        if name == "content_block_start":
            blocks.append(dict(data["content_block"], _json=""))
        elif name == "content_block_delta":
            b, d = blocks[data["index"]], data["delta"]
            if d["type"] == "text_delta":
                b["text"] += d["text"]
            elif d["type"] == "thinking_delta":
                b["thinking"] += d["thinking"]
            elif d["type"] == "input_json_delta":
                b["_json"] += d["partial_json"]
    for b in blocks:
        if b["type"] == "tool_use":
            b["input"] = orjson.loads(b["_json"]) if b["_json"] else {}
        del b["_json"]
    return blocks


def final_delta(events):
    return next(d for n, d in events if n == "message_delta")


BASE = {"model": "claude-x", "max_tokens": 256}


def translate(messages, **extra):
    return messages_to_chat_request({**BASE, "messages": messages, **extra}, upstream_model="up")


# -- request ------------------------------------------------------------------


def test_request_basic_fields():
    req, names = translate(
        [{"role": "user", "content": "hi"}],
        system="Be terse.",
        stop_sequences=["###", "END"],
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "u-1"},
        stream=True,
        thinking={"type": "enabled", "budget_tokens": 2000},
    )
    assert req == {
        "model": "up",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
        "max_tokens": 256,
        "stop": ["###", "END"],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "user": "u-1",
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert not names


def test_system_blocks_joined_with_newline_and_cache_control_dropped():
    system = [
        {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "B"},
    ]
    req, _ = translate([{"role": "user", "content": "hi"}], system=system)
    assert req["messages"][0] == {"role": "system", "content": "A\nB"}


def test_empty_system_is_omitted():
    req, _ = translate([{"role": "user", "content": "hi"}], system=[])
    assert req["messages"][0]["role"] == "user"


def test_user_images_become_image_url_parts():
    req, _ = translate(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": "iVBOR"}},
                    {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
                ],
            }
        ]
    )  # fmt: skip
    assert req["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
            ],
        }
    ]


def test_multiple_user_text_blocks_become_one_string():
    req, _ = translate(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            }
        ]
    )
    assert req["messages"] == [{"role": "user", "content": "a\nb"}]


def test_text_document_becomes_text_and_binary_document_dropped():
    req, _ = translate(
        [
            {
                "role": "user",
                "content": [
                    {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                                    "data": "doc body"}},
                    {"type": "document", "source": {"type": "base64",
                                                    "media_type": "application/pdf", "data": "JVB"}},
                    {"type": "text", "text": "summarise"},
                ],
            }
        ]
    )  # fmt: skip
    assert req["messages"] == [{"role": "user", "content": "doc body\nsummarise"}]


def test_full_tool_round_trip_history():
    req, _ = translate(
        [
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                     "input": {"city": "Oslo"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12°C",
                     "is_error": False},
                    {"type": "text", "text": "And tomorrow?"},
                ],
            },
        ]
    )  # fmt: skip
    assert req["messages"] == [
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_01",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_01", "content": "12°C"},
        {"role": "user", "content": "And tomorrow?"},
    ]


def test_assistant_with_only_tool_use_has_empty_string_content():
    req, _ = translate(
        [
            {"role": "user", "content": "go"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1"}]},
        ]
    )  # fmt: skip
    assert req["messages"][1]["content"] == ""
    assert req["messages"][1]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert req["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": ""}


def test_tool_result_blocks_text_joined_images_moved_to_user_message():
    req, _ = translate(
        [
            {"role": "user", "content": "shot"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot",
                                               "input": {}}]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [
                            {"type": "text", "text": "line1"},
                            {"type": "image", "source": {"type": "base64",
                                                         "media_type": "image/jpeg", "data": "/9j"}},
                            {"type": "text", "text": "line2"},
                        ],
                    }
                ],
            },
        ]
    )  # fmt: skip
    assert req["messages"][2] == {"role": "tool", "tool_call_id": "t1", "content": "line1\nline2"}
    assert req["messages"][3] == {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j"}}],
    }


def test_tool_result_is_error_prefix():
    req, _ = translate(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                               "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": "boom", "is_error": True}]},
        ]
    )  # fmt: skip
    assert req["messages"][2]["content"] == "Error: boom"


def test_consecutive_same_role_turns_are_merged():
    req, _ = translate(
        [
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "c"},
            {"role": "assistant", "content": "d"},
            {"role": "user", "content": "e"},
        ]
    )
    assert req["messages"] == [
        {"role": "user", "content": "a\nb"},
        {"role": "assistant", "content": "c\nd"},
        {"role": "user", "content": "e"},
    ]


def test_turn_that_translates_to_nothing_does_not_break_alternation():
    req, _ = translate(
        [
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
            {"role": "user", "content": "b"},
        ]
    )
    assert req["messages"] == [{"role": "user", "content": "a\nb"}]


def test_tools_and_tool_choice_mapping():
    tools = [
        {"name": "get_weather", "description": "Weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        {"name": "noop", "input_schema": {}},
    ]  # fmt: skip
    for choice, expected in [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"},
         {"type": "function", "function": {"name": "get_weather"}}),
    ]:  # fmt: skip
        req, _ = translate([{"role": "user", "content": "x"}], tools=tools, tool_choice=choice)
        assert req["tool_choice"] == expected
        assert "parallel_tool_calls" not in req
    assert req["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        },
        {
            "type": "function",
            "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
        },
    ]


def test_disable_parallel_tool_use():
    tools = [{"name": "f", "input_schema": {"type": "object"}}]
    req, _ = translate(
        [{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )
    assert req["parallel_tool_calls"] is False
    assert req["tool_choice"] == "required"


def test_server_tools_are_dropped_and_cannot_be_forced():
    tools = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "custom", "name": "f", "input_schema": {"type": "object"}},
    ]
    req, _ = translate([{"role": "user", "content": "x"}], tools=tools)
    assert [t["function"]["name"] for t in req["tools"]] == ["f"]
    with pytest.raises(TranslationError, match="tool_choice.name"):
        translate(
            [{"role": "user", "content": "x"}],
            tools=tools,
            tool_choice={"type": "tool", "name": "web_search"},
        )


def test_tool_choice_without_client_tools_is_omitted():
    req, _ = translate(
        [{"role": "user", "content": "x"}],
        tools=[{"type": "web_search_20250305", "name": "web_search"}],
        tool_choice={"type": "auto"},
    )
    assert "tools" not in req and "tool_choice" not in req


def test_non_stream_request_has_no_stream_options():
    req, _ = translate([{"role": "user", "content": "x"}], stream=False)
    assert "stream" not in req and "stream_options" not in req


def test_input_body_is_not_mutated():
    schema = {"properties": {}}
    body = {**BASE, "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": schema}]}  # fmt: skip
    snapshot = orjson.dumps(body)
    messages_to_chat_request(body, upstream_model="up")
    assert orjson.dumps(body) == snapshot


# -- tool name mapping --------------------------------------------------------


def test_tool_name_map_is_deterministic_and_reversible():
    a, b = ToolNameMap(), ToolNameMap()
    weird = "mcp__server.name/with spaces"
    up = a.upstream(weird)
    assert up == b.upstream(weird)
    assert a.client(up) == weird
    assert a.upstream("fine_name-1") == "fine_name-1"
    assert a.client("unknown") == "unknown"
    assert a.renamed == {weird: up}
    assert bool(a)


# -- non-stream response ------------------------------------------------------


def response(message, finish="stop", usage=None, **choice_extra):
    return {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1,
        "model": "qwen",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice_extra}],
        "usage": usage or {"prompt_tokens": 52, "completion_tokens": 17, "total_tokens": 69},
    }


def test_response_text():
    msg = chat_response_to_message(
        response({"role": "assistant", "content": "Hello"}), model="claude-x", names=ToolNameMap()
    )
    assert msg == {
        "id": "msg_chatcmpl-abc",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 52,
            "output_tokens": 17,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_response_tool_calls_reasoning_and_cached_usage():
    names = ToolNameMap()
    up = names.upstream("a.b")
    resp = response(
        {
            "role": "assistant",
            "content": "Checking.",
            "reasoning_content": "think",
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                {"id": "call_2", "type": "function", "function": {"name": up, "arguments": ""}},
            ],
        },
        finish="tool_calls",
        usage={"prompt_tokens": 100, "completion_tokens": 7, "total_tokens": 107,
               "prompt_tokens_details": {"cached_tokens": 60}},
    )  # fmt: skip
    msg = chat_response_to_message(resp, model="claude-x", names=names)
    assert msg["content"] == [
        {"type": "thinking", "thinking": "think", "signature": ""},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "call_2", "name": "a.b", "input": {}},
    ]
    assert msg["stop_reason"] == "tool_use"
    assert msg["usage"] == {
        "input_tokens": 40,
        "output_tokens": 7,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
    }
    no_thinking = chat_response_to_message(resp, model="m", names=names, emit_thinking=False)
    assert no_thinking["content"][0]["type"] == "text"


@pytest.mark.parametrize(
    ("finish", "expected"),
    [("stop", "end_turn"), ("length", "max_tokens"), ("tool_calls", "end_turn"),
     ("content_filter", "refusal"), (None, "end_turn"), ("weird", "end_turn")],
)  # fmt: skip
def test_response_stop_reason_mapping(finish, expected):
    # "tool_calls" without any call: no tool_use block, so promising tool_use would stall clients
    msg = chat_response_to_message(
        response({"role": "assistant", "content": "x"}, finish=finish),
        model="m",
        names=ToolNameMap(),
    )
    assert msg["stop_reason"] == expected


def test_response_length_maps_to_max_tokens_and_token_id_stop_reason_ignored():
    msg = chat_response_to_message(
        response({"role": "assistant", "content": "x"}, finish="length"),
        model="m",
        names=ToolNameMap(),
    )
    assert msg["stop_reason"] == "max_tokens"
    msg = chat_response_to_message(
        response({"role": "assistant", "content": "x"}, stop_reason=128001),
        model="m",
        names=ToolNameMap(),
    )
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)


def test_response_stop_sequence_only_if_client_asked_for_it():
    resp = response({"role": "assistant", "content": "x"}, stop_reason="<|im_end|>")
    msg = chat_response_to_message(resp, model="m", names=ToolNameMap(), stop_sequences=["###"])
    assert (msg["stop_reason"], msg["stop_sequence"]) == ("end_turn", None)


def test_response_empty_choices_and_missing_usage():
    msg = chat_response_to_message({"id": "x", "choices": []}, model="m", names=ToolNameMap())
    assert msg["content"] == []
    assert msg["stop_reason"] == "end_turn"
    assert msg["usage"]["output_tokens"] == 0


def test_response_duplicate_or_missing_tool_ids_are_regenerated():
    resp = response(
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "same", "function": {"name": "f", "arguments": "{}"}},
            {"id": "same", "function": {"name": "f", "arguments": "{}"}},
            {"function": {"name": "f", "arguments": "{}"}},
        ]},
        finish="tool_calls",
    )  # fmt: skip
    ids = [
        b["id"] for b in chat_response_to_message(resp, model="m", names=ToolNameMap())["content"]
    ]
    assert ids[0] == "same"
    assert len(set(ids)) == 3
    assert all(i.startswith("toolu_") for i in ids[1:])


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ('{"a":1}', {"a": 1}),
        ("", {}),
        ("  ", {}),
        (None, {}),
        ({"a": 1}, {"a": 1}),
        ('"{\\"a\\": 1}"', {"a": 1}),
        ('{"a":', {"a": None}),
        ("[1,2]", {"_raw_arguments": "[1,2]"}),
        ("42", {"_raw_arguments": "42"}),
    ],
)
def test_parse_tool_arguments_is_lenient_and_never_a_string(arguments, expected):
    assert parse_tool_arguments(arguments) == expected


# -- stream -------------------------------------------------------------------


def test_stream_plain_text_vllm_style():
    events, conv = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hel"}),
            chunk({"content": "lo"}),
            chunk({}, "stop"),
            usage_chunk(52, 2),
        ]
    )
    names = [n for n, _ in events]
    assert names == [
        "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_delta", "content_block_stop", "message_delta", "message_stop",
    ]  # fmt: skip
    start = events[0][1]["message"]
    assert start["id"] == "msg_1" and start["model"] == "claude-x"
    assert start["usage"]["input_tokens"] == 11 and start["usage"]["output_tokens"] == 0
    assert blocks_of(events) == [{"type": "text", "text": "Hello"}]
    assert final_delta(events) == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"input_tokens": 52, "output_tokens": 2, "cache_creation_input_tokens": 0,
                  "cache_read_input_tokens": 0},
    }  # fmt: skip
    assert (conv.prompt_tokens, conv.completion_tokens, conv.cached_tokens) == (52, 2, None)
    assert conv.stop_reason == "end_turn"
    snap = sdk_message(events)
    assert snap.content[0].text == "Hello"
    assert snap.stop_reason == "end_turn"
    assert snap.usage.output_tokens == 2


def test_stream_text_then_tool_calls_llamacpp_style():
    events, conv = run(
        [
            chunk({"role": "assistant", "content": None}),
            chunk({"content": "Let me check."}),
            chunk({"tool_calls": [tc(0, "abc123", "get_weather", "")]}),
            chunk({"tool_calls": [tc(0, args='{"')]}),
            chunk({"tool_calls": [tc(0, args='city":"')]}),
            chunk({"tool_calls": [tc(0, args='Oslo"}')]}),
            chunk({}, "tool_calls"),
            {"choices": [], "usage": {"prompt_tokens": 80, "completion_tokens": 20},
             "timings": {"predicted_ms": 1.0}},
        ]
    )  # fmt: skip
    assert blocks_of(events) == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "abc123", "name": "get_weather", "input": {"city": "Oslo"}},
    ]
    assert final_delta(events)["delta"]["stop_reason"] == "tool_use"
    snap = sdk_message(events)
    assert snap.content[1].input == {"city": "Oslo"}
    assert conv.saw_tool_use


def test_stream_parallel_tool_calls_sequential():
    events, _ = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"tool_calls": [tc(0, "c1", "f", '{"a":')]}),
            chunk({"tool_calls": [tc(0, args="1}")]}),
            chunk({"tool_calls": [tc(1, "c2", "g", "")]}),
            chunk({"tool_calls": [tc(1, args='{"b":2}')]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert blocks_of(events) == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {"b": 2}},
    ]


def test_stream_interleaved_tool_arguments_are_buffered_not_lost():
    events, conv = run(
        [
            chunk({"tool_calls": [tc(0, "c1", "f", '{"a":'), tc(1, "c2", "g", '{"b":')]}),
            chunk({"tool_calls": [tc(1, args="2}")]}),
            chunk({"tool_calls": [tc(0, args="1}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert blocks_of(events) == [
        {"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}},
        {"type": "tool_use", "id": "c2", "name": "g", "input": {"b": 2}},
    ]
    assert conv.dropped_argument_fragments == 0


def test_stream_fragment_for_flushed_call_is_counted_not_emitted():
    events, conv = run(
        [
            chunk({"tool_calls": [tc(0, "c1", "f", '{"a":1}')]}),
            chunk({"content": "Now text."}),
            chunk({"tool_calls": [tc(0, args=', "late": true')]}),
            chunk({}, "stop"),
        ]
    )
    assert blocks_of(events)[0]["input"] == {"a": 1}
    assert conv.dropped_argument_fragments == 1


def test_stream_ollama_style_whole_call_in_one_chunk_with_stop_finish():
    events, _ = run(
        [
            chunk({"role": "assistant", "content": ""}),
            chunk({"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_x", "index": 0, "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}]}),
            chunk({"role": "assistant", "content": ""}, "stop"),
            usage_chunk(30, 10),
        ]
    )  # fmt: skip
    assert blocks_of(events) == [
        {"type": "tool_use", "id": "call_x", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    assert final_delta(events)["delta"]["stop_reason"] == "tool_use"


def test_stream_tool_call_without_index_and_object_arguments():
    events, _ = run(
        [
            chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": {"x": 1}}}]}),
            chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
            chunk({}, "tool_calls"),
        ]
    )
    blocks = blocks_of(events)
    assert [(b["id"], b["name"], b["input"]) for b in blocks] == [
        ("a", "f", {"x": 1}),
        ("b", "g", {}),
    ]


def test_stream_missing_and_duplicate_tool_ids_generated():
    events, _ = run(
        [
            chunk({"tool_calls": [tc(0, name="f", args="{}")]}),
            chunk({"tool_calls": [tc(1, "dup", "g", "{}")]}),
            chunk({"tool_calls": [tc(2, "dup", "h", "{}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    ids = [b["id"] for b in blocks_of(events)]
    assert ids[0].startswith("toolu_") and ids[1] == "dup"
    assert len(set(ids)) == 3


def test_stream_reasoning_content_becomes_thinking_block():
    events, _ = run(
        [
            chunk({"role": "assistant", "reasoning_content": ""}),
            chunk({"reasoning_content": "Let me "}),
            chunk({"reasoning": "think."}),
            chunk({"content": "Answer"}),
            chunk({}, "stop"),
        ]
    )
    assert blocks_of(events) == [
        {"type": "thinking", "thinking": "Let me think.", "signature": ""},
        {"type": "text", "text": "Answer"},
    ]
    snap = sdk_message(events)
    assert snap.content[0].type == "thinking" and snap.content[1].text == "Answer"


def test_stream_reasoning_dropped_when_disabled():
    events, _ = run(
        [chunk({"reasoning_content": "hidden"}), chunk({"content": "A"}), chunk({}, "stop")],
        emit_thinking=False,
    )
    assert blocks_of(events) == [{"type": "text", "text": "A"}]


def test_stream_azure_prompt_filter_and_no_delta_chunks():
    events, _ = run(
        [
            {"id": "", "object": "", "created": 0, "model": "", "choices": [],
             "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]},
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}, content_filter_results={"hate": {"filtered": False}}),
            chunk(no_delta=True, content_filter_offsets={"start_offset": 0}),
            chunk({}, "stop"),
        ]
    )  # fmt: skip
    assert blocks_of(events) == [{"type": "text", "text": "Hi"}]


def test_stream_content_filter_maps_to_refusal():
    events, _ = run([chunk({"content": "Par"}), chunk({}, "content_filter")])
    assert final_delta(events)["delta"]["stop_reason"] == "refusal"


def test_stream_length_maps_to_max_tokens():
    events, _ = run([chunk({"content": "Par"}), chunk({}, "length")])
    assert final_delta(events)["delta"]["stop_reason"] == "max_tokens"


def test_stream_continuous_usage_keeps_latest():
    events, conv = run(
        [
            chunk({"content": "a"}, usage={"prompt_tokens": 9, "completion_tokens": 1}),
            chunk({"content": "b"}, usage={"prompt_tokens": 9, "completion_tokens": 2}),
            chunk({}, "stop", usage={"prompt_tokens": 9, "completion_tokens": 3}),
        ]
    )
    assert final_delta(events)["usage"]["output_tokens"] == 3
    assert conv.completion_tokens == 3


def test_stream_without_usage_estimates_output_and_keeps_input_estimate():
    events, conv = run([chunk({"content": "x" * 40}), chunk({}, "stop")], input_tokens=77)
    usage = final_delta(events)["usage"]
    assert usage["output_tokens"] == 10
    assert usage["input_tokens"] == 77
    assert conv.completion_tokens is None and conv.output_tokens == 10


def test_stream_empty_response_has_no_blocks():
    events, _ = run([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])
    assert blocks_of(events) == []
    assert final_delta(events)["usage"]["output_tokens"] == 0


def test_stream_whitespace_only_answer_is_kept():
    events, _ = run([chunk({"content": "\n"}), chunk({}, "stop")])
    assert blocks_of(events) == [{"type": "text", "text": "\n"}]


def test_stream_leading_whitespace_joins_following_text():
    events, _ = run([chunk({"content": "\n\n"}), chunk({"content": "Hi"}), chunk({}, "stop")])
    assert blocks_of(events) == [{"type": "text", "text": "\n\nHi"}]


def test_stream_whitespace_between_tool_calls_does_not_split_blocks():
    events, conv = run(
        [
            chunk({"tool_calls": [tc(0, "c1", "f", '{"a":')]}),
            chunk({"content": "\n"}),
            chunk({"tool_calls": [tc(0, args="1}")]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert blocks_of(events) == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]
    assert conv.dropped_argument_fragments == 0


def test_stream_tool_name_arriving_after_id():
    events, _ = run(
        [
            chunk({"tool_calls": [tc(0, "c1", None, "")]}),
            chunk({"tool_calls": [tc(0, name="f", args='{"a":1}')]}),
            chunk({}, "tool_calls"),
        ]
    )
    assert blocks_of(events) == [{"type": "tool_use", "id": "c1", "name": "f", "input": {"a": 1}}]


def test_stream_legacy_function_call_delta():
    events, _ = run(
        [
            chunk({"function_call": {"name": "f", "arguments": ""}}),
            chunk({"function_call": {"arguments": '{"a":1}'}}),
            chunk({}, "function_call"),
        ]
    )
    blocks = blocks_of(events)
    assert (blocks[0]["name"], blocks[0]["input"]) == ("f", {"a": 1})
    assert final_delta(events)["delta"]["stop_reason"] == "tool_use"


def test_stream_error_event_and_nothing_after():
    conv = ChatStreamToMessagesStream("m", ToolNameMap(), "msg_1", 0)
    raw = conv.start() + conv.feed(data_chunk(chunk({"content": "Hi"})))
    raw += conv.fail("Overloaded", "overloaded_error")
    assert conv.feed(data_chunk(chunk({"content": "more"}))) == b""
    assert conv.finish() == b""
    assert conv.fail("x") == b""
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert events[-1] == (
        "error",
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    )
    assert stream_invariant_violations(events) == []


def test_stream_start_is_idempotent_and_feed_starts_implicitly():
    conv = ChatStreamToMessagesStream("m", ToolNameMap(), "abc", 0)
    raw = conv.feed(data_chunk(chunk({"content": "x"})))
    assert raw.startswith(b"event: message_start\n")
    assert conv.start() == b""
    raw += conv.finish()
    assert conv.finish() == b""
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert events[0][1]["message"]["id"] == "msg_abc"
    assert stream_invariant_violations(events) == []


def test_stream_finish_reason_property_detects_truncation():
    conv = ChatStreamToMessagesStream("m", ToolNameMap(), "msg_1", 0)
    conv.start()
    conv.feed(data_chunk(chunk({"content": "cut"})))
    assert conv.finish_reason is None  # caller should send error(), not finish()
    conv.feed(data_chunk(chunk({}, "stop")))
    assert conv.finish_reason == "stop"
    assert conv.stop_reason is None  # only known once finish() ran
    conv.finish()
    assert conv.stop_reason == "end_turn"


def test_stream_ignores_garbage_and_other_choice_indexes():
    events, _ = run(
        [
            "not a dict",
            {"choices": "nope"},
            {"choices": [{"index": 1, "delta": {"content": "other"}}]},
            chunk({"content": "mine"}),
            chunk({}, "stop"),
        ]
    )
    assert blocks_of(events) == [{"type": "text", "text": "mine"}]
