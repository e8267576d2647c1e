"""Translated requests take the most portable shape: what every common OpenAI-compatible
server accepts (vLLM, llama.cpp's server, llama-cpp-python, Ollama, OpenAI). The
strictest of them, llama-cpp-python, is the oracle: its own pydantic request schema
(a copy in tests/fakes/llama_schema.py). Besides it: no null where a field can be
omitted (llama.cpp throws on a null name, tool_call_id or description; Ollama refuses
null content without tool calls), tool-call arguments that parse as JSON (Ollama),
text-only content as one string (Ollama makes each part a message).

Also the answers agents depend on: an estimate where the upstream reported no usage,
a tool call cut by the token limit reported incomplete, one id per chat stream."""

import orjson
import pytest
from openai.types.responses import Response

from apps.gateway.protocol.anthropic_to_openai import messages_to_chat_request
from apps.gateway.protocol.openai import ChatStreamRelay, data_chunk, drop_message_nulls
from apps.gateway.protocol.openai_to_anthropic import chat_to_messages_request
from apps.gateway.protocol.responses import (
    ChatStreamToResponseEvents,
    chat_to_response,
    response_shell,
    responses_to_chat_request,
)
from tests.fakes.llama_schema import chat_request_errors

CITY = {"type": "object", "properties": {"city": {"type": "string"}}}


def nulls(value, path: str = "") -> list[str]:
    """Where a JSON value holds null."""
    if value is None:
        return [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in nulls(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in nulls(v, f"{path}[{i}]")]
    return []


def call_arguments(chat: dict) -> list[str]:
    return [
        call["function"]["arguments"]
        for message in chat["messages"]
        for call in message.get("tool_calls") or ()
    ]


# ---------------------------------------------------------------------------
# Anthropic Messages → Chat Completions
# ---------------------------------------------------------------------------

TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
CLAUDE_CODE_HISTORIES = {
    "tool use alone": [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": [TOOL_USE]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "12 degrees"}]},
    ],
    "thinking, text and parallel tool uses": [
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Two cities.", "signature": "sig"},
            {"type": "text", "text": "Checking both."},
            TOOL_USE,
            {**TOOL_USE, "id": "toolu_2", "input": {"city": "Bergen"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "12"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}},
            ]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True,
             "content": "timeout"},
            {"type": "text", "text": "and tomorrow?"},
        ]},
    ],
    "tool result without content, then a tool use with empty input": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [TOOL_USE]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        {"role": "assistant", "content": [{**TOOL_USE, "id": "toolu_3", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_3",
                                      "content": ""}]},
    ],
    "assistant turns in a row": [
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [TOOL_USE]},
        {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "x"}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": "ok"}]},
    ],
}  # fmt: skip


def claude_request(messages: list[dict], **extra) -> dict:
    body = {
        "model": "m",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "You are Claude Code.",
                    "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "get_weather", "input_schema": CITY},
                  {"name": "Bash", "description": None, "input_schema": {"type": "object"}}],
        "messages": messages,
        **extra,
    }  # fmt: skip
    return messages_to_chat_request(body, upstream_model="up")[0]


@pytest.mark.parametrize("history", CLAUDE_CODE_HISTORIES.values(), ids=CLAUDE_CODE_HISTORIES)
@pytest.mark.parametrize(
    "extra",
    [{}, {"stream": True, "tool_choice": {"type": "any"}, "stop_sequences": ["END"]}],
    ids=["once", "streamed"],
)
def test_translated_claude_code_turns_are_accepted_by_llama_cpp_python(history, extra):
    assert chat_request_errors(claude_request(history, **extra)) is None


@pytest.mark.parametrize("history", CLAUDE_CODE_HISTORIES.values(), ids=CLAUDE_CODE_HISTORIES)
def test_translated_claude_code_turns_hold_no_null(history):
    assert nulls(claude_request(history)) == []


@pytest.mark.parametrize("history", CLAUDE_CODE_HISTORIES.values(), ids=CLAUDE_CODE_HISTORIES)
def test_translated_tool_arguments_parse_as_json_objects(history):
    parsed = [orjson.loads(a) for a in call_arguments(claude_request(history))]
    assert all(isinstance(p, dict) for p in parsed)


def test_an_assistant_turn_with_only_a_tool_use_has_empty_string_content():
    chat = claude_request(CLAUDE_CODE_HISTORIES["tool use alone"])
    assert chat["messages"][2] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {
                "id": "toolu_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }


def test_assistant_turns_in_a_row_merge_into_one_with_string_content():
    chat = claude_request(CLAUDE_CODE_HISTORIES["assistant turns in a row"])
    assert [m["content"] for m in chat["messages"] if m["role"] == "assistant"] == [""]


# ---------------------------------------------------------------------------
# Responses → Chat Completions
# ---------------------------------------------------------------------------

CODEX_INPUT = [
    {"type": "message", "role": "developer",
     "content": [{"type": "input_text", "text": "You are Codex."}]},
    {"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"},
        {"type": "input_text", "text": "Fix the tests."},
    ]},
    {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
    {"type": "message", "role": "assistant",
     "content": [{"type": "output_text", "text": "Running them."}]},
    {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "shell",
     "arguments": '{"command": ["pytest"]}'},
    {"type": "function_call_output", "call_id": "call_1", "output": "1 failed"},
    {"type": "reasoning", "id": "rs_2",
     "summary": [{"type": "summary_text", "text": "Look at the file."}]},
    {"type": "function_call", "call_id": "call_2", "name": "shell", "arguments": ""},
    {"type": "function_call_output", "call_id": "call_2",
     "output": [{"type": "input_text", "text": "def test_x(): ..."}]},
]  # fmt: skip


def codex_request(**extra) -> dict:
    body = {
        "model": "m",
        "instructions": "Be careful.",
        "input": CODEX_INPUT,
        "tools": [
            {"type": "function", "name": "shell", "parameters": CITY, "strict": False},
            {"type": "function", "name": "update_plan", "description": None},
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "text": {"verbosity": "low"},
        **extra,
    }
    return responses_to_chat_request(body)


@pytest.mark.parametrize("extra", [{}, {"stream": True}], ids=["once", "streamed"])
def test_a_translated_codex_turn_is_accepted_by_llama_cpp_python(extra):
    assert chat_request_errors(codex_request(**extra)) is None


def test_a_translated_codex_turn_holds_no_null():
    assert nulls(codex_request()) == []


def test_reasoning_items_are_dropped_for_a_chat_backend():
    roles = [m["role"] for m in codex_request()["messages"]]
    assert roles == ["system", "system", "user", "assistant", "tool", "assistant", "tool"]


def test_the_text_before_a_function_call_and_the_call_are_one_assistant_message():
    assistant = codex_request()["messages"][3]
    assert (assistant["content"], [c["id"] for c in assistant["tool_calls"]]) == (
        "Running them.",
        ["call_1"],
    )


def test_a_function_call_alone_is_an_assistant_message_with_empty_string_content():
    assert codex_request()["messages"][5]["content"] == ""


def test_empty_function_call_arguments_are_sent_as_an_empty_object():
    assert call_arguments(codex_request()) == ['{"command": ["pytest"]}', "{}"]


def test_text_parts_are_sent_as_one_string():
    assert codex_request()["messages"][2]["content"] == (
        "<environment_context>cwd=/repo</environment_context>\nFix the tests."
    )


def test_a_function_call_output_of_text_parts_is_sent_as_text():
    assert codex_request()["messages"][-1]["content"] == "def test_x(): ..."


def test_a_tool_without_parameters_takes_no_arguments():
    tools = codex_request()["tools"]
    assert tools[1]["function"] == {
        "name": "update_plan",
        "parameters": {"type": "object", "properties": {}},
    }


def test_top_logprobs_asks_for_logprobs():
    assert codex_request(top_logprobs=2)["logprobs"] is True


# ---------------------------------------------------------------------------
# Chat Completions passed through: the assistant message an SDK sends back
# ---------------------------------------------------------------------------


def test_an_sdk_assistant_message_sent_back_is_made_acceptable_to_llama_cpp_python():
    messages = [
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "refusal": None, "function_call": None,
         "tool_calls": [{"id": "c1", "type": "function",
                         "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "12"},
        {"role": "assistant", "content": "It is 12.", "tool_calls": None, "audio": None},
        {"role": "user", "content": "thanks"},
    ]  # fmt: skip
    drop_message_nulls(messages)
    assert chat_request_errors({"model": "m", "messages": messages}) is None


def test_null_content_becomes_an_empty_string_and_other_nulls_go():
    messages = [{"role": "assistant", "content": None, "tool_calls": None, "name": None}]
    drop_message_nulls(messages)
    assert messages == [{"role": "assistant", "content": ""}]


# ---------------------------------------------------------------------------
# Chat Completions client → Anthropic backend
# ---------------------------------------------------------------------------


def test_a_tool_schema_without_a_type_is_sent_as_an_object_schema():
    body = chat_to_messages_request(
        {
            "model": "m",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
        },
        upstream_model="claude",
    )
    assert body["tools"][0]["input_schema"] == {"type": "object"}


def test_an_empty_tool_message_is_a_tool_result_without_content():
    body = chat_to_messages_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": "", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": ""}]},
            ],
        },
        upstream_model="claude",
    )  # fmt: skip
    assert body["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": "c1"}]


def test_a_translated_chat_history_holds_no_null():
    body = chat_to_messages_request(
        {
            "model": "m",
            "messages": [
                {"role": "user", "content": "go"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "c1", "content": None},
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": None}}],
        },
        upstream_model="claude",
    )  # fmt: skip
    assert nulls(body) == []


# ---------------------------------------------------------------------------
# Responses answers
# ---------------------------------------------------------------------------

CUT_CALL = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"ci'}}  # fmt: skip


def shell(**request) -> dict:
    return response_shell("resp_1", "m", {"input": "x", **request}, 1700000000)


def answer(finish_reason: str, tool_calls=None, content=None, usage=None) -> dict:
    message = {"role": "assistant", "content": content, "tool_calls": tool_calls}
    out = {"choices": [{"index": 0, "finish_reason": finish_reason, "message": message}]}
    if usage is not None:
        out["usage"] = usage
    return out


def streamed(chunks: list[dict], request: dict, estimated_usage=None) -> Response:
    converter = ChatStreamToResponseEvents(shell(**request))
    raw = converter.start() + b"".join(converter.feed(data_chunk(c)) for c in chunks)
    raw += converter.finish(estimated_usage)
    *_, last = raw.split(b"\n\n")[:-1]
    data = orjson.loads(last.split(b"data: ", 1)[1])
    return Response.model_validate(data["response"])


def call_chunks(arguments: str, finish_reason: str) -> list[dict]:
    start = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": ""}}  # fmt: skip
    rest = {"index": 0, "function": {"arguments": arguments}}
    return [
        {"choices": [{"index": 0, "delta": {"tool_calls": [start]}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {"tool_calls": [rest]}, "finish_reason": None}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": finish_reason}]},
    ]


@pytest.mark.parametrize("finish_reason", ["length", "tool_calls"])
def test_a_tool_call_cut_by_the_limit_makes_an_incomplete_response(finish_reason):
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    response = Response.model_validate(
        chat_to_response(answer(finish_reason, [CUT_CALL], usage=usage), shell(max_output_tokens=4))
    )
    assert (response.status, response.incomplete_details.reason, response.output[0].status) == (
        "incomplete",
        "max_output_tokens",
        "incomplete",
    )


@pytest.mark.parametrize("finish_reason", ["length", "tool_calls"])
def test_a_streamed_tool_call_cut_by_the_limit_makes_an_incomplete_response(finish_reason):
    response = streamed(call_chunks('{"ci', finish_reason), {"max_output_tokens": 4})
    assert (response.status, response.incomplete_details.reason, response.output[0].status) == (
        "incomplete",
        "max_output_tokens",
        "incomplete",
    )


def test_invalid_arguments_below_the_limit_are_not_a_cut():
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    response = chat_to_response(
        answer("tool_calls", [CUT_CALL], usage=usage), shell(max_output_tokens=100)
    )
    assert response["status"] == "completed"


def test_a_whole_tool_call_at_the_limit_is_completed():
    response = streamed(call_chunks('{"city": "Oslo"}', "tool_calls"), {"max_output_tokens": 5})
    assert (response.status, response.output[0].status) == ("completed", "completed")


def test_a_response_without_usage_shows_the_estimate():
    estimate = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    response = Response.model_validate(
        chat_to_response(answer("stop", content="hi"), shell(), estimate)
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 2)


def test_a_stream_without_usage_shows_the_estimate():
    estimate = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    text = [{"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]}]
    response = streamed(text, {}, estimate)
    assert (response.usage.input_tokens, response.usage.output_tokens) == (7, 2)


def test_the_upstream_usage_wins_over_the_estimate():
    usage = {"prompt_tokens": 70, "completion_tokens": 20, "total_tokens": 90}
    estimate = {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    response = chat_to_response(answer("stop", content="hi", usage=usage), shell(), estimate)
    assert response["usage"]["output_tokens"] == 20


# ---------------------------------------------------------------------------
# Chat streams: one id
# ---------------------------------------------------------------------------


def test_a_chat_stream_relay_keeps_the_id_and_time_of_the_stream():
    relay = ChatStreamRelay("public", client_wants_usage=True)
    for chunk in (
        {"id": "", "object": "", "created": 0, "model": "", "choices": [],
         "prompt_filter_results": []},
        {"id": "chatcmpl-up", "created": 1730000000, "model": "m",
         "choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"id": "chatcmpl-other", "created": 1730000001, "model": "m", "choices": []},
    ):  # fmt: skip
        relay.feed(data_chunk(chunk))
    assert (relay.chunk_id, relay.created) == ("chatcmpl-up", 1730000000)
