"""Anthropic shapes: errors, request validation, SSE framing, token estimate."""

import copy

import orjson
import pytest

from apps.gateway.protocol.anthropic import (
    IMAGE_TOKEN_ESTIMATE,
    anthropic_error_body,
    anthropic_error_type_for_status,
    estimate_message_tokens,
    messages_sse_event,
    parse_sse_events,
    status_for_anthropic_error_type,
    stream_invariant_violations,
    validate_messages_request,
)

VALID = {
    "model": "claude-sonnet-4",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"},
                },
                {"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {"c": 1}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01", "content": "12°C"},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ],
    "stop_sequences": ["###"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "tools": [
        {"name": "get_weather", "input_schema": {"type": "object"}},
        {"type": "web_search_20250305", "name": "web_search"},
    ],
    "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
    "stream": True,
    "metadata": {"user_id": "u-1"},
    "thinking": {"type": "enabled", "budget_tokens": 1024},
}


def with_(path_value: dict) -> dict:
    body = copy.deepcopy(VALID)
    for path, value in path_value.items():
        target = body
        keys = path.split(".")
        for key in keys[:-1]:
            target = target[int(key)] if isinstance(target, list) else target[key]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        elif value is ...:
            target.pop(last, None)
        else:
            target[last] = value
    return body


# -- errors -------------------------------------------------------------------


def test_error_body_shape():
    assert anthropic_error_body("not_found_error", "model: foo", "req_1") == {
        "type": "error",
        "error": {"type": "not_found_error", "message": "model: foo"},
        "request_id": "req_1",
    }
    assert anthropic_error_body("api_error", "x")["request_id"] is None


@pytest.mark.parametrize(
    ("status", "error_type", "sent_status"),
    [
        (400, "invalid_request_error", 400),
        (401, "authentication_error", 401),
        (402, "billing_error", 402),
        (403, "permission_error", 403),
        (404, "not_found_error", 404),
        (413, "request_too_large", 413),
        (422, "invalid_request_error", 400),
        (429, "rate_limit_error", 429),
        (500, "api_error", 500),
        (502, "api_error", 500),
        (503, "overloaded_error", 529),
        (504, "timeout_error", 504),
        (529, "overloaded_error", 529),
    ],
)
def test_error_type_for_status(status, error_type, sent_status):
    assert anthropic_error_type_for_status(status) == error_type
    assert status_for_anthropic_error_type[error_type] == sent_status


# -- validation ---------------------------------------------------------------


def test_valid_request_passes():
    assert validate_messages_request(VALID) is None
    assert validate_messages_request({"model": "m", "max_tokens": 1, "messages": [
        {"role": "user", "content": "hi"}
    ]}) is None  # fmt: skip


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"model": ...}, "model: Field required"),
        ({"model": 3}, "model:"),
        ({"model": ""}, "model:"),
        ({"max_tokens": ...}, "max_tokens: Field required"),
        ({"max_tokens": "10"}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": True}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": 1.5}, "max_tokens: Input should be a valid integer"),
        ({"max_tokens": 0}, "max_tokens: Input should be greater than or equal to 1"),
        ({"messages": ...}, "messages: Field required"),
        ({"messages": {}}, "messages: Input should be a valid list"),
        ({"messages": []}, "messages: at least one message is required"),
        ({"messages.1": "hi"}, "messages.1: Input should be an object"),
        ({"messages.1.role": "system"}, "messages.1.role: Input should be 'user' or 'assistant'"),
        ({"messages.1.role": ...}, "messages.1.role: Field required"),
        ({"messages.1.content": ...}, "messages.1.content: Field required"),
        ({"messages.1.content": 5}, "messages.1.content:"),
        ({"messages.1.content.1": {"text": "x"}}, "messages.1.content.1.type: Field required"),
        ({"messages.1.content.1": "x"}, "messages.1.content.1: Input should be an object"),
        ({"messages.1.content.1.text": None}, "messages.1.content.1.text: Field required"),
        ({"messages.1.content.2.input": "{}"}, "messages.1.content.2.input:"),
        ({"messages.1.content.2.id": ...}, "messages.1.content.2.id: Field required"),
        ({"messages.0.content.1.source": ...}, "messages.0.content.1.source: Field required"),
        ({"messages.0.content.2.source.url": 1}, "messages.0.content.2.source.url"),
        ({"messages.2.content.0.tool_use_id": ...}, "messages.2.content.0.tool_use_id"),
        ({"messages.2.content.0.content": 7}, "messages.2.content.0.content:"),
        ({"messages.2.content.0.content": [{"x": 1}]}, "messages.2.content.0.content.0.type"),
        ({"system": 5}, "system:"),
        ({"system": [{"type": "image"}]}, "system.0.type: Input should be 'text'"),
        ({"stop_sequences": "###"}, "stop_sequences: Input should be a valid list"),
        ({"stop_sequences": ["a", 1]}, "stop_sequences.1: Input should be a valid string"),
        ({"temperature": "hot"}, "temperature: Input should be a valid number"),
        ({"temperature": 1.5}, "temperature: Input should be between 0 and 1"),
        ({"top_p": -0.1}, "top_p:"),
        ({"top_k": 1.5}, "top_k: Input should be a valid integer"),
        ({"tools": {}}, "tools: Input should be a valid list"),
        ({"tools": [{"input_schema": {}}]}, "tools.0.name: Field required"),
        ({"tools": [{"name": "f"}]}, "tools.0.input_schema: Field required"),
        ({"tool_choice": "auto"}, "tool_choice: Input should be an object"),
        ({"tool_choice": {"type": "bogus"}}, "tool_choice.type"),
        ({"tool_choice": {"type": "tool"}}, "tool_choice.name: Field required"),
        (
            {"tool_choice": {"type": "any", "disable_parallel_tool_use": "yes"}},
            "tool_choice.disable_parallel_tool_use",
        ),
        ({"stream": "true"}, "stream: Input should be a valid boolean"),
        ({"metadata": []}, "metadata: Input should be an object"),
        ({"metadata": {"user_id": 5}}, "metadata.user_id"),
        ({"thinking": True}, "thinking:"),
        ({"thinking": {"type": "enabled", "budget_tokens": "1k"}}, "thinking.budget_tokens"),
        ({"thinking": {"budget_tokens": 1024}}, "thinking.type: Field required"),
        ({"messages.1.content.1.cache_control": "ephemeral"}, "messages.1.content.1.cache_control"),
        ({"system": [{"type": "text", "text": "x", "cache_control": 1}]}, "system.0.cache_control"),
        ({"tools": [{"name": "f", "input_schema": {}, "description": 1}]}, "tools.0.description"),
        (
            {"messages.0.content.0": {"type": "document", "source": {"type": "text", "data": 1}}},
            "messages.0.content.0.source.data",
        ),
        (
            {"messages.1.content.0": {"type": "thinking", "thinking": {"a": 1}, "signature": "s"}},
            "messages.1.content.0.thinking",
        ),
    ],
)
def test_invalid_requests_name_the_field(change, expected):
    error = validate_messages_request(with_(change))
    assert error is not None
    assert error.startswith(expected), error


def test_body_must_be_object():
    assert validate_messages_request([1, 2]) == "Request body must be a JSON object"
    assert validate_messages_request(None) == "Request body must be a JSON object"


def test_unknown_block_types_pass_validation():
    body = with_({"messages.0.content.0": {"type": "search_result", "whatever": 1}})
    assert validate_messages_request(body) is None


def test_count_tokens_variant_does_not_require_max_tokens():
    body = with_({"max_tokens": ...})
    assert validate_messages_request(body) == "max_tokens: Field required"
    assert validate_messages_request(body, require_max_tokens=False) is None
    assert validate_messages_request(with_({"max_tokens": 0}), require_max_tokens=False)


# -- SSE ------------------------------------------------------------------------


def test_messages_sse_event_framing():
    raw = messages_sse_event("ping", {"type": "ping"})
    assert raw == b'event: ping\ndata: {"type":"ping"}\n\n'
    raw = messages_sse_event("content_block_delta", {"type": "content_block_delta", "t": "é\n"})
    name, data = parse_sse_events(raw)[0]
    assert name == "content_block_delta"
    assert orjson.loads(data)["t"] == "é\n"
    assert raw.count(b"\n\n") == 1  # compact JSON: newlines inside strings stay escaped


def test_parse_sse_events_handles_crlf_comments_and_multiline():
    raw = b': keep-alive\r\n\r\nevent: a\r\ndata: {"x":\r\ndata: 1}\r\n\r\ndata:[DONE]\n\n'
    assert parse_sse_events(raw) == [("a", '{"x":\n1}'), (None, "[DONE]")]


def test_stream_invariant_checker_catches_violations():
    good = [
        ("message_start", {"type": "message_start", "message": {}}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "tool_use"}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "input_json_delta", "partial_json": "{}"}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {"output_tokens": 1}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    assert stream_invariant_violations(good) == []
    assert stream_invariant_violations(good[1:])  # no message_start
    assert stream_invariant_violations(good + [good[-1]])  # after message_stop
    bad_usage = [*good[:4], ("message_delta", {"type": "message_delta", "delta": {}}), good[5]]
    assert stream_invariant_violations(bad_usage)
    bad_json = copy.deepcopy(good)
    bad_json[2][1]["delta"]["partial_json"] = "{}{"
    assert stream_invariant_violations(bad_json)


# -- token estimate -------------------------------------------------------------


def test_estimate_tokens_counts_text_messages_images_and_tools():
    base = {"model": "m", "messages": [{"role": "user", "content": "x" * 400}]}
    one = estimate_message_tokens(base)
    assert one == 100 + 4 + 3
    with_system = estimate_message_tokens({**base, "system": "y" * 40})
    assert with_system == one + 10
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A"}}
    with_image = estimate_message_tokens(
        {
            **base,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "x" * 400}, img]}],
        }
    )
    assert with_image == one + IMAGE_TOKEN_ESTIMATE
    tools = [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]
    assert estimate_message_tokens({**base, "tools": tools}) > one + 8
    history = {
        "messages": [
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                               "input": {"q": "z" * 100}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                          "content": [{"type": "text", "text": "w" * 100}]}]},
        ]
    }  # fmt: skip
    assert estimate_message_tokens(history) > 50


def test_estimate_tokens_tolerates_odd_shapes():
    assert estimate_message_tokens({}) == 3
    assert estimate_message_tokens({"messages": [None, {"role": "user", "content": None}]}) == 7
