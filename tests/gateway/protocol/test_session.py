"""The session key of a request (affinity routing): each source, its fallback to the
prefix, and hostile values that must cost little and never raise."""

import time

import pytest

from apps.gateway.protocol.session import (
    AffinityKeyInvalid,
    affinity_source_parse,
    prefix_key,
    session_key,
)

PROMPT_CACHE_KEY = affinity_source_parse("prompt_cache_key")
USER = affinity_source_parse("user")
HEADER = affinity_source_parse("header:x-session-id")
PREFIX = affinity_source_parse("prefix")


def chat(*turns: str, **fields) -> dict:
    messages = [{"role": "system", "content": "Be terse."}]
    for i, turn in enumerate(turns):
        if i:
            messages.append({"role": "assistant", "content": f"answer {i}"})
        messages.append({"role": "user", "content": turn})
    return {"model": "m", "messages": messages, **fields}


def test_the_same_prompt_cache_key_gives_the_same_session():
    assert session_key(PROMPT_CACHE_KEY, chat("a", prompt_cache_key="k1"), {}) == session_key(
        PROMPT_CACHE_KEY, chat("b", prompt_cache_key="k1"), {}
    )


def test_another_prompt_cache_key_gives_another_session():
    assert session_key(PROMPT_CACHE_KEY, chat("a", prompt_cache_key="k1"), {}) != session_key(
        PROMPT_CACHE_KEY, chat("a", prompt_cache_key="k2"), {}
    )


def test_a_missing_prompt_cache_key_falls_back_to_the_prefix():
    body = chat("hello")
    assert session_key(PROMPT_CACHE_KEY, body, {}) == prefix_key(body)


@pytest.mark.parametrize("hostile", [7, 1.5, True, None, "", [], {"k": "v"}, ["k1"]])
def test_a_prompt_cache_key_that_is_not_a_string_falls_back_to_the_prefix(hostile):
    body = chat("hello", prompt_cache_key=hostile)
    assert session_key(PROMPT_CACHE_KEY, body, {}) == prefix_key(body)


def test_a_huge_prompt_cache_key_is_hashed_by_its_head():
    huge = "k" * 10_000_000
    started = time.perf_counter()
    key = session_key(PROMPT_CACHE_KEY, chat("a", prompt_cache_key=huge), {})
    elapsed = time.perf_counter() - started
    assert key == session_key(PROMPT_CACHE_KEY, chat("a", prompt_cache_key="k" * 1024), {})
    assert elapsed < 0.05


def test_a_prompt_cache_key_with_a_lone_surrogate_is_a_session():
    assert isinstance(session_key(PROMPT_CACHE_KEY, chat("a", prompt_cache_key="\ud800"), {}), int)


def test_the_user_field_is_the_session():
    assert session_key(USER, chat("a", user="u-1"), {}) == session_key(
        USER, chat("b", user="u-1"), {}
    )


@pytest.mark.parametrize("hostile", [42, {"id": "u"}, ["u"], "", None])
def test_a_user_that_is_not_a_string_falls_back_to_the_prefix(hostile):
    body = chat("hello", user=hostile)
    assert session_key(USER, body, {}) == prefix_key(body)


def test_an_anthropic_metadata_user_id_is_the_user():
    first = {"system": "s", "messages": [{"role": "user", "content": "a"}]}
    second = {"system": "s", "messages": [{"role": "user", "content": "b"}]}
    assert session_key(USER, {**first, "metadata": {"user_id": "u-9"}}, {}) == session_key(
        USER, {**second, "metadata": {"user_id": "u-9"}}, {}
    )


def test_a_hostile_anthropic_metadata_falls_back_to_the_prefix():
    body = {"messages": [{"role": "user", "content": "a"}], "metadata": ["user_id"]}
    assert session_key(USER, body, {}) == prefix_key(body)


def test_the_named_header_is_the_session():
    headers = {b"x-session-id": b"s-1"}
    assert session_key(HEADER, chat("a"), headers) == session_key(HEADER, chat("b"), headers)


def test_a_missing_header_falls_back_to_the_prefix():
    body = chat("hello")
    assert session_key(HEADER, body, {b"x-other": b"s-1"}) == prefix_key(body)


def test_an_empty_header_falls_back_to_the_prefix():
    body = chat("hello")
    assert session_key(HEADER, body, {b"x-session-id": b""}) == prefix_key(body)


def test_a_huge_header_is_hashed_by_its_head():
    assert session_key(HEADER, chat("a"), {b"x-session-id": b"s" * 100_000}) == session_key(
        HEADER, chat("a"), {b"x-session-id": b"s" * 1024}
    )


def test_every_turn_of_a_conversation_has_the_prefix_of_its_first():
    assert prefix_key(chat("hello", "more", "again")) == prefix_key(chat("hello"))


def test_another_first_message_is_another_prefix():
    assert prefix_key(chat("hello")) != prefix_key(chat("goodbye"))


def test_another_system_prompt_is_another_prefix():
    other = chat("hello")
    other["messages"][0]["content"] = "Be verbose."
    assert prefix_key(other) != prefix_key(chat("hello"))


def test_an_anthropic_system_prompt_in_blocks_is_part_of_the_prefix():
    body = {
        "system": [{"type": "text", "text": "s1"}],
        "messages": [{"role": "user", "content": "a"}],
    }
    other = {
        "system": [{"type": "text", "text": "s2"}],
        "messages": [{"role": "user", "content": "a"}],
    }
    assert prefix_key(body) != prefix_key(other)


def test_a_responses_input_string_is_a_prefix():
    assert prefix_key({"instructions": "i", "input": "hello"}) == prefix_key(
        {"instructions": "i", "input": "hello"}
    )


def test_a_request_without_messages_has_no_session():
    assert session_key(PREFIX, {"model": "m", "input": []}, {}) is None


def test_messages_that_are_not_a_list_have_no_prefix():
    assert prefix_key({"messages": "hello"}) is None


def test_only_system_messages_have_no_prefix():
    assert prefix_key({"messages": [{"role": "system", "content": "s"}]}) is None


@pytest.mark.parametrize("message", [7, None, "text", ["a"], {"role": 5, "content": {"x": 1}}])
def test_a_hostile_first_message_is_still_a_prefix(message):
    assert isinstance(prefix_key({"messages": [message]}), int)


def test_content_nested_too_deep_to_serialise_is_still_a_prefix():
    deep: list = []
    for _ in range(400):
        deep = [deep]
    assert isinstance(prefix_key({"messages": [{"role": "user", "content": deep}]}), int)


def test_a_huge_first_message_costs_its_head():
    body = {"messages": [{"role": "user", "content": "x" * 20_000_000}]}
    started = time.perf_counter()
    prefix_key(body)
    assert time.perf_counter() - started < 0.05


@pytest.mark.parametrize(
    ("setting", "normal"),
    [
        ("prompt_cache_key", "prompt_cache_key"),
        ("user", "user"),
        ("prefix", "prefix"),
        ("header:X-Session-Id", "header:x-session-id"),
    ],
)
def test_an_affinity_key_setting_is_read_in_its_normal_form(setting, normal):
    assert affinity_source_parse(setting).setting == normal


@pytest.mark.parametrize(
    "setting", ["", "cookie", "header:", "header:bad name", "header:" + "x" * 65, None, 3, ["user"]]
)
def test_an_affinity_key_outside_the_vocabulary_is_refused(setting):
    with pytest.raises(AffinityKeyInvalid):
        affinity_source_parse(setting)
