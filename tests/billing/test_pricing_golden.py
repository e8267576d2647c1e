"""Golden prices: each upstream's documented usage object → the ledger's token classes
→ the exact cost and price at given rules, worked by hand (per million tokens, so a
count × a rate is micro-units; the amounts are exact to the pico-unit)."""

from decimal import Decimal
from types import SimpleNamespace

import pytest

from apps.billing.pricing import (
    PriceBook,
    PriceRuleInvalid,
    RateCardVersion,
    Tariff,
    Tokens,
    display,
    markup_factor,
    markup_validate,
    nanos_of_pico,
    pico_to_decimal,
    rule_fields_validate,
    rule_from,
)
from apps.gateway.protocol.usage import Usage, from_anthropic, from_openai, from_responses
from tests.gateway.protocol.test_usage_golden import (
    ANTHROPIC_MESSAGES,
    LLAMA_CPP,
    OPENAI_CHAT,
    OPENAI_RESPONSES,
    VLLM,
)


def rule(rule_id: int = 1, **fields) -> object:
    clean = rule_fields_validate(fields)
    return rule_from(SimpleNamespace(id=rule_id, effective_from=None, **clean))


def tokens(usage: Usage) -> Tokens:
    return Tokens(
        usage.prompt,
        usage.completion,
        usage.cached,
        usage.cache_write_5m,
        usage.cache_write_1h,
        usage.reasoning,
    )


def usd(pico: int) -> Decimal:
    return pico_to_decimal(pico)


def marked_up(cost_rule, percent: str) -> Tariff:
    factor = markup_factor(Decimal(percent))
    return Tariff(cost_rule, cost_rule.scaled(factor), factor, rate_card_id=7)


# Claude-like prices: input 3, cache read 0.30, 5-minute write 3.75, 1-hour write 6, output 15.
CLAUDE = rule(
    input_per_mtok="3",
    cached_input_per_mtok="0.30",
    cache_write_5m_per_mtok="3.75",
    cache_write_1h_per_mtok="6",
    output_per_mtok="15",
)
# o-series-like prices, flex at half and priority at double.
O_SERIES = rule(
    input_per_mtok="1.10",
    cached_input_per_mtok="0.275",
    output_per_mtok="4.40",
    service_tiers={"flex": "0.5", "priority": "2.0"},
)
# Gemini-2.5-Pro-like: above 200k prompt tokens the whole request at 2.50 / 15.
GEMINI = rule(
    input_per_mtok="1.25",
    output_per_mtok="10",
    tiers=[{"above_prompt_tokens": 200_000, "input_per_mtok": "2.50", "output_per_mtok": "15"}],
)


class TestAnthropicMessages:
    usage = tokens(from_anthropic(ANTHROPIC_MESSAGES))

    def test_its_token_classes(self):
        assert self.usage == Tokens(4096, 503, 1800, 148, 100, 0)

    def test_cost_prices_reads_writes_by_ttl_and_output_apart(self):
        # 2048 uncached × 3 + 1800 reads × 0.30 + 148 5m writes × 3.75 + 100 1h writes × 6
        # + 503 output × 15 = 6144 + 540 + 555 + 600 + 7545 = 15384 micro-units
        assert usd(Tariff(CLAUDE).quote(self.usage).cost) == Decimal("0.015384")

    def test_price_without_a_rate_card_is_the_cost(self):
        quote = Tariff(CLAUDE).quote(self.usage)
        assert quote.price == quote.cost

    def test_price_at_a_50_percent_markup(self):
        assert usd(marked_up(CLAUDE, "50").quote(self.usage).price) == Decimal("0.023076")

    def test_cost_is_unchanged_by_the_markup(self):
        assert usd(marked_up(CLAUDE, "50").quote(self.usage).cost) == Decimal("0.015384")


class TestOpenAIChat:
    usage = tokens(from_openai(OPENAI_CHAT))

    def test_its_token_classes(self):
        assert self.usage == Tokens(2006, 300, 1920, 0, 0, 192)

    def test_reasoning_defaults_to_the_output_rate(self):
        # 86 × 1.10 + 1920 × 0.275 + 300 × 4.40 = 94.6 + 528 + 1320 = 1942.6 micro-units
        assert usd(Tariff(O_SERIES).quote(self.usage).cost) == Decimal("0.0019426")

    def test_reasoning_at_its_own_rate(self):
        priced = rule(
            input_per_mtok="1.10",
            cached_input_per_mtok="0.275",
            output_per_mtok="4.40",
            reasoning_per_mtok="8",
        )
        # 94.6 + 528 + 108 × 4.40 + 192 × 8 = 94.6 + 528 + 475.2 + 1536 = 2633.8
        assert usd(Tariff(priced).quote(self.usage).cost) == Decimal("0.0026338")

    def test_the_flex_tier_halves_the_token_charges(self):
        assert usd(Tariff(O_SERIES).quote(self.usage, "flex").cost) == Decimal("0.0009713")

    def test_the_priority_tier_doubles_them(self):
        assert usd(Tariff(O_SERIES).quote(self.usage, "priority").cost) == Decimal("0.0038852")

    def test_a_tier_without_a_multiplier_is_priced_at_the_rule(self):
        assert usd(Tariff(O_SERIES).quote(self.usage, "default").cost) == Decimal("0.0019426")

    def test_flex_with_a_markup_is_marked_up_from_the_exact_cost(self):
        # 971.3 micro-units × 1.5 = 1456.95
        price = marked_up(O_SERIES, "50").quote(self.usage, "flex").price
        assert usd(price) == Decimal("0.00145695")


class TestOpenAIResponses:
    usage = tokens(from_responses(OPENAI_RESPONSES))

    def test_its_token_classes(self):
        assert self.usage == Tokens(75, 1186, 0, 0, 0, 1024)

    def test_cost(self):
        # 75 × 2 + 1186 × 8 = 150 + 9488 = 9638 micro-units
        priced = rule(input_per_mtok="2", output_per_mtok="8")
        assert usd(Tariff(priced).quote(self.usage).cost) == Decimal("0.009638")


class TestVLLM:
    usage = tokens(from_openai(VLLM))
    priced = rule(input_per_mtok="0.10", output_per_mtok="0.40", request_fee="0.0001")

    def test_its_token_classes(self):
        assert self.usage == Tokens(31, 27)

    def test_cost_adds_the_request_fee(self):
        # 31 × 0.10 + 27 × 0.40 = 13.9 micro-units, + 100 micro-units of fee
        assert usd(Tariff(self.priced).quote(self.usage).cost) == Decimal("0.0001139")

    def test_a_20_percent_discount(self):
        price = marked_up(self.priced, "-20").quote(self.usage).price
        assert usd(price) == Decimal("0.00009112")


class TestLlamaCpp:
    usage = tokens(from_openai(LLAMA_CPP))

    def test_its_token_classes(self):
        assert self.usage == Tokens(31, 27)

    def test_a_free_model_costs_nothing(self):
        free = rule(input_per_mtok="0", output_per_mtok="0")
        assert Tariff(free).quote(self.usage).cost == 0


class TestLongContextTier:
    def test_at_the_threshold_the_base_rates_apply(self):
        # 200000 × 1.25 + 1000 × 10 = 260000 micro-units
        assert usd(Tariff(GEMINI).quote(Tokens(200_000, 1000)).cost) == Decimal("0.26")

    def test_above_it_the_whole_request_moves_to_the_tier(self):
        # 250000 × 2.50 + 1000 × 15 = 640000 micro-units
        assert usd(Tariff(GEMINI).quote(Tokens(250_000, 1000)).cost) == Decimal("0.64")

    def test_a_tier_cached_rate_not_stated_follows_the_tier_input_rate(self):
        # 250000 prompt of which 50000 cached, both at 2.50 (the base states no cached rate)
        assert usd(Tariff(GEMINI).quote(Tokens(250_000, 0, 50_000)).cost) == Decimal("0.625")

    def test_the_reservation_covers_the_tier_when_the_bound_is_above_it(self):
        tariff = Tariff(GEMINI)
        assert tariff.worst_nanos(250_000, 1000) >= nanos_of_pico(
            tariff.quote(Tokens(250_000, 1000)).price
        )


class TestRateCard:
    def test_an_override_prices_the_model_itself_without_the_markup(self):
        override = rule(2, input_per_mtok="5", output_per_mtok="20")
        tariff = Tariff(CLAUDE, override, markup_factor(Decimal("50")), 7, override=True)
        # 1000 × 5 + 100 × 20 = 7000 micro-units
        assert usd(tariff.quote(Tokens(1000, 100)).price) == Decimal("0.007")

    def test_an_override_leaves_the_cost_at_the_model_rule(self):
        override = rule(2, input_per_mtok="5", output_per_mtok="20")
        tariff = Tariff(CLAUDE, override, markup_factor(Decimal("50")), 7, override=True)
        # 1000 × 3 + 100 × 15 = 4500 micro-units
        assert usd(tariff.quote(Tokens(1000, 100)).cost) == Decimal("0.0045")

    def test_the_quote_names_the_rules_used(self):
        override = rule(2, input_per_mtok="5", output_per_mtok="20")
        tariff = Tariff(CLAUDE, override, markup_factor(Decimal("0")), 7, override=True)
        assert tariff.quote(Tokens(1, 1))[2:] == (1, 7, 2)

    def test_a_markup_is_rounded_half_up_to_the_pico_unit_once(self):
        one_pico = rule(input_per_mtok="0.000001")  # 1 pico-unit a token
        assert marked_up(one_pico, "50").quote(Tokens(1, 0)).price == 2  # 1.5 → 2

    def test_the_price_book_chooses_the_card_in_force(self):
        from datetime import UTC, datetime

        jan = datetime(2026, 1, 1, tzinfo=UTC)
        feb = datetime(2026, 2, 1, tzinfo=UTC)
        book = PriceBook(
            {"m": [rule_from(SimpleNamespace(id=1, effective_from=jan, input_per_mtok=1))]},
            {5: [RateCardVersion(9, feb, markup_factor(Decimal("100")), {})]},
        )
        before = book.tariff(5, "m", datetime(2026, 1, 31, tzinfo=UTC)).quote(Tokens(1000, 0))
        after = book.tariff(5, "m", feb).quote(Tokens(1000, 0))
        assert (before.price, after.price) == (1000 * 10**6, 2000 * 10**6)


class TestBYOK:
    priced = rule(
        input_per_mtok="3",
        output_per_mtok="15",
        byok_fee_percent="5",
        byok_request_fee="0.001",
    )

    def test_a_byok_request_costs_the_operator_nothing(self):
        assert Tariff(self.priced).quote(Tokens(1000, 100), byok=True).cost == 0

    def test_its_price_is_the_fee(self):
        # 5% of (1000 × 3 + 100 × 15 = 4500 micro-units) = 225, + 1000 micro-units
        quote = Tariff(self.priced).quote(Tokens(1000, 100), byok=True)
        assert usd(quote.price) == Decimal("0.001225")

    def test_the_fee_is_reserved(self):
        tariff = Tariff(self.priced)
        worst = tariff.worst_nanos(1000, 100, byok=True)
        assert worst == nanos_of_pico(tariff.quote(Tokens(1000, 100), byok=True).price)


def test_the_shown_amount_is_exact_without_trailing_zeros():
    assert display(15_384_000_000) == "0.015384"


def test_a_zero_amount_is_shown_as_0():
    assert display(0) == "0"


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"input_per_mtok": None}, "input_per_mtok"),
        ({"input_per_mtok": "abc"}, "input_per_mtok"),
        ({"input_per_mtok": True}, "input_per_mtok"),
        ({"input_per_mtok": 1.5}, "input_per_mtok"),
        ({"input_per_mtok": "-1"}, "input_per_mtok"),
        ({"input_per_mtok": "NaN"}, "input_per_mtok"),
        ({"input_per_mtok": "1e400"}, "input_per_mtok"),
        ({"input_per_mtok": "0.0000001"}, "input_per_mtok"),
        ({"input_per_mtok": "1", "output_per_mtok": ["1"]}, "output_per_mtok"),
        ({"input_per_mtok": "1", "request_fee": "-0.01"}, "request_fee"),
        ({"input_per_mtok": "1", "tiers": {"above_prompt_tokens": 5}}, "tiers"),
        (
            {"input_per_mtok": "1", "tiers": [{"input_per_mtok": "2"}]},
            "tiers[0].above_prompt_tokens",
        ),
        (
            {"input_per_mtok": "1", "tiers": [{"above_prompt_tokens": 5, "input_per_mtok": "x"}]},
            "tiers[0].input_per_mtok",
        ),
        (
            {"input_per_mtok": "1", "tiers": [{"above_prompt_tokens": 5, "colour": "red"}]},
            "tiers[0].colour",
        ),
        (
            {"input_per_mtok": "1", "tiers": [{"above_prompt_tokens": 5}] * 2},
            "tiers",
        ),
        ({"input_per_mtok": "1", "service_tiers": ["flex"]}, "service_tiers"),
        ({"input_per_mtok": "1", "service_tiers": {"flex": "half"}}, "service_tiers.flex"),
        ({"input_per_mtok": "1", "byok_fee_percent": "x"}, "byok_fee_percent"),
        ({"input_per_mtok": "1", "colour": "red"}, "colour"),
    ],
)
def test_an_invalid_rule_names_the_field(fields, named):
    with pytest.raises(PriceRuleInvalid) as caught:
        rule_fields_validate(fields)
    assert caught.value.field == named


def test_a_discount_above_100_percent_is_refused():
    with pytest.raises(PriceRuleInvalid):
        markup_validate("-101")
