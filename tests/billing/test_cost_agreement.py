"""Admission/settlement (the budget counter in Redis) and the ledger charge a request the
same money, to the nano-unit, whatever awkward usage the upstream reports: one real
request per case through the gateway, the ledger record after Celery ingest."""

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal

import anthropic
import pytest

from apps.core.redis import sync_client
from apps.keys.models import ApiKey
from apps.limits.limiter import budget_period_bounds, scope_keys
from apps.provisioning.services import config_apply
from tests.conftest import openai_client, seed_document, usage_record

pytestmark = pytest.mark.e2e

# Six decimals per million tokens: most costs are not whole nano-USD, so the rounding
# rule (exact ledger, budget counter rounded up to the nano) shows.
PRICE = {
    "effective_from": "2026-01-01",
    "input_per_mtok": "0.123457",
    "cached_input_per_mtok": "0.000003",
    "output_per_mtok": "1.999999",
}


@dataclass(frozen=True)
class Case:
    route: str  # chat | chat_stream | messages
    text: str
    ledger_cost: Decimal  # worked by hand from PRICE
    spend_nanos: int  # ledger_cost in nano-USD, rounded up


CASES = {
    # 50 cached of 10 prompt tokens: every cached one at the cached price, none uncached;
    # 50 × 0.000003 + 7 × 1.999999 = 14.000143 µUSD.
    "cached_more_than_prompt": Case(
        "chat",
        "#prompt_tokens=10 #cached=50 #completion_tokens=7",
        Decimal("0.000014000143"),
        14001,
    ),
    "cached_more_than_prompt_streamed": Case(
        "chat_stream",
        "#prompt_tokens=10 #cached=50 #completion_tokens=7",
        Decimal("0.000014000143"),
        14001,
    ),
    # 3 × 1.999999 = 5.999997 µUSD.
    "zero_prompt": Case(
        "chat", "#prompt_tokens=0 #completion_tokens=3", Decimal("0.000005999997"), 6000
    ),
    # No prompt_tokens_details: nothing cached; 100 × 0.123457 + 1.999999 = 14.345699 µUSD.
    "missing_cached_details": Case(
        "chat",
        "#prompt_tokens=100 #completion_tokens=1 #omit=prompt_tokens_details",
        Decimal("0.000014345699"),
        14346,
    ),
    # No completion_tokens: the estimate, prompt ⌈31 bytes / 4⌉ + 4 + 3 = 15, completion
    # ⌈"ab" / 4⌉ = 1; 15 × 0.123457 + 1.999999 = 3.851854 µUSD.
    "missing_completion_tokens": Case(
        "chat", "#omit=completion_tokens #say=ab", Decimal("0.000003851854"), 3852
    ),
    # Beyond the bounds: 512 + 32 + 57 bytes of prompt, max_tokens 16 of output;
    # 601 × 0.123457 + 16 × 1.999999 = 106.197641 µUSD.
    "huge_counts": Case(
        "chat",
        "#prompt_tokens=99999999999 #completion_tokens=99999999999",
        Decimal("0.000106197641"),
        106198,
    ),
    # Anthropic: prompt = 0 input + 30 cache writes + 40 cache reads, 40 of them cached;
    # 30 × 0.123457 + 40 × 0.000003 + 2 × 1.999999 = 7.703828 µUSD.
    "anthropic_cache_reads_and_writes": Case(
        "messages",
        "#input_tokens=0 #cache_read=40 #cache_create=30 #completion_tokens=2",
        Decimal("0.000007703828"),
        7704,
    ),
}


@dataclass(frozen=True)
class Charged:
    spend_nanos: int  # what settlement added to the key's budget counter
    ledger_cost: Decimal


def _issue_key(upstream) -> tuple[str, ApiKey]:
    doc = seed_document(upstream.base_url)
    doc["models"] += [
        {
            "name": "agree-chat",
            "prices": [PRICE],
            "deployments": [{"backend": "fake", "upstream_model": "agree-chat"}],
        },
        {
            "name": "agree-claude",
            "prices": [PRICE],
            "deployments": [{"backend": "fake-anthropic", "upstream_model": "agree-claude"}],
        },
    ]
    budget = {"amount": "1000", "period": "monthly"}
    key = {"name": "agree", "models": ["agree-chat", "agree-claude"], "budget": budget}
    doc["tenants"] = [{"name": "agreeing", "keys": [key]}]
    secret = config_apply(document=doc).keys_created[0]["secret"]
    return secret, ApiKey.objects.get(tenant__name="agreeing", name="agree")


def _spent_nanos(key: ApiKey) -> int:
    period_id, _ = budget_period_bounds("monthly", datetime.now(UTC))
    spent = sync_client().get(scope_keys(f"k:{key.id}", period_id)[5])
    return int(spent or 0)


def _request(gateway: str, secret: str, case: Case) -> str:
    """The request id of one request of ``case``."""
    if case.route == "messages":
        client = anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)
        raw = client.messages.with_raw_response.create(
            model="agree-claude", max_tokens=16, messages=[{"role": "user", "content": case.text}]
        )
        return raw.headers["x-request-id"]
    messages = [{"role": "user", "content": case.text}]
    client = openai_client(gateway, secret)
    if case.route == "chat_stream":
        with client.chat.completions.with_streaming_response.create(
            model="agree-chat", max_tokens=16, messages=messages, stream=True
        ) as response:
            for _ in response.iter_lines():
                pass
            return response.headers["x-request-id"]
    raw = client.chat.completions.with_raw_response.create(
        model="agree-chat", max_tokens=16, messages=messages
    )
    return raw.headers["x-request-id"]


@pytest.fixture(params=list(CASES), ids=list(CASES))
def charged(request, gateway, seed, upstream, celery_worker) -> tuple[Case, Charged]:
    case = CASES[request.param]
    secret, key = _issue_key(upstream)
    before = _spent_nanos(key)
    record = usage_record(_request(gateway, secret, case))
    # Settlement appends the event in the same script that adds the spend: it is there.
    return case, Charged(_spent_nanos(key) - before, record.cost)


def test_settlement_adds_the_hand_worked_cost_to_the_budget(charged):
    case, got = charged
    assert got.spend_nanos == case.spend_nanos


def test_the_ledger_records_the_hand_worked_exact_cost(charged):
    case, got = charged
    assert got.ledger_cost == case.ledger_cost


def test_the_ledger_cost_rounded_up_to_the_nano_is_what_settlement_charged(charged):
    _case, got = charged
    in_nanos = (got.ledger_cost * 10**9).to_integral_value(rounding=ROUND_CEILING)
    assert in_nanos == got.spend_nanos
