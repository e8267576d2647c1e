"""Usage objects of both protocols map to the ledger's token classes (cached inside the
prompt), and whatever an upstream puts in them maps to safe counts."""

import pytest

from apps.gateway.protocol.anthropic import anthropic_usage_counts
from apps.gateway.protocol.responses import response_usage
from apps.gateway.protocol.usage import (
    MAX_TOKENS,
    Usage,
    from_anthropic,
    from_openai,
    to_anthropic,
    to_openai,
)

HOSTILE_COUNTS = ["12", 12.0, True, False, -1, None, [], {}]


def test_an_openai_usage_maps_its_cached_tokens_inside_the_prompt():
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 20},
    }
    assert from_openai(usage) == Usage(30, 5, 20)


def test_an_openai_usage_without_details_has_nothing_cached():
    assert from_openai({"prompt_tokens": 30, "completion_tokens": 5}) == Usage(30, 5, 0)


def test_an_openai_usage_without_completion_tokens_is_no_usage():
    assert from_openai({"prompt_tokens": 30}) is None


def test_an_anthropic_usage_counts_cache_reads_and_writes_inside_the_prompt():
    usage = {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": 10,
        "cache_read_input_tokens": 40,
    }
    assert from_anthropic(usage) == Usage(53, 2, cached=40, cache_write=10, cache_write_5m=10)


@pytest.mark.parametrize("value", HOSTILE_COUNTS, ids=repr)
def test_an_openai_prompt_count_that_is_not_a_count_makes_no_usage(value):
    assert from_openai({"prompt_tokens": value, "completion_tokens": 1}) is None


@pytest.mark.parametrize("value", HOSTILE_COUNTS, ids=repr)
def test_an_anthropic_input_count_that_is_not_a_count_makes_no_usage(value):
    assert anthropic_usage_counts({"input_tokens": value, "output_tokens": 1}) is None


@pytest.mark.parametrize("value", HOSTILE_COUNTS, ids=repr)
def test_a_cached_count_that_is_not_a_count_is_nothing_cached(value):
    usage = {
        "prompt_tokens": 9,
        "completion_tokens": 1,
        "prompt_tokens_details": {"cached_tokens": value},
    }
    assert from_openai(usage) == Usage(9, 1, 0)


def test_a_huge_anthropic_count_is_capped_at_what_the_ledger_stores():
    usage = {"input_tokens": 10**15, "output_tokens": 1, "cache_read_input_tokens": 10**15}
    assert anthropic_usage_counts(usage) == (MAX_TOKENS, 1, MAX_TOKENS)


def test_a_responses_usage_with_a_string_count_is_no_usage():
    assert response_usage({"prompt_tokens": "many", "completion_tokens": 1}) is None


def test_a_responses_usage_shows_cached_and_reasoning_tokens():
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 20},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    assert response_usage(usage) == {
        "input_tokens": 30,
        "input_tokens_details": {"cached_tokens": 20, "cache_write_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 4},
        "total_tokens": 35,
    }


def test_usage_shown_to_an_anthropic_client_leaves_cached_tokens_out_of_input_tokens():
    assert to_anthropic(Usage(30, 5, 20)) == {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 20,
    }


def test_usage_shown_to_an_anthropic_client_never_has_negative_input_tokens():
    assert to_anthropic(Usage(10, 5, 50))["input_tokens"] == 0


def test_anthropic_usage_shown_to_an_openai_client_and_back_is_unchanged():
    usage = {
        "input_tokens": 3,
        "output_tokens": 2,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 40,
    }
    assert to_anthropic(from_openai(to_openai(from_anthropic(usage)))) == usage
