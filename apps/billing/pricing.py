"""The price of tokens: the one cost function, used by admission, settlement and ingest.

``token_cost`` is the only place a token is priced. Its rounding rule: a cost is *exact*.
Prices carry at most 6 decimal places per million tokens and token counts are integers, so

    cost = ((prompt - cached) × input + cached × cached_input + completion × output) / 10^6

always fits in 12 decimal places without rounding. The ledger stores it so (``usage_cost``);
rollups and statement lines are sums of exact costs, so they are exact too. Money is
rounded once, when a statement is closed: its total is rounded to the cent (ROUND_HALF_UP)
into ``amount_due``.

Redis budget counters are integer nano-USD: a request's spend there is its exact cost
rounded **up** to the nano (``nanos``), so ``nanos(ledger cost)`` is exactly what settlement
added to the budget, and a budget is never under-counted. The admission reservation
(``worst_cost_nanos``) prices the request's token bounds with the same function.

Cached tokens are part of the prompt (OpenAI's convention); if an upstream ever reports
more cached than prompt tokens, every reported cached token is billed at the cached price
and no uncached ones.

A request is never billed more than its budget reservation: the gateway reserves the
most tokens it can have (``prompt_tokens_bound``, ``completion_tokens_bound``: its bytes
plus the model's allowances, and its max_tokens capped by the model's maximum output), and
``billable_tokens`` caps the counts an upstream reports at those bounds. The ledger keeps
the reported counts beside the bounds; only the cost is capped.

No Django here but ``PriceBook`` (its import is local), so the gateway imports this cheaply.
"""

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal
from typing import Protocol

COST_PLACES = 12
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
ZERO = Decimal(0)


class Priced(Protocol):
    """A price per million tokens: a ``Rate`` (ingest) or the catalog's ``PriceInfo``."""

    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    output_per_mtok: Decimal


@dataclass(frozen=True, slots=True)
class Rate:
    price_id: int
    effective_from: datetime
    input_per_mtok: Decimal
    cached_input_per_mtok: Decimal
    output_per_mtok: Decimal


def billable_tokens(
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    prompt_bound: int | None,
    completion_bound: int | None,
) -> tuple[int, int, int]:
    """(prompt, completion, cached) as billed: the reported counts capped at the request's
    bounds (None = no bound), cached never more than the billed prompt."""
    prompt, completion, cached = (
        max(prompt_tokens, 0),
        max(completion_tokens, 0),
        max(cached_tokens, 0),
    )
    if prompt_bound is not None:
        prompt = min(prompt, prompt_bound)
        cached = min(cached, prompt_bound)
    if completion_bound is not None:
        completion = min(completion, completion_bound)
    return prompt, completion, cached


def _micro_usd(
    price: Priced, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> Decimal:
    cached = max(cached_tokens, 0)
    return (
        max(prompt_tokens - cached, 0) * price.input_per_mtok
        + cached * price.cached_input_per_mtok
        + max(completion_tokens, 0) * price.output_per_mtok
    )


def token_cost(
    price: Priced, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> Decimal:
    """The exact cost in USD of these token counts (cached inside prompt) at ``price``."""
    # scaleb is exact: a power-of-ten shift
    return _micro_usd(price, prompt_tokens, completion_tokens, cached_tokens).scaleb(-6)


def nanos(cost: Decimal) -> int:
    """A cost in integer nano-USD (the budget counters' unit), rounded up."""
    return _ceil(cost.scaleb(9))


def _ceil(value: Decimal) -> int:
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def usage_cost(
    *, rate: Priced, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> Decimal:
    """The ledger's cost: exact, in currency units with 12 decimal places."""
    cost = token_cost(rate, prompt_tokens, completion_tokens, cached_tokens)
    return cost.quantize(COST_QUANTUM)  # pads to 12 places; never rounds


def cost_nanos(prompt: int, completion: int, cached: int, price: Priced | None) -> int:
    """Settlement's spend in nano-USD (0 without a price): ``nanos`` of the ledger's cost
    for the same counts (give it ``billable_tokens``' counts, as the ledger does)."""
    if price is None:
        return 0
    # = nanos(token_cost(...)), one shift fewer on the hot path
    return _ceil(_micro_usd(price, prompt, completion, cached).scaleb(3))


def worst_cost_nanos(prompt_bound: int, output_bound: int, price: Priced | None) -> int:
    """Admission's budget reservation: the most a request within these token bounds can
    cost. The cost is linear in the cached share of the prompt, so its maximum is all
    prompt tokens cached or none, whichever price is dearer (nothing stops an operator
    pricing cached tokens higher)."""
    if price is None:
        return 0
    cached = prompt_bound if price.cached_input_per_mtok > price.input_per_mtok else 0
    return _ceil(_micro_usd(price, prompt_bound, output_bound, cached).scaleb(3))


class PriceBook:
    """Every price version of a set of models, loaded with one query (one per ingest batch)."""

    def __init__(self, model_names: Iterable[str]) -> None:
        from apps.catalog.models import Price

        self._rates: dict[str, list[Rate]] = {}
        rows = (
            Price.objects.filter(model__name__in=set(model_names))
            .order_by("model__name", "effective_from")
            .values_list(
                "id",
                "model__name",
                "effective_from",
                "input_per_mtok",
                "cached_input_per_mtok",
                "output_per_mtok",
            )
        )
        for price_id, name, since, inp, cached, out in rows:
            self._rates.setdefault(name, []).append(Rate(price_id, since, inp, cached, out))
        self._starts = {
            name: [r.effective_from for r in rates] for name, rates in self._rates.items()
        }

    def rate_at(self, model: str, when: datetime) -> Rate | None:
        """The version in force at `when` (the latest with effective_from <= when)."""
        starts = self._starts.get(model)
        if not starts:
            return None
        index = bisect_right(starts, when) - 1
        return self._rates[model][index] if index >= 0 else None
