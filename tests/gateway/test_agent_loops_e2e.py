"""Agent clients end to end: tool loops as coding agents run them (Claude Code on
Messages, Codex on Responses and Chat Completions), through the official SDKs, against
"llama-model": the fake upstream behaving as llama-cpp-python's server, which refuses
(HTTP 500) any request its pydantic schema does not accept, reports no usage in streams
and never says which stop string matched.

The fake model calls the first tool until the conversation holds "#tool_calls=N" tool
results (default 1), then answers "The tool said: <the last result>".
"""

import anthropic
import pytest

from tests.conftest import openai_client, usage_record

pytestmark = pytest.mark.e2e

LLAMA = "llama-model"
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
CLAUDE_TOOLS = [
    {"name": "get_weather", "description": "Weather for a city", "input_schema": CITY_SCHEMA}
]
RESPONSES_TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": CITY_SCHEMA,
    }
]
CHAT_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": CITY_SCHEMA,
        },
    }
]
# What Codex sends back of its earlier reasoning (store: false, encrypted content).
REASONING_ITEM = {
    "type": "reasoning",
    "id": "rs_0123456789",
    "summary": [{"type": "summary_text", "text": "The user wants the weather."}],
    "encrypted_content": "gAAAAABo-opaque-to-anyone-but-openai",
}
STREAMED = pytest.mark.parametrize("stream", [False, True], ids=["once", "streamed"])
MAX_TURNS = 6


def claude(gateway: str, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)


# ---------------------------------------------------------------------------
# one turn on each surface, streamed or not, as the SDK's own accumulators see it
# ---------------------------------------------------------------------------


def ask_claude(api: anthropic.Anthropic, stream: bool, **params):
    params = {"model": LLAMA, "max_tokens": 256, "tools": CLAUDE_TOOLS, **params}
    if not stream:
        return api.messages.create(**params)
    with api.messages.stream(**params) as events:
        return events.get_final_message()


def ask_responses(api, stream: bool, **params):
    params = {"model": LLAMA, "tools": RESPONSES_TOOLS, **params}
    if not stream:
        return api.responses.create(**params)
    with api.responses.stream(**params) as events:
        # (the SDK's final response exists only for response.completed)
        incomplete = [e.response for e in events if e.type == "response.incomplete"]
        return incomplete[-1] if incomplete else events.get_final_response()


def ask_chat(api, stream: bool, **params):
    params = {"model": LLAMA, "tools": CHAT_TOOLS, **params}
    if not stream:
        return api.chat.completions.create(**params)
    with api.chat.completions.stream(**params) as events:
        return events.get_final_completion()


# ---------------------------------------------------------------------------
# agent loops: call the tools the model asks for until it answers
# ---------------------------------------------------------------------------


def claude_loop(api, stream: bool, prompt: str) -> tuple[int, object]:
    """(tool calls made, final message) of a Claude Code-style loop."""
    messages: list[dict] = [{"role": "user", "content": prompt}]
    calls = 0
    for _ in range(MAX_TURNS):
        reply = ask_claude(api, stream, messages=messages)
        uses = [block for block in reply.content if block.type == "tool_use"]
        if not uses:
            return calls, reply
        results = []
        for use in uses:
            calls += 1
            results.append(
                {"type": "tool_result", "tool_use_id": use.id, "content": f"result {calls}"}
            )
        messages += [
            {"role": "assistant", "content": reply.content},
            {"role": "user", "content": results},
        ]
    raise AssertionError("the model never stopped calling tools")


def responses_loop(api, stream: bool, prompt: str) -> tuple[int, object]:
    """(tool calls made, final response) of a Codex-style loop: the whole input sent
    every turn (store: false), earlier reasoning items included."""
    items: list[dict] = [{"role": "user", "content": prompt}]
    calls = 0
    for _ in range(MAX_TURNS):
        response = ask_responses(api, stream, input=items, store=False)
        asked = [item for item in response.output if item.type == "function_call"]
        if not asked:
            return calls, response
        items.append(REASONING_ITEM)
        for call in asked:
            calls += 1
            items.append(call.model_dump(exclude_none=True))
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": call.call_id,
                    "output": f"result {calls}",
                }
            )
    raise AssertionError("the model never stopped calling tools")


def chat_loop(api, stream: bool, prompt: str) -> tuple[int, object]:
    """(tool calls made, final completion) of a loop that sends the SDK's assistant
    message back as it got it (content null beside its tool calls)."""
    messages: list = [{"role": "user", "content": prompt}]
    calls = 0
    for _ in range(MAX_TURNS):
        completion = ask_chat(api, stream, messages=messages)
        message = completion.choices[0].message
        if not message.tool_calls:
            return calls, completion
        messages.append(message)
        for call in message.tool_calls:
            calls += 1
            messages.append({"role": "tool", "tool_call_id": call.id, "content": f"result {calls}"})
    raise AssertionError("the model never stopped calling tools")


# ---------------------------------------------------------------------------
# Messages (anthropic SDK)
# ---------------------------------------------------------------------------


@STREAMED
def test_the_anthropic_sdk_tool_round_trip_gets_the_answer(gateway, seed, upstream, stream):
    api = claude(gateway, seed.secret)
    question = {"role": "user", "content": "What is the weather in Oslo?"}
    first = ask_claude(api, stream, messages=[question])
    use = next(block for block in first.content if block.type == "tool_use")
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "12 degrees"}
    second = ask_claude(
        api,
        stream,
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
    )
    assert [block.text for block in second.content] == ["The tool said: 12 degrees"]
    assert second.stop_reason == "end_turn"


@STREAMED
def test_the_tool_use_turn_reaches_llama_cpp_as_a_string_content(gateway, seed, upstream, stream):
    api = claude(gateway, seed.secret)
    claude_loop(api, stream, "weather in Oslo?")
    sent = upstream.requests()[-1]["body"]["messages"]
    assert [m.get("content") for m in sent if m["role"] == "assistant"] == [""]


@STREAMED
def test_a_claude_agent_loop_calls_its_tools_twice(gateway, seed, upstream, stream):
    calls, _final = claude_loop(claude(gateway, seed.secret), stream, "Plan a trip #tool_calls=2")
    assert calls == 2


@STREAMED
def test_a_claude_agent_loop_ends_with_the_answer(gateway, seed, upstream, stream):
    _calls, final = claude_loop(claude(gateway, seed.secret), stream, "Plan a trip #tool_calls=2")
    assert [block.text for block in final.content] == ["The tool said: result 2"]


# ---------------------------------------------------------------------------
# Responses (openai SDK, as Codex uses it)
# ---------------------------------------------------------------------------


@STREAMED
def test_a_codex_responses_loop_calls_its_tools_twice(gateway, seed, upstream, stream):
    api = openai_client(gateway, seed.secret)
    calls, _final = responses_loop(api, stream, "Fix the tests #tool_calls=2")
    assert calls == 2


@STREAMED
def test_a_codex_responses_loop_ends_with_the_answer(gateway, seed, upstream, stream):
    api = openai_client(gateway, seed.secret)
    _calls, final = responses_loop(api, stream, "Fix the tests #tool_calls=2")
    assert final.output_text == "The tool said: result 2"


def test_reasoning_items_sent_back_are_accepted(gateway, seed, upstream):
    response = openai_client(gateway, seed.secret).responses.create(
        model="test-model",
        input=[
            {"role": "user", "content": "hi #chunks=2"},
            REASONING_ITEM,
            {"role": "assistant", "content": [{"type": "output_text", "text": "Hello."}]},
            {"role": "user", "content": "and again #chunks=2"},
        ],
    )
    assert response.output_text == "w0 w1"


def test_reasoning_items_are_not_sent_to_a_chat_backend(gateway, seed, upstream):
    openai_client(gateway, seed.secret).responses.create(
        model="test-model", input=[{"role": "user", "content": "hi"}, REASONING_ITEM]
    )
    sent = upstream.requests()[-1]["body"]["messages"]
    assert sent == [{"role": "user", "content": "hi"}]


@STREAMED
def test_a_response_without_upstream_usage_shows_the_estimate(
    gateway, seed, upstream, celery_worker, stream
):
    api = openai_client(gateway, seed.secret)
    final = ask_responses(api, stream, input="hi #chunks=4 #no_usage", tools=[])
    record = usage_record("req_" + final.id.removeprefix("resp_"))
    assert (final.usage.input_tokens, final.usage.output_tokens) == (
        record.prompt_tokens,
        record.completion_tokens,
    )


def test_a_streamed_response_without_upstream_usage_is_billed_as_estimated(
    gateway, seed, upstream, celery_worker
):
    api = openai_client(gateway, seed.secret)
    final = ask_responses(api, True, input="hi #chunks=4", tools=[])
    assert usage_record("req_" + final.id.removeprefix("resp_")).tokens_estimated


@pytest.mark.parametrize("model", ["test-model", LLAMA], ids=["says-length", "says-tool_calls"])
@STREAMED
def test_a_tool_call_cut_by_max_output_tokens_is_incomplete(gateway, seed, upstream, stream, model):
    api = openai_client(gateway, seed.secret)
    response = ask_responses(api, stream, model=model, input="weather?", max_output_tokens=2)
    assert (response.status, response.incomplete_details.reason) == (
        "incomplete",
        "max_output_tokens",
    )


@pytest.mark.parametrize("model", ["test-model", LLAMA], ids=["says-length", "says-tool_calls"])
@STREAMED
def test_the_tool_call_cut_by_max_output_tokens_is_marked_incomplete(
    gateway, seed, upstream, stream, model
):
    api = openai_client(gateway, seed.secret)
    response = ask_responses(api, stream, model=model, input="weather?", max_output_tokens=2)
    assert [(item.type, item.status) for item in response.output] == [
        ("function_call", "incomplete")
    ]


@STREAMED
def test_a_whole_tool_call_is_completed(gateway, seed, upstream, stream):
    api = openai_client(gateway, seed.secret)
    response = ask_responses(api, stream, input="weather?", max_output_tokens=50)
    assert (response.status, response.output[0].status) == ("completed", "completed")


# ---------------------------------------------------------------------------
# Chat Completions (openai SDK)
# ---------------------------------------------------------------------------


@STREAMED
def test_a_chat_agent_loop_calls_its_tools_twice(gateway, seed, upstream, stream):
    api = openai_client(gateway, seed.secret)
    calls, _final = chat_loop(api, stream, "Fix the tests #tool_calls=2")
    assert calls == 2


@STREAMED
def test_a_chat_agent_loop_ends_with_the_answer(gateway, seed, upstream, stream):
    api = openai_client(gateway, seed.secret)
    _calls, final = chat_loop(api, stream, "Fix the tests #tool_calls=2")
    assert final.choices[0].message.content == "The tool said: result 2"


@pytest.mark.parametrize("model", ["test-model", LLAMA], ids=["upstream-usage", "added-usage"])
def test_every_chunk_of_a_chat_stream_has_the_same_id(gateway, seed, upstream, model):
    chunks = openai_client(gateway, seed.secret).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "hi #chunks=3"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    assert len({chunk.id for chunk in chunks}) == 1


def test_the_usage_chunk_added_to_a_chat_stream_is_last(gateway, seed, upstream):
    chunks = list(
        openai_client(gateway, seed.secret).chat.completions.create(
            model=LLAMA,
            messages=[{"role": "user", "content": "hi #chunks=3"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert (chunks[-1].choices, chunks[-1].usage is not None) == ([], True)
