"""A budget is never overspent, whatever the upstream counts: the reservation is an upper
bound of the real cost on every route (README, "Limits and budgets")."""

import asyncio
from decimal import Decimal

import anthropic
import openai
import pytest
from django.db.models import Sum

from apps.ledger.models import UsageRecord
from apps.provisioning.services import config_apply
from tests.conftest import (
    fire_held,
    openai_client,
    release_when_refused,
    seed_document,
    start_gateway,
    usage_record,
    wait_until,
)

pytestmark = pytest.mark.e2e

# test-model: input 1.00, cached input 0.50, output 2.00 USD per million tokens, that is
# 1_000 and 2_000 nano-USD per token.
INPUT_NANOS, OUTPUT_NANOS = 1_000, 2_000
# The model's default allowances: 512 tokens per request, 32 per message.
PER_REQUEST, PER_MESSAGE = 512, 32
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway2")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def issue_key(upstream, tenant: str, budget_nanos: int, **model_fields) -> str:
    doc = seed_document(upstream.base_url)
    doc["models"][0].update(model_fields)  # test-model
    budget = {"amount": f"{Decimal(budget_nanos) / 10**9:.9f}", "period": "monthly"}
    doc["tenants"] = [
        {
            "name": tenant,
            "keys": [{"name": "budgeted", "models": ["test-model"], "budget": budget}],
        }
    ]
    return config_apply(document=doc).keys_created[0]["secret"]


def one_message_worst_nanos(text: str) -> int:
    """A one-message request's reservation, by hand: its UTF-8 bytes plus the template
    allowances, and max_tokens of output."""
    prompt_bound = PER_REQUEST + PER_MESSAGE + len(text.encode())
    return prompt_bound * INPUT_NANOS + MAX_TOKENS * OUTPUT_NANOS


def ledger_of(tenant: str, expected: int) -> list[UsageRecord]:
    return wait_until(
        lambda: (
            (records := list(UsageRecord.objects.filter(tenant__name=tenant))) is not None
            and len(records) == expected
            and records
        ),
        timeout=30,
    )


def spent_nanos(tenant: str) -> int:
    total = UsageRecord.objects.filter(tenant__name=tenant).aggregate(cost=Sum("cost"))["cost"]
    return int(total * 10**9)


def test_budget_is_never_overspent_when_the_upstream_counts_5x_the_prompt_estimate(
    gateway, second_gateway, seed, upstream, celery_worker
):
    text = "#prompt_x=5 #gate=bounds200"
    # 5 × (⌈26 bytes / 4⌉ + 4 + 3) = 70 prompt tokens reported, 5 completion tokens: the
    # old reservation (14 prompt tokens) was a fifth of that.
    fits = 6
    budget = one_message_worst_nanos(text) * fits + one_message_worst_nanos(text) // 2
    secret = issue_key(upstream, "bounded", budget)
    payload = {
        "model": "test-model",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": MAX_TOKENS,
    }
    headers = {"Authorization": f"Bearer {secret}"}
    responses = asyncio.run(
        fire_held(upstream, [gateway, second_gateway], headers, 200, payload, admitted=fits)
    )
    codes = [r.status_code for r in responses]
    records = ledger_of("bounded", 200)
    assert max(r.prompt_tokens for r in records) == 70
    assert spent_nanos("bounded") <= budget
    assert codes.count(200) == fits


TEXT = "#prompt_x=5 #gate={gate}"


async def _chat(client: openai.AsyncOpenAI, _anthropic: anthropic.AsyncAnthropic, text: str):
    await client.chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS
    )


async def _messages(_client: openai.AsyncOpenAI, client: anthropic.AsyncAnthropic, text: str):
    await client.messages.create(
        model="test-model", messages=[{"role": "user", "content": text}], max_tokens=MAX_TOKENS
    )


async def _responses(client: openai.AsyncOpenAI, _anthropic: anthropic.AsyncAnthropic, text: str):
    await client.responses.create(model="test-model", input=text, max_output_tokens=MAX_TOKENS)


async def _embeddings(client: openai.AsyncOpenAI, _anthropic: anthropic.AsyncAnthropic, text: str):
    await client.embeddings.create(model="test-model", input=text)


# Every route's gate name has the same length, so one TEXT length prices them all.
def route_text(route: str) -> str:
    return TEXT.format(gate=f"route-{route[:5]:_<10}")


ROUTES = {
    "chat": (_chat, one_message_worst_nanos(route_text("chat"))),
    "messages": (_messages, one_message_worst_nanos(route_text("messages"))),
    "responses": (_responses, one_message_worst_nanos(route_text("responses"))),
    # Embeddings reserve input only: the text's bytes + 2 special tokens.
    "embeddings": (_embeddings, (len(route_text("embeddings").encode()) + 2) * INPUT_NANOS),
}


@pytest.mark.parametrize("route", ROUTES)
def test_budget_holds_on_each_route_when_the_upstream_counts_5x_the_prompt_estimate(
    route, gateway, seed, upstream, celery_worker
):
    call, worst = ROUTES[route]
    fits, count = 3, 30
    budget = worst * fits + worst // 2
    tenant = f"route-{route}"
    secret = issue_key(upstream, tenant, budget)
    admitted = asyncio.run(_fire_sdk(upstream, gateway, secret, count, call, route, fits))
    ledger_of(tenant, count)
    assert spent_nanos(tenant) <= budget
    assert admitted == fits


async def _fire_sdk(upstream, gateway: str, secret: str, count: int, call, route, fits) -> int:
    client_openai = openai.AsyncOpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)
    client_anthropic = anthropic.AsyncAnthropic(base_url=gateway, api_key=secret, max_retries=0)
    text = route_text(route)

    async def one():
        try:
            await call(client_openai, client_anthropic, text)
        except (openai.RateLimitError, anthropic.RateLimitError):
            return 0
        return 1

    try:
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        gate = text.rsplit("#gate=", 1)[1]
        return sum(await release_when_refused(upstream, gate, tasks, admitted=fits))
    finally:
        await client_openai.close()
        await client_anthropic.close()


def test_an_answer_longer_than_max_tokens_is_recorded_as_reported(
    gateway, seed, upstream, celery_worker
):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model",
        messages=[{"role": "user", "content": "#completion_tokens=5000"}],
        max_tokens=MAX_TOKENS,
    )
    record = usage_record(raw.headers["x-request-id"])
    assert record.completion_tokens == 5000


def test_an_answer_longer_than_max_tokens_is_billed_up_to_max_tokens(
    gateway, seed, upstream, celery_worker
):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model",
        messages=[{"role": "user", "content": "#completion_tokens=5000"}],
        max_tokens=MAX_TOKENS,
    )
    record = usage_record(raw.headers["x-request-id"])
    billed_nanos = record.prompt_tokens * INPUT_NANOS + MAX_TOKENS * OUTPUT_NANOS
    assert record.cost * 10**9 == billed_nanos


def test_a_request_without_max_tokens_reserves_the_models_maximum_output(
    gateway, seed, upstream, celery_worker
):
    text = "hi"
    # Fits a 100-token answer, not the 4,096 the gateway assumed for every model before.
    budget = (PER_REQUEST + PER_MESSAGE + len(text)) * INPUT_NANOS + 100 * OUTPUT_NANOS + 1_000
    secret = issue_key(upstream, "short-answers", budget, max_output_tokens=100)
    answer = openai_client(gateway, secret).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": text}]
    )
    assert answer.choices[0].finish_reason == "stop"


def test_a_max_tokens_above_the_models_maximum_reserves_the_maximum(
    gateway, seed, upstream, celery_worker
):
    text = "hi"
    budget = (PER_REQUEST + PER_MESSAGE + len(text)) * INPUT_NANOS + 100 * OUTPUT_NANOS + 1_000
    secret = issue_key(upstream, "capped-answers", budget, max_output_tokens=100)
    answer = openai_client(gateway, secret).chat.completions.create(
        model="test-model", messages=[{"role": "user", "content": text}], max_tokens=100_000
    )
    assert answer.choices[0].finish_reason == "stop"


def test_a_request_beyond_the_budget_by_its_bound_is_refused(
    gateway, seed, upstream, celery_worker
):
    text = "hi"
    budget = (PER_REQUEST + PER_MESSAGE + len(text)) * INPUT_NANOS + 100 * OUTPUT_NANOS - 1_000
    secret = issue_key(upstream, "just-short", budget, max_output_tokens=100)
    with pytest.raises(openai.RateLimitError) as refused:
        openai_client(gateway, secret).chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": text}]
        )
    assert refused.value.code == "insufficient_quota"
