"""Every answer says what it cost the tenant: ``usage.cost`` (a decimal string, as
OpenRouter names it) and ``x-tollgate-cost``, equal to the ledger record's price for the
same request id, through the official SDKs; and budgets count price, not cost."""

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import anthropic
import httpx
import orjson
import pytest

from apps.billing.models import RateCard
from apps.billing.pricing import Tariff, markup_factor, nanos_of_pico, rule_from
from apps.catalog.models import Price
from apps.gateway.protocol.anthropic import parse_sse_events
from apps.keys.models import ApiKey
from apps.keys.services import api_key_issue
from apps.tenants.models import Tenant
from tests.conftest import openai_client, usage_record, wait_until

ASK = [{"role": "user", "content": "hi #prompt_tokens=100 #completion_tokens=10"}]


def claude(gateway: str, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)


def anthropic_events(gateway: str, secret: str, body: dict) -> tuple[str, list[tuple]]:
    response = httpx.post(
        gateway + "/v1/messages",
        json={**body, "stream": True},
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        timeout=10,
    )
    events = [(name, orjson.loads(data)) for name, data in parse_sse_events(response.content)]
    return response.headers["request-id"], events


def delta_usage(events: list[tuple]) -> dict:
    return next(data["usage"] for name, data in events if name == "message_delta")


def test_a_chat_answer_shows_its_price_in_usage_cost(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=ASK
    )
    record = usage_record(raw.headers["x-request-id"])
    assert Decimal(raw.parse().usage.cost) == record.price


def test_a_chat_answer_shows_its_price_in_the_header(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=ASK
    )
    record = usage_record(raw.headers["x-request-id"])
    assert Decimal(raw.headers["x-tollgate-cost"]) == record.price


def test_the_price_is_the_rule_applied_to_the_tokens(gateway, seed, upstream, celery_worker):
    answer = openai_client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=ASK
    )
    # 100 prompt × 1.00 + 10 completion × 2.00 per million = 120 micro-units
    assert answer.usage.cost == "0.00012"


def test_a_stream_shows_its_price_in_the_final_usage_chunk(gateway, seed, upstream, celery_worker):
    with openai_client(gateway, seed.secret).chat.completions.with_streaming_response.create(
        model="test-model",
        messages=[{"role": "user", "content": "hi #chunks=5"}],
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    record = usage_record(request_id)
    assert Decimal(chunks[-1].usage.cost) == record.price


def test_a_stream_without_usage_asked_still_has_no_usage_chunk(
    gateway, seed, upstream, celery_worker
):
    chunks = list(
        openai_client(gateway, seed.secret).chat.completions.create(
            model="test-model",
            messages=[{"role": "user", "content": "hi #chunks=5"}],
            stream=True,
        )
    )
    assert [c for c in chunks if c.usage is not None] == []


def test_a_chat_stream_from_an_anthropic_deployment_shows_its_price(
    gateway, seed, upstream, celery_worker
):
    with openai_client(gateway, seed.secret).chat.completions.with_streaming_response.create(
        model="claude-fake",
        messages=[{"role": "user", "content": "hi #chunks=3"}],
        max_tokens=50,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        request_id = response.headers["x-request-id"]
        chunks = list(response.parse())
    record = usage_record(request_id)
    assert Decimal(chunks[-1].usage.cost) == record.price


def test_an_anthropic_answer_shows_its_price_in_usage(gateway, seed, upstream, celery_worker):
    raw = claude(gateway, seed.secret).messages.with_raw_response.create(
        model="claude-fake", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    record = usage_record(raw.headers["request-id"])
    assert Decimal(raw.parse().usage.cost) == record.price


def test_an_anthropic_answer_shows_its_price_in_the_header(gateway, seed, upstream, celery_worker):
    raw = claude(gateway, seed.secret).messages.with_raw_response.create(
        model="claude-fake", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    )
    record = usage_record(raw.headers["request-id"])
    assert Decimal(raw.headers["x-tollgate-cost"]) == record.price


def test_a_native_anthropic_stream_shows_its_price_in_message_delta(
    gateway, seed, upstream, celery_worker
):
    request_id, events = anthropic_events(
        gateway,
        seed.secret,
        {"model": "claude-fake", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert Decimal(delta_usage(events)["cost"]) == usage_record(request_id).price


def test_a_translated_anthropic_stream_shows_its_price_in_message_delta(
    gateway, seed, upstream, celery_worker
):
    request_id, events = anthropic_events(
        gateway,
        seed.secret,
        {"model": "test-model", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert Decimal(delta_usage(events)["cost"]) == usage_record(request_id).price


def test_the_anthropic_sdk_still_parses_a_priced_stream(gateway, seed, upstream, celery_worker):
    with claude(gateway, seed.secret).messages.stream(
        model="claude-fake", max_tokens=50, messages=[{"role": "user", "content": "hi #chunks=3"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "w0 w1 w2"


def test_a_responses_answer_shows_its_price(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).responses.with_raw_response.create(
        model="test-model", input="hi #prompt_tokens=100 #completion_tokens=10"
    )
    record = usage_record(raw.headers["x-request-id"])
    assert Decimal(raw.parse().usage.cost) == record.price


def test_a_responses_stream_shows_its_price_on_completion(gateway, seed, upstream, celery_worker):
    with openai_client(gateway, seed.secret).responses.with_streaming_response.create(
        model="test-model", input="hi #chunks=3", stream=True
    ) as response:
        request_id = response.headers["x-request-id"]
        events = list(response.parse())
    completed = next(e for e in events if e.type == "response.completed")
    assert Decimal(completed.response.usage.cost) == usage_record(request_id).price


def test_an_embeddings_answer_shows_its_price(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).embeddings.with_raw_response.create(
        model="test-model", input="hello"
    )
    record = usage_record(raw.headers["x-request-id"])
    assert Decimal(raw.headers["x-tollgate-cost"]) == record.price


# A tenant with a rate card ---------------------------------------------------------------


@pytest.fixture
def marked_up(seed, gateway):
    """acme pays 50% over cost from now on, once every gateway process has the card."""
    tenant = Tenant.objects.get(name=seed.tenant_name)
    RateCard.objects.create(
        tenant=tenant,
        effective_from=datetime.now(UTC) - timedelta(seconds=1),
        markup_percent=Decimal("50"),
    )
    client = openai_client(gateway, seed.secret)

    def priced_with_markup():
        answer = client.chat.completions.create(model="test-model", messages=ASK)
        return answer.usage.cost == "0.00018"

    wait_until(priced_with_markup)
    return tenant


def test_a_marked_up_answer_shows_the_tenant_price(gateway, seed, marked_up, celery_worker):
    answer = openai_client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=ASK
    )
    assert answer.usage.cost == "0.00018"  # 120 micro-units of cost + 50%


def test_a_marked_up_record_keeps_the_cost(gateway, seed, marked_up, celery_worker):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=ASK
    )
    record = usage_record(raw.headers["x-request-id"])
    assert record.cost == Decimal("0.00012")


def test_a_marked_up_record_names_its_rate_card(gateway, seed, marked_up, celery_worker):
    raw = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=ASK
    )
    record = usage_record(raw.headers["x-request-id"])
    assert record.rate_card_id == RateCard.objects.get(tenant=marked_up).id


def _admitted(gateway: str, secret: str, limit: int = 60) -> int:
    client = openai_client(gateway, secret)
    admitted = 0
    for _ in range(limit):
        raw = client.chat.completions.with_raw_response.create
        try:
            raw(model="test-model", messages=ASK, max_tokens=10)
        except Exception as exc:  # noqa: BLE001 - the budget's 429 ends the count
            assert getattr(exc, "status_code", None) == 429
            return admitted
        admitted += 1
    return admitted


def _expected(budget_nanos: int, price_nanos: int, worst_nanos: int) -> int:
    """Sequential requests: the n-th is admitted while spent + its reservation fit."""
    admitted = 0
    while admitted * price_nanos + worst_nanos <= budget_nanos:
        admitted += 1
    return admitted


def test_a_budget_that_fits_20_requests_at_cost_admits_fewer_at_a_markup(
    gateway, seed, upstream, celery_worker
):
    tenant = Tenant.objects.get(name=seed.tenant_name)
    probe = openai_client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=ASK, max_tokens=10
    )
    record = usage_record(probe.headers["x-request-id"])
    rule = rule_from(Price.objects.get(model__name="test-model"))
    at_cost = Tariff(rule)
    factor = markup_factor(Decimal("50"))
    at_markup = Tariff(rule, rule.scaled(factor), factor)
    bounds = (record.prompt_tokens_bound, record.completion_tokens_bound)
    cost_nanos = nanos_of_pico(int(record.cost.scaleb(12)))
    worst = at_cost.worst_nanos(*bounds)
    budget_nanos = 19 * cost_nanos + worst  # exactly 20 at cost
    budget = Decimal(budget_nanos).scaleb(-9)
    secret_at_cost = _budget_key(tenant, "at-cost", budget)
    assert _admitted(gateway, secret_at_cost) == 20
    RateCard.objects.create(
        tenant=tenant, effective_from=datetime.now(UTC), markup_percent=Decimal("50")
    )
    client = openai_client(gateway, seed.secret)
    wait_until(
        lambda: (
            client.chat.completions.create(model="test-model", messages=ASK).usage.cost == "0.00018"
        )
    )
    secret_marked_up = _budget_key(tenant, "marked-up", budget)
    expected = _expected(budget_nanos, cost_nanos * 3 // 2, at_markup.worst_nanos(*bounds))
    assert expected < 20
    assert _admitted(gateway, secret_marked_up) == expected


def test_the_worked_markup_case_admits_fewer_than_20():
    # The arithmetic of the test above with its numbers: fewer requests fit.
    assert _expected(19 * 120_000 + 600_000, 180_000, 900_000) < 20


def _budget_key(tenant: Tenant, name: str, budget: Decimal) -> str:
    _key, secret = api_key_issue(
        tenant=tenant,
        name=name,
        allowed_models=["test-model"],
        budget_amount=budget,
        budget_period="monthly",
    )
    assert ApiKey.objects.filter(tenant=tenant, name=name).exists()
    return secret
