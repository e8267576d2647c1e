"""The money rules the budget guarantee rests on: the worst case a budget reserves is
never below what settlement and the ledger charge for the same request."""

from types import SimpleNamespace

from apps.billing.pricing import Tariff, Tokens, billable_tokens, nanos_of_pico, rule_from


def rule(**fields):
    return rule_from(SimpleNamespace(id=1, effective_from=None, **fields))


PRICE = rule(input_per_mtok="1.00", cached_input_per_mtok="0.50", output_per_mtok="2.00")
CACHED_DEARER = rule(input_per_mtok="1.00", cached_input_per_mtok="3.00", output_per_mtok="2.00")


def test_the_worst_case_prices_the_prompt_at_the_dearer_of_input_and_cached_input():
    assert Tariff(CACHED_DEARER).worst_nanos(100, 10) == (100 * 3 + 10 * 2) * 1000


def test_a_fully_cached_prompt_never_costs_more_than_the_worst_case():
    tariff = Tariff(CACHED_DEARER)
    price = tariff.quote(Tokens(*billable_tokens(100, 10, 100, 100, 10))).price
    assert nanos_of_pico(price) <= tariff.worst_nanos(100, 10)


def test_reported_counts_above_the_bounds_are_billed_at_the_bounds():
    assert billable_tokens(5000, 9000, 0, 600, 16) == (600, 16, 0)


def test_more_cached_than_prompt_tokens_are_billed_within_the_prompt_bound():
    assert billable_tokens(10, 0, 900, 600, 16) == (10, 0, 600)


def test_counts_without_bounds_are_billed_as_reported():
    assert billable_tokens(5000, 9000, 7, None, None) == (5000, 9000, 7)


def test_more_cached_than_prompt_tokens_are_each_billed_at_the_cached_rate():
    # 50 cached tokens at 0.50 per million = 500,000 pico-units each; no uncached ones
    assert Tariff(PRICE).quote(Tokens(10, 0, 50)).price == 50 * 500_000
