"""The money rules the budget guarantee rests on: the worst case a budget reserves is
never below what settlement and the ledger charge for the same request."""

from decimal import Decimal

from apps.billing.pricing import Rate, billable_tokens, cost_nanos, usage_cost, worst_cost_nanos
from apps.gateway.caches import PriceInfo

PRICE = PriceInfo(Decimal("1.00"), Decimal("0.50"), Decimal("2.00"))
CACHED_DEARER = PriceInfo(Decimal("1.00"), Decimal("3.00"), Decimal("2.00"))


def ledger_nanos(price: PriceInfo, prompt: int, completion: int, cached: int) -> Decimal:
    rate = Rate(0, None, price.input_per_mtok, price.cached_input_per_mtok, price.output_per_mtok)
    cost = usage_cost(
        rate=rate, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached
    )
    return cost * 10**9


def test_the_worst_case_prices_the_prompt_at_the_dearer_of_input_and_cached_input():
    assert worst_cost_nanos(100, 10, CACHED_DEARER) == (100 * 3 + 10 * 2) * 1000


def test_a_fully_cached_prompt_never_costs_more_than_the_worst_case():
    billed = billable_tokens(100, 10, 100, 100, 10)
    assert cost_nanos(*billed, CACHED_DEARER) <= worst_cost_nanos(100, 10, CACHED_DEARER)


def test_reported_counts_above_the_bounds_are_billed_at_the_bounds():
    assert billable_tokens(5000, 9000, 0, 600, 16) == (600, 16, 0)


def test_more_cached_than_prompt_tokens_are_billed_within_the_prompt_bound():
    assert billable_tokens(10, 0, 900, 600, 16) == (10, 0, 600)


def test_counts_without_bounds_are_billed_as_reported():
    assert billable_tokens(5000, 9000, 7, None, None) == (5000, 9000, 7)


def test_settlement_charges_what_the_ledger_charges_when_cached_exceeds_prompt():
    assert cost_nanos(10, 0, 50, PRICE) == ledger_nanos(PRICE, 10, 0, 50)
