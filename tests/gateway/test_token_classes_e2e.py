"""Every token class an upstream reports lands in the ledger: cache writes by TTL,
reasoning tokens and the service tier, through the official SDKs."""

import anthropic

from tests.conftest import openai_client, usage_record


def claude(gateway: str, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)


def test_an_anthropic_answer_lands_with_its_cache_writes_by_ttl_and_tier(
    gateway, seed, upstream, celery_worker
):
    raw = claude(gateway, seed.secret).messages.with_raw_response.create(
        model="claude-fake",
        max_tokens=50,
        messages=[
            {
                "role": "user",
                "content": "hi #cache_create=30 #cache_create_1h=12 #service_tier=priority",
            }
        ],
    )
    record = usage_record(raw.headers["request-id"])
    assert record.cache_write_5m_tokens == 18
    assert record.cache_write_1h_tokens == 12
    assert record.service_tier == "priority"
    assert record.prompt_tokens == raw.parse().usage.input_tokens + 30


def test_an_openai_answer_lands_with_its_reasoning_tokens_and_tier(
    gateway, seed, upstream, celery_worker
):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model",
        messages=[{"role": "user", "content": "w #chunks=6 #reasoning=4 #service_tier=flex"}],
    )
    record = usage_record(raw.headers["x-request-id"])
    assert record.reasoning_tokens == 4
    assert record.service_tier == "flex"
    assert record.completion_tokens == raw.parse().usage.completion_tokens
