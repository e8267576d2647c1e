"""Fallback models through the running gateway: when every deployment of a model fails
another model serves (and the ledger names both), when the prompt is too long a model
with a larger window does; never on a client's or the gateway's own error, never with a
model the key may not use, and a budget holds the priciest of them."""

import asyncio
from dataclasses import dataclass
from decimal import Decimal

import anthropic
import httpx
import openai
import pytest
from django.db.models import Sum

from apps.ledger.models import UsageRecord
from apps.provisioning.services import config_apply
from tests.conftest import (
    fire_held,
    openai_client,
    seed_document,
    usage_record,
    wait_until,
)

pytestmark = pytest.mark.e2e

CHEAP = {
    "effective_from": "2026-01-01",
    "input_per_mtok": "1.00",
    "output_per_mtok": "2.00",
}
# 100× the primary's: 100_000 and 200_000 nano-USD per token.
PRICEY = {
    "effective_from": "2026-01-01",
    "input_per_mtok": "100.00",
    "output_per_mtok": "200.00",
}
PRICEY_INPUT_NANOS, PRICEY_OUTPUT_NANOS = 100_000, 200_000
PER_REQUEST, PER_MESSAGE = 512, 32


def fake(upstream_model: str) -> dict:
    return {"backend": "fake", "upstream_model": upstream_model}


def dead(upstream_model: str) -> dict:
    return {"backend": "dead", "upstream_model": upstream_model}


def fallback_document(upstream_base_url: str) -> dict:
    doc = seed_document(upstream_base_url)
    doc["models"] += [
        {
            # Every deployment down (connection refused).
            "name": "primary",
            "prices": [CHEAP],
            "deployments": [dead("down-1"), dead("down-2")],
            "fallbacks": ["forbidden", "backup"],
            "context_window_fallbacks": ["long"],
        },
        {"name": "forbidden", "prices": [CHEAP], "deployments": [fake("fake-forbidden")]},
        {"name": "backup", "prices": [PRICEY], "deployments": [fake("fake-backup")]},
        {"name": "long", "prices": [CHEAP], "deployments": [fake("fake-long")]},
        {
            # Up, on two deployments: a refusal from one could be retried on the other.
            "name": "short",
            "prices": [CHEAP],
            "deployments": [fake("fake-short"), fake("fake-short-2")],
            "fallbacks": ["backup"],
            "context_window_fallbacks": ["long"],
        },
        {
            "name": "to-claude",
            "prices": [CHEAP],
            "deployments": [dead("down-3")],
            "fallbacks": ["claude-fake"],
        },
        {
            "name": "claude-short",
            "prices": [CHEAP],
            "deployments": [{"backend": "fake-anthropic", "upstream_model": "claude-short"}],
            "context_window_fallbacks": ["long"],
        },
    ]
    models = ["primary", "backup", "long", "short", "to-claude", "claude-fake", "claude-short"]
    doc["tenants"] = [
        {
            "name": "acme",
            "keys": [
                {"name": "main", "models": models},
                {"name": "narrow", "models": ["primary", "short"]},
            ],
        }
    ]
    return doc


@dataclass
class FallbackSeed:
    secret: str
    narrow_secret: str


@pytest.fixture
def fb(transactional_db, upstream) -> FallbackSeed:
    result = config_apply(document=fallback_document(upstream.base_url))
    secrets = {k["name"]: k["secret"] for k in result.keys_created}
    return FallbackSeed(secret=secrets["main"], narrow_secret=secrets["narrow"])


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def chat(gateway: str, secret: str, model: str, text: str = "hello", **kwargs):
    return openai_client(gateway, secret).chat.completions.with_raw_response.create(
        model=model, messages=user(text), **kwargs
    )


def chat_error(gateway: str, secret: str, model: str, text: str, **kwargs):
    with pytest.raises(openai.APIStatusError) as exc:
        openai_client(gateway, secret).chat.completions.create(
            model=model, messages=user(text), **kwargs
        )
    return exc.value


def anthropic_client(gateway: str, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)


def upstream_models(upstream) -> list[str]:
    return [r["body"]["model"] for r in upstream.requests()]


def streamed_text(raw) -> str:
    return "".join(
        chunk.choices[0].delta.content or ""
        for chunk in raw.parse()
        if chunk.choices and chunk.choices[0].delta
    )


# All deployments down ---------------------------------------------------------------


def test_a_model_whose_deployments_are_all_down_is_served_by_its_fallback(gateway, fb, upstream):
    chat(gateway, fb.secret, "primary")
    assert upstream_models(upstream) == ["fake-backup"]


def test_the_fallback_answer_is_a_normal_completion(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "primary", "#say=served_anyway")
    assert raw.parse().choices[0].message.content == "served anyway"


def test_the_answer_names_the_model_that_served_in_a_header(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "primary")
    assert raw.headers["x-tollgate-model"] == "backup"


def test_an_answer_from_the_model_itself_has_no_served_model_header(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "long")
    assert "x-tollgate-model" not in raw.headers


def test_the_ledger_row_names_the_model_that_served(gateway, fb, upstream, celery_worker):
    raw = chat(gateway, fb.secret, "primary")
    assert usage_record(raw.headers["x-request-id"]).model == "backup"


def test_the_ledger_row_names_the_model_asked_for(gateway, fb, upstream, celery_worker):
    raw = chat(gateway, fb.secret, "primary")
    assert usage_record(raw.headers["x-request-id"]).requested_model == "primary"


def test_the_ledger_row_of_a_plain_request_names_its_model_twice(
    gateway, fb, upstream, celery_worker
):
    raw = chat(gateway, fb.secret, "long")
    record = usage_record(raw.headers["x-request-id"])
    assert (record.model, record.requested_model) == ("long", "long")


def test_the_fallback_is_priced_at_its_own_rates(gateway, fb, upstream, celery_worker):
    raw = chat(gateway, fb.secret, "primary", "#prompt_tokens=10 #say=one_two")
    record = usage_record(raw.headers["x-request-id"])
    # 10 × 100 + 2 × 200 USD per million tokens.
    assert record.price == Decimal("0.0014")


def test_the_answer_shows_the_fallbacks_price(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "primary", "#prompt_tokens=10 #say=one_two")
    assert raw.headers["x-tollgate-cost"] == "0.0014"


def test_a_stream_is_served_by_the_fallback(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "primary", "#say=streamed_back", stream=True)
    assert streamed_text(raw) == "streamed back"


def test_a_streams_header_names_the_model_that_served(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "primary", stream=True)
    assert raw.headers["x-tollgate-model"] == "backup"


def test_a_messages_answer_names_the_model_that_served_in_a_header(gateway, fb, upstream):
    raw = anthropic_client(gateway, fb.secret).messages.with_raw_response.create(
        model="primary", max_tokens=20, messages=user("hello")
    )
    assert raw.headers["x-tollgate-model"] == "backup"


def test_a_stream_reaches_only_the_fallbacks_upstream(gateway, fb, upstream):
    chat(gateway, fb.secret, "primary", stream=True)
    assert upstream_models(upstream) == ["fake-backup"]


def test_a_streams_ledger_row_names_both_models(gateway, fb, upstream, celery_worker):
    raw = chat(gateway, fb.secret, "primary", stream=True)
    streamed_text(raw)
    record = usage_record(raw.headers["x-request-id"])
    assert (record.model, record.requested_model) == ("backup", "primary")


def test_an_overloaded_model_falls_back(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "short", "#fail_model=fake-short #status=503")
    assert raw.headers["x-tollgate-model"] == "backup"


def test_a_rate_limited_model_falls_back(gateway, fb, upstream):
    chat(gateway, fb.secret, "short", "#fail_model=fake-short #status=429")
    assert upstream_models(upstream)[-1] == "fake-backup"


def test_a_chat_request_falls_back_on_an_anthropic_native_model(gateway, fb, upstream):
    raw = chat(gateway, fb.secret, "to-claude", "#say=translated_twice")
    assert raw.parse().choices[0].message.content == "translated twice"


def test_the_anthropic_fallback_is_sent_a_messages_request(gateway, fb, upstream):
    chat(gateway, fb.secret, "to-claude")
    request = upstream.requests()[0]
    assert (request["path"], request["body"]["model"]) == ("/v1/messages", "claude-upstream")


def test_a_messages_request_falls_back_through_the_anthropic_sdk(gateway, fb, upstream):
    message = anthropic_client(gateway, fb.secret).messages.create(
        model="primary", max_tokens=20, messages=user("#say=from_the_backup")
    )
    assert message.content[0].text == "from the backup"


def test_a_messages_fallback_is_sent_its_own_upstream_model(gateway, fb, upstream):
    anthropic_client(gateway, fb.secret).messages.create(
        model="primary", max_tokens=20, messages=user("hello")
    )
    request = upstream.requests()[0]
    assert (request["path"], request["body"]["model"]) == ("/v1/chat/completions", "fake-backup")


def test_a_messages_stream_falls_back(gateway, fb, upstream):
    with anthropic_client(gateway, fb.secret).messages.stream(
        model="primary", max_tokens=20, messages=user("#say=streamed_message")
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "streamed message"


def test_a_messages_streams_ledger_row_names_both_models(gateway, fb, upstream, celery_worker):
    client = anthropic_client(gateway, fb.secret)
    with client.messages.with_streaming_response.create(
        model="primary", max_tokens=20, messages=user("hello"), stream=True
    ) as response:
        response.read()
        request_id = response.headers["request-id"]
    record = usage_record(request_id)
    assert (record.model, record.requested_model) == ("backup", "primary")


# The allowlist ----------------------------------------------------------------------


def test_a_fallback_the_key_may_not_use_is_skipped(gateway, fb, upstream):
    chat(gateway, fb.secret, "primary")
    assert "fake-forbidden" not in upstream_models(upstream)


def test_without_a_usable_fallback_the_client_gets_the_original_error(gateway, fb, upstream):
    error = chat_error(gateway, fb.narrow_secret, "primary", "hello")
    assert (error.status_code, error.body["message"]) == (
        502,
        "The upstream for this model is unavailable.",
    )


def test_without_a_usable_fallback_no_other_model_is_asked(gateway, fb, upstream):
    chat_error(gateway, fb.narrow_secret, "primary", "hello")
    assert upstream.requests() == []


def test_without_a_usable_context_window_fallback_the_client_gets_the_upstreams_words(
    gateway, fb, upstream
):
    error = chat_error(gateway, fb.narrow_secret, "short", "#fail_model=fake-short #error=context")
    assert error.body["code"] == "context_length_exceeded"


# Never on a refusal -------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True], ids=["once", "stream"])
def test_a_400_from_the_upstream_is_sent_exactly_once(gateway, fb, upstream, stream):
    chat_error(gateway, fb.secret, "short", "#error=leak", stream=stream)
    assert len(upstream.requests()) == 1


def test_a_400_from_the_upstream_reaches_the_client_as_a_400(gateway, fb, upstream):
    error = chat_error(gateway, fb.secret, "short", "#error=leak")
    assert error.status_code == 400


def test_a_400_on_the_messages_route_is_sent_exactly_once(gateway, fb, upstream):
    with pytest.raises(anthropic.BadRequestError):
        anthropic_client(gateway, fb.secret).messages.create(
            model="short", max_tokens=20, messages=user("#error=leak")
        )
    assert len(upstream.requests()) == 1


@pytest.mark.parametrize(
    "directives",
    ["#error=key", "#error=leak #status=403", "#error=content_filter", "#error=detail"],
    ids=["401", "403", "content-policy", "validation-422"],
)
def test_a_refusal_never_falls_back(gateway, fb, upstream, directives):
    chat_error(gateway, fb.secret, "short", f"#fail_model=fake-short {directives}")
    assert len(upstream.requests()) == 1


def test_a_content_policy_refusal_reaches_the_client(gateway, fb, upstream):
    error = chat_error(gateway, fb.secret, "short", "#error=content_filter")
    assert (error.status_code, error.body["code"]) == (400, "content_filter")


# Prompt too long --------------------------------------------------------------------


@pytest.mark.parametrize(
    "directives",
    [
        "#error=context",
        "#error=vllm_context",
        "#error=llama_context",
        "#error=llama_context #status=500",
    ],
    ids=["openai", "vllm", "llama.cpp", "llama.cpp-500"],
)
def test_a_prompt_too_long_is_served_by_the_context_window_fallback(
    gateway, fb, upstream, directives
):
    raw = chat(gateway, fb.secret, "short", f"#fail_model=fake-short {directives}")
    assert raw.headers["x-tollgate-model"] == "long"


def test_a_prompt_too_long_is_not_retried_on_the_models_other_deployment(gateway, fb, upstream):
    chat(gateway, fb.secret, "short", "#fail_model=fake-short #error=llama_context #status=500")
    assert len([m for m in upstream_models(upstream) if m.startswith("fake-short")]) == 1


def test_a_prompt_too_long_stream_is_served_by_the_context_window_fallback(gateway, fb, upstream):
    raw = chat(
        gateway,
        fb.secret,
        "short",
        "#fail_model=fake-short #error=context #say=long_one",
        stream=True,
    )
    assert streamed_text(raw) == "long one"


def test_anthropics_prompt_is_too_long_is_served_by_the_context_window_fallback(
    gateway, fb, upstream
):
    message = anthropic_client(gateway, fb.secret).messages.create(
        model="claude-short",
        max_tokens=20,
        messages=user("#fail_model=claude-short #error=anthropic_context #say=fits_now"),
    )
    assert message.content[0].text == "fits now"


def test_a_fallback_that_finds_the_prompt_too_long_hands_it_to_a_larger_window(
    gateway, fb, upstream
):
    raw = chat(gateway, fb.secret, "primary", "#fail_model=fake-backup #error=context")
    assert raw.headers["x-tollgate-model"] == "long"


def test_a_fallbacks_own_400_is_the_answer(gateway, fb, upstream):
    error = chat_error(gateway, fb.secret, "primary", "#fail_model=fake-backup #error=leak")
    assert error.status_code == 400


def test_a_fallbacks_own_400_is_sent_once_and_no_later_model_is_asked(gateway, fb, upstream):
    chat_error(gateway, fb.secret, "primary", "#fail_model=fake-backup #error=leak")
    assert upstream_models(upstream) == ["fake-backup"]


def test_a_context_window_ledger_row_names_both_models(gateway, fb, upstream, celery_worker):
    raw = chat(gateway, fb.secret, "short", "#fail_model=fake-short #error=context")
    record = usage_record(raw.headers["x-request-id"])
    assert (record.model, record.requested_model) == ("long", "short")


def test_a_fallbacks_are_counted_in_the_metrics(gateway, fb, upstream):
    chat(gateway, fb.secret, "short", "#fail_model=fake-short #error=context")
    metrics = httpx.get(gateway + "/metrics").text
    assert 'tollgate_fallbacks_total{reason="context_window",requested="short",served="long"}' in (
        metrics
    )


# The budget -------------------------------------------------------------------------


def budgeted_key(upstream, budget_nanos: int) -> str:
    doc = fallback_document(upstream.base_url)
    budget = {"amount": f"{Decimal(budget_nanos) / 10**9:.9f}", "period": "monthly"}
    doc["tenants"] = [
        {
            "name": "thrifty",
            "keys": [{"name": "b", "models": ["primary", "backup"], "budget": budget}],
        }
    ]
    return config_apply(document=doc).keys_created[0]["secret"]


def pricey_worst_nanos(text: str, max_tokens: int) -> int:
    """A one-message request's reservation at the fallback's rates, by hand."""
    prompt_bound = PER_REQUEST + PER_MESSAGE + len(text.encode())
    return prompt_bound * PRICEY_INPUT_NANOS + max_tokens * PRICEY_OUTPUT_NANOS


def test_admission_reserves_at_the_pricier_fallbacks_rates(transactional_db, gateway, upstream):
    text = "hello"
    # Enough for the primary's rates (1/100 of the fallback's), not for the fallback's
    # (a budget has micro-dollar steps).
    secret = budgeted_key(upstream, pricey_worst_nanos(text, 16) - 1000)
    error = chat_error(gateway, secret, "primary", text, max_tokens=16)
    assert error.status_code == 429


def test_a_budget_is_never_overspent_when_the_fallback_is_pricier(
    transactional_db, gateway, upstream, celery_worker
):
    # The upstream reports 5× the gateway's prompt estimate: only the bound caps the cost.
    text = "#prompt_x=5 #gate=fallback-budget"
    worst = pricey_worst_nanos(text, 16)
    secret = budgeted_key(upstream, 3 * worst)
    payload = {"model": "primary", "messages": user(text), "max_tokens": 16}
    responses = asyncio.run(
        fire_held(
            upstream,
            [gateway],
            {"Authorization": f"Bearer {secret}"},
            10,
            payload,
            admitted=3,
        )
    )
    assert sum(r.status_code == 200 for r in responses) == 3
    wait_until(lambda: UsageRecord.objects.filter(tenant__name="thrifty").count() == 10, 30)
    spent = UsageRecord.objects.filter(tenant__name="thrifty").aggregate(p=Sum("price"))["p"]
    assert spent * 10**9 <= 3 * worst
