"""OpenAI client → Anthropic-native backend: request, response, stream."""

import orjson
import pytest

from apps.gateway.protocol.anthropic import messages_sse_event
from apps.gateway.protocol.openai_to_anthropic import (
    DEFAULT_MAX_TOKENS,
    MessagesStreamToChatStream,
    TranslationError,
    chat_to_messages_request,
    message_response_to_chat,
    stop_reason_to_finish_reason,
)


def translate(messages, **extra):
    return chat_to_messages_request({"model": "gpt-x", "messages": messages, **extra},
                                    upstream_model="claude-up")  # fmt: skip


# -- request ------------------------------------------------------------------


def test_request_basic_fields():
    req = translate(
        [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
            {"role": "user", "content": "hi"},
        ],
        stop="###",
        max_tokens=50,
        temperature=0.3,
        top_p=0.8,
        user="u-1",
        stream=True,
        stream_options={"include_usage": True},
        seed=1,
        presence_penalty=0.5,
        response_format={"type": "json_object"},
    )
    assert req == {
        "model": "claude-up",
        "max_tokens": 50,
        "system": "Be terse.\nUse metric.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "stop_sequences": ["###"],
        "temperature": 0.3,
        "top_p": 0.8,
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }


def test_max_tokens_default_and_max_completion_tokens_precedence():
    assert translate([{"role": "user", "content": "x"}])["max_tokens"] == DEFAULT_MAX_TOKENS
    req = translate([{"role": "user", "content": "x"}], max_tokens=10, max_completion_tokens=20)
    assert req["max_tokens"] == 20


def test_temperature_is_clamped_not_scaled():
    assert translate([{"role": "user", "content": "x"}], temperature=1.0)["temperature"] == 1.0
    assert translate([{"role": "user", "content": "x"}], temperature=1.7)["temperature"] == 1.0
    assert translate([{"role": "user", "content": "x"}], temperature=0)["temperature"] == 0.0


def test_stop_list_filters_whitespace_only():
    req = translate([{"role": "user", "content": "x"}], stop=["a", " ", "\n\n", "b"])
    assert req["stop_sequences"] == ["a", "b"]
    assert "stop_sequences" not in translate([{"role": "user", "content": "x"}], stop=None)


def test_user_image_parts():
    req = translate(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url",
                     "image_url": {"url": "data:image/png;base64,iVBOR", "detail": "auto"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.jpg"}},
                ],
            }
        ]
    )  # fmt: skip
    assert req["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
        {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
    ]


def test_pdf_file_part_becomes_document():
    req = translate(
        [{"role": "user", "content": [{"type": "file", "file": {
            "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBER"}}]}]
    )  # fmt: skip
    assert req["messages"][0]["content"] == [
        {"type": "document",
         "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBER"}}
    ]  # fmt: skip


@pytest.mark.parametrize(
    "part",
    [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
        {"type": "image_url", "image_url": {"url": "data:image/png,notbase64"}},
        {"type": "image_url", "image_url": {}},
    ],
)
def test_unsupported_parts_raise(part):
    with pytest.raises(TranslationError, match=r"messages\.0\.content\.0"):
        translate([{"role": "user", "content": [part]}])


def test_tool_round_trip_history():
    req = translate(
        [
            {"role": "user", "content": "Weather in Oslo and Bergen?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}},
                    {"id": "call_2", "type": "function",
                     "function": {"name": "get_weather", "arguments": "not json"}},
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "12°C"},
            {"role": "tool", "tool_call_id": "call_2",
             "content": [{"type": "text", "text": "9°C"}]},
            {"role": "user", "content": "Thanks"},
        ]
    )  # fmt: skip
    assert req["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Bergen?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Oslo"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather",
                 "input": {"_raw_arguments": "not json"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "12°C"},
                {"type": "tool_result", "tool_use_id": "call_2",
                 "content": [{"type": "text", "text": "9°C"}]},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]  # fmt: skip


def test_assistant_text_and_refusal_parts():
    req = translate(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": [{"type": "text", "text": "a"},
                                              {"type": "refusal", "refusal": "b"}]},
            {"role": "user", "content": "y"},
        ]
    )  # fmt: skip
    assert req["messages"][1] == {"role": "assistant", "content": [{"type": "text", "text": "ab"}]}


def test_final_assistant_prefill_trailing_whitespace_stripped():
    req = translate([{"role": "user", "content": "x"}, {"role": "assistant", "content": "Sure, "}])
    assert req["messages"][-1]["content"] == [{"type": "text", "text": "Sure,"}]
    req = translate([{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}])
    assert [m["role"] for m in req["messages"]] == ["user"]


def test_empty_messages_raise():
    with pytest.raises(TranslationError):
        translate([{"role": "system", "content": "only system"}])
    with pytest.raises(TranslationError):
        translate([{"role": "user", "content": ""}])


def test_n_greater_than_one_rejected():
    with pytest.raises(TranslationError, match="n:"):
        translate([{"role": "user", "content": "x"}], n=2)


def test_tools_and_tool_choice():
    tools = [
        {"type": "function", "function": {"name": "f", "description": "F",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "g"}},
    ]  # fmt: skip
    for choice, expected in [
        ("none", {"type": "none"}),
        ("auto", {"type": "auto"}),
        ("required", {"type": "any"}),
        ({"type": "function", "function": {"name": "g"}}, {"type": "tool", "name": "g"}),
    ]:
        req = translate([{"role": "user", "content": "x"}], tools=tools, tool_choice=choice)
        assert req["tool_choice"] == expected
    assert req["tools"] == [
        {"name": "f", "description": "F", "input_schema": {"type": "object", "properties": {}}},
        {"name": "g", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert "tool_choice" not in translate([{"role": "user", "content": "x"}], tools=tools)


def test_parallel_tool_calls_false():
    tools = [{"type": "function", "function": {"name": "f"}}]
    req = translate([{"role": "user", "content": "x"}], tools=tools, parallel_tool_calls=False)
    assert req["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}
    req = translate(
        [{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice="required",
        parallel_tool_calls=False,
    )
    assert req["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    req = translate(
        [{"role": "user", "content": "x"}],
        tools=tools,
        tool_choice="none",
        parallel_tool_calls=False,
    )
    assert req["tool_choice"] == {"type": "none"}


def test_tool_choice_without_tools_is_dropped_and_non_function_tools_rejected():
    assert "tool_choice" not in translate([{"role": "user", "content": "x"}], tool_choice="auto")
    with pytest.raises(TranslationError, match="tools.0.type"):
        translate([{"role": "user", "content": "x"}], tools=[{"type": "custom", "custom": {}}])


def test_legacy_functions_and_function_call():
    req = translate(
        [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None,
             "function_call": {"name": "f", "arguments": '{"a":1}'}},
            {"role": "function", "name": "f", "content": "ok"},
        ],
        functions=[{"name": "f", "parameters": {"type": "object"}}],
        function_call={"name": "f"},
    )  # fmt: skip
    tool_use = req["messages"][1]["content"][0]
    result = req["messages"][2]["content"][0]
    assert tool_use["type"] == "tool_use" and tool_use["input"] == {"a": 1}
    assert result == {"type": "tool_result", "tool_use_id": tool_use["id"], "content": "ok"}
    assert req["tools"] == [{"name": "f", "input_schema": {"type": "object"}}]
    assert req["tool_choice"] == {"type": "tool", "name": "f"}


# -- non-stream response --------------------------------------------------------


def test_response_text_and_usage():
    resp = {
        "id": "msg_01X",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 20,
                  "cache_read_input_tokens": 30},
    }  # fmt: skip
    out = message_response_to_chat(resp, model="gpt-x", created=123)
    assert out == {
        "id": "chatcmpl-msg_01X",
        "object": "chat.completion",
        "created": 123,
        "model": "gpt-x",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello", "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 60,
            "completion_tokens": 5,
            "total_tokens": 65,
            "prompt_tokens_details": {"cached_tokens": 30},
        },
    }


def test_response_tool_use_and_thinking():
    resp = {
        "id": "msg_1",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {"type": "text", "text": "Checking."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "get_weather",
                "input": {"city": "Oslo"},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    out = message_response_to_chat(resp, model="gpt-x")
    msg = out["choices"][0]["message"]
    assert msg["content"] == "Checking."
    assert msg["reasoning_content"] == "hmm"
    assert msg["tool_calls"] == [
        {"id": "toolu_01", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'}}
    ]  # fmt: skip
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert isinstance(out["created"], int)


def test_response_tool_only_has_null_content():
    resp = {"id": "m", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
            "stop_reason": "tool_use"}  # fmt: skip
    msg = message_response_to_chat(resp, model="x")["choices"][0]["message"]
    assert msg["content"] is None
    empty = message_response_to_chat(
        {"id": "m", "content": [], "stop_reason": "end_turn"}, model="x"
    )
    assert empty["choices"][0]["message"]["content"] == ""


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("pause_turn", "stop"),
        ("max_tokens", "length"),
        ("model_context_window_exceeded", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reason_to_finish_reason(stop_reason, finish):
    assert stop_reason_to_finish_reason(stop_reason) == finish


# -- stream ---------------------------------------------------------------------


def anthropic_events(*blocks, stop_reason="end_turn", usage=None):
    """A realistic Anthropic event sequence; blocks = ("text", [deltas]) | ("tool", id, name, [json])."""
    events = [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude", "content": [],
            "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 40, "output_tokens": 1, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0}}}),
        ("ping", {"type": "ping"}),
    ]  # fmt: skip
    for i, block in enumerate(blocks):
        if block[0] == "text":
            start = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": t} for t in block[1]]
        elif block[0] == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in block[1]]
            deltas.append({"type": "signature_delta", "signature": "sig"})
        else:
            start = {"type": "tool_use", "id": block[1], "name": block[2], "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in block[3]]
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": i, "content_block": start},
            )
        )
        events += [
            ("content_block_delta", {"type": "content_block_delta", "index": i, "delta": d})
            for d in deltas
        ]
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                "usage": usage or {"output_tokens": 17},
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))
    return events  # fmt: skip


def convert(events, include_usage=True):
    conv = MessagesStreamToChatStream("gpt-x", include_usage, "chatcmpl-1", 1730000000)
    raw = b"".join(conv.feed(messages_sse_event(name, data)) for name, data in events)
    assert raw.endswith(b"data: [DONE]\n\n")
    frames = [f for f in raw.split(b"\n\n") if f]
    assert all(f.startswith(b"data: ") and b"\nevent:" not in f for f in frames)
    chunks = [orjson.loads(f[6:]) for f in frames[:-1]]
    return chunks, conv


def openai_final(chunks):
    streaming = pytest.importorskip("openai.lib.streaming.chat")
    types = pytest.importorskip("openai.types.chat")
    state = streaming.ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(types.ChatCompletionChunk.model_validate(c))
    return state.get_final_completion()


def test_stream_text_with_usage():
    chunks, conv = convert(
        anthropic_events(("text", ["Hel", "lo"]),
                         usage={"output_tokens": 17, "cache_read_input_tokens": 10})
    )  # fmt: skip
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"] for c in chunks[1:3]] == [
        {"content": "Hel"},
        {"content": "lo"},
    ]
    assert chunks[3]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                       "finish_reason": "stop"}  # fmt: skip
    assert chunks[4]["choices"] == []
    assert chunks[4]["usage"] == {
        "prompt_tokens": 50,
        "completion_tokens": 17,
        "total_tokens": 67,
        "prompt_tokens_details": {"cached_tokens": 10},
    }
    assert all(c["usage"] is None for c in chunks[:4])
    assert {c["id"] for c in chunks} == {"chatcmpl-1"}
    assert {c["created"] for c in chunks} == {1730000000}
    assert (conv.prompt_tokens, conv.completion_tokens, conv.cached_tokens) == (50, 17, 10)
    assert (conv.stop_reason, conv.finish_reason) == ("end_turn", "stop")
    final = openai_final(chunks)
    assert final.choices[0].message.content == "Hello"
    assert final.usage.total_tokens == 67


def test_stream_without_include_usage_has_no_usage_key_or_chunk():
    chunks, conv = convert(anthropic_events(("text", ["Hi"])), include_usage=False)
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert conv.completion_tokens == 17  # still metered


def test_stream_tool_calls():
    chunks, _ = convert(
        anthropic_events(
            ("text", ["Checking."]),
            ("tool", "toolu_01", "get_weather", ['{"city": ', '"Oslo"}']),
            ("tool", "toolu_02", "get_time", ["", "{}"]),
            stop_reason="tool_use",
        )
    )
    tool_deltas = [c["choices"][0]["delta"]["tool_calls"] for c in chunks
                   if c["choices"] and "tool_calls" in c["choices"][0]["delta"]]  # fmt: skip
    assert tool_deltas[0] == [{"index": 0, "id": "toolu_01", "type": "function",
                               "function": {"name": "get_weather", "arguments": ""}}]  # fmt: skip
    assert tool_deltas[1] == [{"index": 0, "function": {"arguments": '{"city": '}}]
    assert tool_deltas[3][0]["index"] == 1 and tool_deltas[3][0]["id"] == "toolu_02"
    assert all("function" in d[0] for d in tool_deltas)
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    final = openai_final(chunks)
    calls = final.choices[0].message.tool_calls
    assert [(c.function.name, c.function.arguments) for c in calls] == [
        ("get_weather", '{"city": "Oslo"}'),
        ("get_time", "{}"),
    ]
    assert final.choices[0].message.content == "Checking."


def test_stream_thinking_becomes_reasoning_content():
    chunks, _ = convert(anthropic_events(("thinking", ["hm", "m"]), ("text", ["A"])))
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert {"reasoning_content": "hm"} in deltas and {"content": "A"} in deltas
    assert not any("signature" in orjson.dumps(d).decode() for d in deltas)


def test_stream_max_tokens_maps_to_length():
    chunks, conv = convert(anthropic_events(("text", ["A"]), stop_reason="max_tokens"))
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert conv.finish_reason == "length"


def test_stream_tool_input_given_whole_in_block_start():
    events = anthropic_events(("tool", "t1", "f", []), stop_reason="tool_use")
    events[2][1]["content_block"]["input"] = {"a": 1}
    chunks, _ = convert(events)
    final = openai_final(chunks)
    assert final.choices[0].message.tool_calls[0].function.arguments == '{"a":1}'


def test_stream_error_event():
    conv = MessagesStreamToChatStream("gpt-x", True, "chatcmpl-1", 1)
    events = anthropic_events(("text", ["Hi"]))[:4]
    raw = b"".join(conv.feed(messages_sse_event(n, d)) for n, d in events)
    raw += conv.feed(messages_sse_event("error", {"type": "error",
                               "error": {"type": "overloaded_error", "message": "Overloaded"}}))  # fmt: skip
    assert raw.endswith(
        b'data: {"error":{"message":"Overloaded","type":"server_error","param":null,"code":null}}\n\n'
    )
    assert b"[DONE]" not in raw
    assert conv.feed(messages_sse_event("message_stop", {"type": "message_stop"})) == b""
    assert conv.fail("again") == b""


def test_stream_ignores_ping_unknown_and_signature_events():
    conv = MessagesStreamToChatStream("gpt-x", False, "c", 1)
    conv.feed(
        messages_sse_event("message_start", {"type": "message_start", "message": {"usage": {}}})
    )
    assert conv.feed(messages_sse_event("ping", {"type": "ping"})) == b""
    assert conv.feed(messages_sse_event("future_event", {"type": "future_event"})) == b""
    assert conv.feed(messages_sse_event("content_block_delta", {"type": "content_block_delta", "index": 9,
                                             "delta": {"type": "signature_delta"}})) == b""  # fmt: skip


def test_stream_message_stop_without_message_delta_still_finishes():
    conv = MessagesStreamToChatStream("gpt-x", False, "c", 1)
    raw = conv.feed(messages_sse_event("message_start", {"type": "message_start", "message": {}}))
    raw += conv.feed(messages_sse_event("message_stop", {"type": "message_stop"}))
    frames = [orjson.loads(f[6:]) for f in raw.split(b"\n\n") if f and f != b"data: [DONE]"]
    assert frames[-1]["choices"][0]["finish_reason"] == "stop"
    assert raw.endswith(b"data: [DONE]\n\n")
