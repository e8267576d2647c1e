"""Chat, embeddings and Responses request validation: a value of the wrong JSON type in
any field the gateway reads or relays as read is a RequestInvalid naming that field."""

import copy

import pytest

from apps.gateway.protocol.openai import (
    RequestInvalid,
    validate_chat_request,
    validate_embeddings_request,
)
from apps.gateway.protocol.responses import responses_to_chat_request

CHAT = {
    "model": "m",
    "messages": [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "ok"},
    ],
    "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
}


def chat_with(**changes) -> dict:
    body = copy.deepcopy(CHAT)
    body.update(changes)
    return body


def message_with(index: int, **changes) -> dict:
    body = copy.deepcopy(CHAT)
    body["messages"][index].update(changes)
    return body


def refused_param(validate, body) -> str | None:
    with pytest.raises(RequestInvalid) as caught:
        validate(body)
    return caught.value.param


def test_the_valid_chat_request_passes():
    assert validate_chat_request(copy.deepcopy(CHAT)) is None


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (message_with(0, role={"a": 1}), "messages.[0].role"),
        (message_with(0, role=["user"]), "messages.[0].role"),
        (message_with(0, content=None), "messages.[0].content"),
        (message_with(1, content=[{"type": "text", "text": 5}]), "messages.[1].content.[0].text"),
        (message_with(1, content=["hi"]), "messages.[1].content.[0]"),
        (
            message_with(1, content=[{"type": "image_url", "image_url": "http://x"}]),
            "messages.[1].content.[0].image_url",
        ),
        (message_with(0, name=7), "messages.[0].name"),
        (message_with(2, tool_calls={"id": "c1"}), "messages.[2].tool_calls"),
        (message_with(2, tool_calls=[{"id": "c1", "function": []}]), "messages.[2].tool_calls.[0].function"),
        (
            message_with(2, tool_calls=[{"id": "c1", "function": {"name": {}, "arguments": "{}"}}]),
            "messages.[2].tool_calls.[0].function.name",
        ),
        (
            message_with(2, tool_calls=[{"id": "c1", "function": {"name": "f", "arguments": {}}}]),
            "messages.[2].tool_calls.[0].function.arguments",
        ),
        (message_with(3, tool_call_id=None), "messages.[3].tool_call_id"),
        (chat_with(tools=[[]]), "tools.[0]"),
        (chat_with(tools=[{"type": "function", "function": "f"}]), "tools.[0].function"),
        (chat_with(tools=[{"type": "function", "function": {"name": ""}}]), "tools.[0].function.name"),
        (
            chat_with(tools=[{"type": "function", "function": {"name": "f", "parameters": "{}"}}]),
            "tools.[0].function.parameters",
        ),
        (chat_with(tool_choice="sometimes"), "tool_choice"),
        (chat_with(tool_choice={"type": "function", "function": {"name": 1}}), "tool_choice"),
        (chat_with(stop=["a", 1]), "stop"),
        (chat_with(temperature=3), "temperature"),
        (chat_with(max_tokens=-1), "max_tokens"),
        (chat_with(metadata={"a": 1}), "metadata"),
        (chat_with(user=["u"]), "user"),
        (chat_with(stream=True, stream_options={"include_usage": "yes"}), "stream_options.include_usage"),
        (chat_with(response_format={"type": 1}), "response_format.type"),
        (chat_with(response_format={"type": "json_schema"}), "response_format.json_schema"),
    ],
)  # fmt: skip
def test_a_chat_field_of_the_wrong_type_is_refused_naming_it(body, param):
    assert refused_param(validate_chat_request, body) == param


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": [1, -1]}, "input"),
        ({"model": "m", "input": [[1, 2**40]]}, "input"),
        ({"model": "m", "input": "x", "user": 1}, "user"),
        ({"model": "m", "input": "x", "dimensions": 2**64 - 1}, "dimensions"),
    ],
)
def test_an_embeddings_field_of_the_wrong_type_is_refused_naming_it(body, param):
    assert refused_param(validate_embeddings_request, body) == param


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"input": [{"role": {"a": 1}, "content": "hi"}]}, "input"),
        ({"input": [{"type": "function_call", "name": {}, "arguments": "{}"}]}, "input"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": {}}]}, "input"),
        ({"input": [{"type": "function_call_output", "call_id": 1, "output": "x"}]}, "input"),
        ({"input": [{"type": "function_call_output", "call_id": "c", "output": 5}]}, "input"),
        ({"temperature": "hot"}, "temperature"),
        ({"user": {}}, "user"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
        ({"metadata": {"a": []}}, "metadata"),
        ({"reasoning": "high"}, "reasoning"),
        ({"reasoning": {"effort": 3}}, "reasoning.effort"),
        ({"stream": "yes"}, "stream"),
        ({"tools": [{"type": "function", "name": "f", "parameters": []}]}, "tools"),
        ({"tool_choice": {"type": "function", "name": {"n": 1}}}, "tool_choice"),
        ({"text": {"format": {"type": "json_schema", "schema": {}, "name": 1}}}, "text.format"),
    ],
)
def test_a_responses_field_of_the_wrong_type_is_refused_naming_it(change, param):
    body = {"model": "m", "input": "hi", **change}
    assert refused_param(responses_to_chat_request, body) == param
