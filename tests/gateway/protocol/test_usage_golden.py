"""Golden usage objects: each upstream's usage as its documentation shows it, mapped to
the exact token classes the ledger stores."""

from apps.gateway.protocol.usage import Usage, from_anthropic, from_openai, from_responses, tier

# https://platform.openai.com/docs/guides/prompt-caching (the usage of a cached request)
# with completion_tokens_details as the chat completion object shows it
# (https://platform.openai.com/docs/api-reference/chat/object), reasoning_tokens set as a
# reasoning model reports them, and the object's top-level service_tier.
OPENAI_CHAT = {
    "prompt_tokens": 2006,
    "completion_tokens": 300,
    "total_tokens": 2306,
    "prompt_tokens_details": {"cached_tokens": 1920, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 192,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
OPENAI_CHAT_SERVICE_TIER = "default"

# https://platform.openai.com/docs/guides/reasoning ("usage object of the response object")
OPENAI_RESPONSES = {
    "input_tokens": 75,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 1186,
    "output_tokens_details": {"reasoning_tokens": 1024},
    "total_tokens": 1261,
}

# https://docs.anthropic.com/en/docs/build-with-claude/prompt-caching (mixing TTLs: the
# cache_creation object splits cache_creation_input_tokens by TTL), with the
# usage.service_tier of https://docs.anthropic.com/en/api/messages
ANTHROPIC_MESSAGES = {
    "input_tokens": 2048,
    "cache_read_input_tokens": 1800,
    "cache_creation_input_tokens": 248,
    "output_tokens": 503,
    "cache_creation": {"ephemeral_5m_input_tokens": 148, "ephemeral_1h_input_tokens": 100},
    "service_tier": "standard",
}

# vLLM's UsageInfo (vllm/entrypoints/openai/protocol.py,
# https://github.com/vllm-project/vllm): prompt_tokens_details is null unless the server
# runs with --enable-prompt-tokens-details.
VLLM = {
    "prompt_tokens": 31,
    "total_tokens": 58,
    "completion_tokens": 27,
    "prompt_tokens_details": None,
}

# llama.cpp server's OpenAI-compatible chat completion
# (https://github.com/ggml-org/llama.cpp/blob/master/tools/server/README.md): the three
# counts only (its "timings" sit beside usage, not in it).
LLAMA_CPP = {"completion_tokens": 27, "prompt_tokens": 31, "total_tokens": 58}


def test_an_openai_chat_usage_maps_cached_and_reasoning_tokens_and_the_service_tier():
    assert from_openai(OPENAI_CHAT, OPENAI_CHAT_SERVICE_TIER) == Usage(
        prompt=2006, completion=300, cached=1920, reasoning=192, service_tier="default"
    )


def test_an_openai_responses_usage_maps_its_reasoning_tokens():
    assert from_responses(OPENAI_RESPONSES) == Usage(
        prompt=75, completion=1186, cached=0, reasoning=1024
    )


def test_an_anthropic_usage_maps_cache_writes_by_ttl_inside_the_prompt():
    assert from_anthropic(ANTHROPIC_MESSAGES) == Usage(
        prompt=2048 + 248 + 1800,
        completion=503,
        cached=1800,
        cache_write=248,
        cache_write_5m=148,
        cache_write_1h=100,
        service_tier="standard",
    )


def test_an_anthropic_cache_write_without_its_ttl_split_is_a_5_minute_write():
    usage = {k: v for k, v in ANTHROPIC_MESSAGES.items() if k != "cache_creation"}
    assert from_anthropic(usage).cache_write_5m == 248


def test_an_anthropic_1h_count_above_the_total_is_capped_at_the_total():
    usage = {**ANTHROPIC_MESSAGES, "cache_creation": {"ephemeral_1h_input_tokens": 10_000}}
    assert from_anthropic(usage).cache_write_1h == 248


def test_an_anthropic_1h_count_above_the_total_leaves_no_5_minute_writes():
    usage = {**ANTHROPIC_MESSAGES, "cache_creation": {"ephemeral_1h_input_tokens": 10_000}}
    assert from_anthropic(usage).cache_write_5m == 0


def test_a_vllm_usage_maps_its_three_counts():
    assert from_openai(VLLM) == Usage(prompt=31, completion=27)


def test_a_llama_cpp_usage_maps_its_three_counts():
    assert from_openai(LLAMA_CPP) == Usage(prompt=31, completion=27)


def test_reasoning_above_the_completion_is_capped_at_the_completion():
    usage = {**OPENAI_CHAT, "completion_tokens_details": {"reasoning_tokens": 10_000}}
    assert from_openai(usage).reasoning == 300


def test_a_service_tier_that_is_not_a_short_plain_word_is_dropped():
    for hostile in ("<script>", "x" * 33, "", 7, None, ["default"], "flex tier"):
        assert tier(hostile) is None, hostile


def test_a_known_service_tier_is_kept():
    for known in ("default", "flex", "priority", "scale", "auto", "standard", "batch"):
        assert tier(known) == known
