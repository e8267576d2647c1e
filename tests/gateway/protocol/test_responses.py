"""The Responses API translation (pure: no server)."""

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from apps.gateway.protocol.anthropic import parse_sse_events
from apps.gateway.protocol.openai import RequestInvalid, data_chunk
from apps.gateway.protocol.responses import (
    ChatStreamToResponseEvents,
    chat_to_response,
    response_shell,
    responses_to_chat_request,
)


def test_request_translation():
    chat = responses_to_chat_request(
        {
            "model": "m",
            "instructions": "Be brief.",
            "input": [
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "input_text", "text": "What is this?"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"},
                ]},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "ok"},
            ],
            "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}}],
            "tool_choice": {"type": "function", "name": "f"},
            "text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}},
            "max_output_tokens": 100,
            "temperature": 0.2,
            "reasoning": {"effort": "low"},
            "stream": True,
        }
    )  # fmt: skip
    assert chat["messages"][0] == {"role": "system", "content": "Be brief."}
    assert chat["messages"][1] == {"role": "system", "content": "Use metric units."}
    assert chat["messages"][2]["content"][1]["image_url"]["url"].startswith("data:image/png")
    assert chat["messages"][3]["tool_calls"][0]["id"] == "c1"
    assert chat["messages"][4] == {"role": "tool", "tool_call_id": "c1", "content": "ok"}
    assert chat["tools"][0]["function"]["name"] == "f"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert chat["response_format"]["json_schema"]["name"] == "x"
    assert (chat["max_tokens"], chat["temperature"], chat["reasoning_effort"]) == (100, 0.2, "low")
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m", "input": "x", "conversation": "c"}, "conversation"),
        ({"model": "m", "input": [{"type": "input_file"}]}, "input"),
        ({"model": "m", "input": "x", "text": {"format": {"type": "xml"}}}, "text.format"),
        ({"model": "m", "input": "x", "tool_choice": "sometimes"}, "tool_choice"),
        ({"model": "m", "input": "x", "instructions": 1}, "instructions"),
    ],
)
def test_request_refusals_name_the_field(body, param):
    with pytest.raises(RequestInvalid) as caught:
        responses_to_chat_request(body)
    assert caught.value.param == param


def test_answer_translation_validates_as_the_sdks_response():
    shell = response_shell("resp_1", "m", {"input": "x"}, 1700000000)
    answer = {
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": "Checking.",
                    "reasoning_content": "The user wants weather.",
                    "tool_calls": [
                        {"id": "c9", "type": "function",
                         "function": {"name": "f", "arguments": '{"a":1}'}}
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
    }  # fmt: skip
    response = Response.model_validate(chat_to_response(answer, shell))
    assert response.output_text == "Checking."
    assert [item.type for item in response.output] == ["reasoning", "message", "function_call"]
    assert response.output[2].call_id == "c9" and response.usage.total_tokens == 12


def test_stream_events_accumulate_to_the_same_response():
    shell = response_shell("resp_2", "m", {"input": "x"}, 1700000000)
    converter = ChatStreamToResponseEvents(shell)
    raw = converter.start()
    for piece in ("Hel", "lo"):
        raw += converter.feed(data_chunk({"choices": [{"index": 0, "delta": {"content": piece}}]}))
    raw += converter.feed(data_chunk(
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}], "usage": {
            "prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}
    ))  # fmt: skip
    raw += converter.finish()
    events = [(name, orjson.loads(data)) for name, data in parse_sse_events(raw)]
    assert [e["sequence_number"] for _, e in events] == list(range(len(events)))
    for _name, event in events:  # each one is a valid event of the SDK's union
        TypeAdapter(ResponseStreamEvent).validate_python(event)
    assert events[-1][0] == "response.incomplete"
    final = Response.model_validate(events[-1][1]["response"])
    assert final.output_text == "Hello" and final.incomplete_details.reason == "max_output_tokens"
