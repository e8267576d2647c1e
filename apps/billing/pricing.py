"""The cost of a usage record, from the price in force at the request's time.

The rounding rule (the only one in Tollgate): a record's cost is *exact*. Prices carry at
most 6 decimal places per million tokens and token counts are integers, so

    cost = ((prompt - cached) × input + cached × cached_input + completion × output) / 10^6

always fits in 12 decimal places without rounding. Rollups and statement lines are sums
of exact costs, so they are exact too. Money is rounded once, when a statement is closed:
its total is rounded to the cent (ROUND_HALF_UP) into ``amount_due``.

Cached tokens are part of the prompt (OpenAI's convention); if an upstream ever reports
more cached than prompt tokens, every reported cached token is billed at the cached price
and no uncached ones.

A request is never billed more than its budget reservation: the gateway reserves the
most tokens it can have (``prompt_tokens_bound``, ``completion_tokens_bound``: its bytes
plus the model's allowances, and its max_tokens capped by the model's maximum output), and
``billable_tokens`` caps the counts an upstream reports at those bounds. The ledger keeps
the reported counts beside the bounds; only the cost is capped.
"""

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from apps.catalog.models import Price

COST_PLACES = 12
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
ZERO = Decimal(0)


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


def usage_cost(
    *, rate: Rate, prompt_tokens: int, completion_tokens: int, cached_tokens: int
) -> Decimal:
    """Exact cost in currency units (12 decimal places, never rounded)."""
    cached = max(cached_tokens, 0)
    uncached = max(prompt_tokens - cached, 0)
    micro = (
        uncached * rate.input_per_mtok
        + cached * rate.cached_input_per_mtok
        + max(completion_tokens, 0) * rate.output_per_mtok
    )
    # scaleb is exact; quantize only pads to 12 places (6 price places + 6).
    return micro.scaleb(-6).quantize(COST_QUANTUM)


class PriceBook:
    """Every price version of a set of models, loaded with one query (one per ingest batch)."""

    def __init__(self, model_names: Iterable[str]) -> None:
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
