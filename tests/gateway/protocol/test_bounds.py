"""Upper bounds of a request's tokens (apps/gateway/protocol/bounds.py): what a budget
reserves, never less than a real tokenizer can count."""

from apps.gateway.protocol.anthropic import messages_prompt_bound
from apps.gateway.protocol.bounds import TokenBounds, output_bound
from apps.gateway.protocol.openai import (
    chat_prompt_bound,
    embeddings_prompt_bound,
    estimate_prompt_tokens,
)

BOUNDS = TokenBounds(per_request=100, per_message=10, per_image=1000, max_output=500)
IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}}


def chat(*messages, **extra) -> dict:
    return {"model": "m", "messages": list(messages), **extra}


def test_a_chat_prompt_is_bounded_by_its_utf8_bytes_plus_the_allowances():
    body = chat({"role": "user", "content": "héllo"})
    assert chat_prompt_bound(body, BOUNDS) == 100 + 10 + 6


def test_the_chat_bound_is_at_least_five_times_the_estimate_of_a_short_prompt():
    body = chat({"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"})
    assert chat_prompt_bound(body, TokenBounds()) >= 5 * estimate_prompt_tokens(body)


def test_an_image_counts_its_bound_not_its_base64_bytes():
    body = chat({"role": "user", "content": [{"type": "text", "text": "what?"}, IMAGE]})
    assert chat_prompt_bound(body, BOUNDS) == 100 + 10 + 5 + 1000


def test_tools_count_their_json_bytes():
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    without = chat_prompt_bound(chat({"role": "user", "content": "x"}), BOUNDS)
    with_tools = chat_prompt_bound(chat({"role": "user", "content": "x"}, tools=tools), BOUNDS)
    assert with_tools - without == len(
        b'[{"type":"function","function":{"name":"f","parameters":{"type":"object"}}}]'
    )


def test_tool_calls_and_names_of_a_message_count_too():
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = chat({"role": "assistant", "content": None, "tool_calls": [call], "name": "bob"})
    assert chat_prompt_bound(body, BOUNDS) > 100 + 10 + len("bob") + len("c1f{}")


def test_a_prompt_nested_deeper_than_json_serialises_is_bounded_not_an_error():
    deep: list = []
    for _ in range(400):
        deep = [deep]
    body = chat({"role": "user", "content": [{"type": "weird", "data": deep}]})
    assert chat_prompt_bound(body, BOUNDS) > 100 + 10 + 400


def test_a_malformed_message_list_is_bounded_not_an_error():
    assert chat_prompt_bound({"messages": "nope"}, BOUNDS) == 100


def test_a_messages_prompt_counts_system_blocks_and_images():
    body = {
        "system": "Be terse.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hi"},
                    {"type": "image", "source": {"type": "base64", "data": "A" * 50_000}},
                ],
            }
        ],
    }
    assert messages_prompt_bound(body, BOUNDS) == 100 + 9 + 10 + 2 + 1000


def test_a_tool_result_with_an_image_counts_the_image_at_its_bound():
    result = {
        "type": "tool_result",
        "tool_use_id": "t",
        "content": [{"type": "image", "source": {"type": "base64", "data": "A" * 50_000}}],
    }
    body = {"messages": [{"role": "user", "content": [result]}]}
    assert messages_prompt_bound(body, BOUNDS) < 100 + 10 + 1000 + 100


def test_an_embedding_input_is_bounded_by_its_bytes_and_two_special_tokens():
    assert embeddings_prompt_bound(["héllo", "x"], 7) == (6 + 2) + (1 + 2) + 7


def test_without_max_tokens_the_output_bound_is_the_models_maximum():
    assert output_bound(None, BOUNDS) == 500


def test_a_max_tokens_above_the_models_maximum_is_bounded_by_the_maximum():
    assert output_bound(10**18, BOUNDS) == 500


def test_a_max_tokens_below_the_models_maximum_is_the_bound():
    assert output_bound(16, BOUNDS) == 16


def test_the_output_bound_counts_every_choice():
    assert output_bound(16, BOUNDS, choices=3) == 48
