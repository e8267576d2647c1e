"""The price of tokens: the one pricing function, used by admission, settlement and ingest.

Two numbers per request (README "Prices, rate cards and cost"):

cost
    what the operator pays the upstream: the model's **price rule** in force (catalog
    ``Price``, versioned by ``effective_from``);
price
    what the tenant pays: the tenant's **rate card** in force (billing ``RateCard``,
    versioned likewise) — the model's own override rule on the card, else the cost
    rule with the card's markup (a negative markup is a discount) — or, without a
    card, the cost.

A rule prices, per million tokens, each token class of ``protocol.usage`` (uncached
input, cached reads, cache writes by TTL, output, reasoning); adds a fixed fee per
request; may move the whole request to a long-context tier (above N prompt tokens,
every token at the tier's rates, as Gemini and OpenAI price); and may multiply the token
charges by the upstream's service tier (``flex: 0.5``); the request fee is not
multiplied. A BYOK request (the caller's own upstream key) costs the operator nothing
and is priced at the rule's BYOK fee instead: a percentage of the token charges and/or
a fixed fee per request.

Exactness. Rates carry at most 6 decimal places per million tokens, so a token charge is
an integer number of pico-units (10^-12): ``tokens × rate × 10^6``. Everything here is
integer arithmetic on pico-units; a fractional multiplier (service tier, markup, BYOK
percentage) makes a rational number, rounded half-up to the pico-unit once, at the end
(the price of a marked-up request is rounded from its exact cost, never from the rounded
one). The ledger stores both amounts with 12 decimal places, so it holds exactly what
this module computed; rollups and statements are sums of those. Budget counters in
Redis are integer nano-units: a request's spend is its price rounded **up** to the nano
(``nanos``), so a budget is never under-counted.

Counts are the ledger's (``Tokens``, OpenAI's convention: cached reads and cache writes
inside the prompt, reasoning inside the completion). They are clamped so that no token is
priced twice: reads first, then 5-minute writes, then 1-hour writes, out of the prompt
(or out of the reads, should an upstream report more of them than prompt tokens: each is
billed, at the cached rate); reasoning out of the completion.

A request is never billed more than its budget reservation: the gateway reserves the
most tokens it can have (``prompt_tokens_bound``, ``completion_tokens_bound``) at the
dearest rates the rule can apply (``Tariff.worst_nanos``), and ``billable_tokens`` caps
the counts an upstream reports at those bounds.

Plain Python: no Django here but ``PriceBook``'s loader (its imports are local).
"""

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, NamedTuple

COST_PLACES = 12
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)
ZERO = Decimal(0)
RATE_PLACES = 6
# Decimal places a multiplier, markup percentage or BYOK percentage may carry.
FACTOR_PLACES = 6
MAX_TIERS = 8
MAX_SERVICE_TIERS = 16
# Letters, digits, "_" and "-" (no control characters: the names are stored as JSON keys).
SERVICE_TIER_NAME = re.compile(r"[A-Za-z0-9_-]{1,32}")


class Tokens(NamedTuple):
    """A request's billed token counts (the ledger's columns)."""

    prompt: int
    completion: int
    cached: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class Rates:
    """Per million tokens, as integer micro-units (= pico-units per token)."""

    input: int
    cached_input: int
    cache_write_5m: int
    cache_write_1h: int
    output: int
    reasoning: int

    def charge(self, t: Tokens) -> int:
        """Pico-units for these counts (exact)."""
        # More cached than prompt tokens (an upstream that counts them apart): every
        # cached token is still billed, at the cached rate.
        cached = max(t.cached, 0)
        rest = max(t.prompt, cached) - cached
        write_5m = min(max(t.cache_write_5m, 0), rest)
        rest -= write_5m
        write_1h = min(max(t.cache_write_1h, 0), rest)
        rest -= write_1h
        completion = max(t.completion, 0)
        reasoning = min(max(t.reasoning, 0), completion)
        return (
            rest * self.input
            + cached * self.cached_input
            + write_5m * self.cache_write_5m
            + write_1h * self.cache_write_1h
            + (completion - reasoning) * self.output
            + reasoning * self.reasoning
        )

    def worst(self, prompt: int, output: int) -> int:
        """The most ``prompt`` + ``output`` tokens can be charged at these rates."""
        dearest_in = max(self.input, self.cached_input, self.cache_write_5m, self.cache_write_1h)
        return prompt * dearest_in + output * max(self.output, self.reasoning)

    def scaled(self, factor: "Factor") -> "Rates":
        return Rates(*(factor.apply(getattr(self, f)) for f in self.__slots__))


class Factor(NamedTuple):
    """An exact rational multiplier ``num / den`` (den a power of ten)."""

    num: int
    den: int

    @classmethod
    def of(cls, value: Decimal) -> "Factor":
        sign, digits, exponent = value.as_tuple()
        num = int("".join(map(str, digits)) or "0") * (-1 if sign else 1)
        if exponent >= 0:
            return cls(num * 10**exponent, 1)
        return cls(num, 10**-exponent)

    def apply(self, pico: int) -> int:
        """``pico × factor`` rounded half-up (a scaled rate, a marked-up fee)."""
        return _round(pico * self.num, self.den)


ONE = Factor(1, 1)


def _round(num: int, den: int) -> int:
    """num/den rounded half-up (half away from zero for the positive amounts here)."""
    if den == 1:
        return num
    return (2 * num + den) // (2 * den)


@dataclass(frozen=True, slots=True)
class PriceRule:
    """A price rule (the model's, or a rate card's override), ready to price with.

    ``tiers``: (above_prompt_tokens, rates) ascending; the highest tier whose threshold
    the prompt exceeds prices the whole request. ``service_tiers``: tier name → factor.
    """

    id: int | None
    effective_from: datetime | None
    rates: Rates
    request_fee: int = 0  # pico-units
    tiers: tuple[tuple[int, Rates], ...] = ()
    service_tiers: Mapping[str, Factor] = field(default_factory=dict)
    byok_percent: Factor | None = None  # of the token charges, in percent
    byok_request_fee: int = 0  # pico-units

    def rates_for(self, prompt: int) -> Rates:
        rates = self.rates
        for above, tier_rates in self.tiers:
            if prompt > above:
                rates = tier_rates
            else:
                break
        return rates

    def exact(self, t: Tokens, service_tier: str | None, byok: bool) -> tuple[int, int]:
        """The exact charge as a fraction (num, den) of pico-units."""
        tokens = self.rates_for(t.prompt).charge(t)
        factor = self.service_tiers.get(service_tier, ONE) if service_tier else ONE
        if byok:
            percent = self.byok_percent or Factor(0, 1)
            den = factor.den * percent.den * 100
            return tokens * factor.num * percent.num + self.byok_request_fee * den, den
        return tokens * factor.num + self.request_fee * factor.den, factor.den

    def worst(self, prompt: int, output: int, byok: bool) -> tuple[int, int]:
        """The most a request within these bounds can be charged, as (num, den)."""
        candidates = [self.rates] + [r for above, r in self.tiers if prompt > above]
        tokens = max(r.worst(prompt, output) for r in candidates)
        factor = max((ONE, *self.service_tiers.values()), key=lambda f: f.num / f.den)
        if byok:
            percent = self.byok_percent or Factor(0, 1)
            den = factor.den * percent.den * 100
            return tokens * factor.num * percent.num + self.byok_request_fee * den, den
        return tokens * factor.num + self.request_fee * factor.den, factor.den

    def scaled(self, factor: Factor) -> "PriceRule":
        """This rule with every rate and fee multiplied (a rate card's markup); the
        multipliers and percentages are unchanged."""
        return replace(
            self,
            rates=self.rates.scaled(factor),
            request_fee=factor.apply(self.request_fee),
            tiers=tuple((above, r.scaled(factor)) for above, r in self.tiers),
            byok_request_fee=factor.apply(self.byok_request_fee),
        )


class Quote(NamedTuple):
    """A request's cost and price in pico-units, and the rules that made them."""

    cost: int
    price: int
    cost_rule_id: int | None
    rate_card_id: int | None
    price_rule_id: int | None  # the rate card's override for the model, if it has one


@dataclass(frozen=True, slots=True)
class Tariff:
    """What one tenant pays for one model at one time, and what it costs the operator."""

    cost_rule: PriceRule | None
    # The tenant's rule: the card's override, the cost rule marked up, or None = the cost.
    price_rule: PriceRule | None = None
    markup: Factor = ONE
    rate_card_id: int | None = None
    override: bool = False

    def quote(self, t: Tokens, service_tier: str | None = None, byok: bool = False) -> Quote:
        cost_exact = (0, 1)
        if self.cost_rule is not None and not byok:
            cost_exact = self.cost_rule.exact(t, service_tier, False)
        cost = _round(*cost_exact)
        if self.override:
            price = _round(*self.price_rule.exact(t, service_tier, byok))
        elif byok:
            rule = self.price_rule or self.cost_rule
            price = _round(*rule.exact(t, service_tier, True)) if rule is not None else 0
        else:
            # Marked up from the exact cost, rounded once.
            price = _round(cost_exact[0] * self.markup.num, cost_exact[1] * self.markup.den)
        return Quote(
            cost,
            price,
            self.cost_rule.id if self.cost_rule is not None else None,
            self.rate_card_id,
            self.price_rule.id if self.override else None,
        )

    def worst_nanos(self, prompt_bound: int, output_bound: int, byok: bool = False) -> int:
        """Admission's budget reservation: the most this request can be priced, in nanos
        (budgets count price)."""
        rule = self.price_rule or self.cost_rule
        if rule is None:
            return 0
        num, den = rule.worst(max(prompt_bound, 0), max(output_bound, 0), byok)
        return -(-num // (den * 1000))

    @property
    def priced(self) -> bool:
        return self.cost_rule is not None or self.override


NO_TARIFF = Tariff(None)


def pico_to_decimal(pico: int) -> Decimal:
    """Pico-units as currency with 12 decimal places (exact)."""
    return Decimal(pico).scaleb(-COST_PLACES).quantize(COST_QUANTUM)


def decimal_to_pico(amount: Decimal) -> int:
    return int(amount.scaleb(COST_PLACES).to_integral_value())


def nanos_of_pico(pico: int) -> int:
    """Pico-units in integer nano-units (the budget counters' unit), rounded up."""
    return -(-pico // 1000)


def nanos(amount: Decimal) -> int:
    """An amount in integer nano-units, rounded up."""
    return int(amount.scaleb(9).to_integral_value(rounding=ROUND_CEILING))


def display(pico: int) -> str:
    """An amount as the decimal string responses show (``usage.cost``): exact, without
    trailing zeros ("0.00042", "0")."""
    text = f"{pico_to_decimal(pico):f}".rstrip("0").rstrip(".")
    return text or "0"


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


def billed_tokens(record: Any) -> Tokens:
    """The ``Tokens`` a usage event or ledger record is billed for (capped at its bounds;
    the classes inside the prompt and completion are clamped by ``Rates.charge``)."""
    prompt, completion, cached = billable_tokens(
        record.prompt_tokens,
        record.completion_tokens,
        record.cached_tokens,
        record.prompt_tokens_bound,
        record.completion_tokens_bound,
    )
    return Tokens(
        prompt,
        completion,
        cached,
        record.cache_write_5m_tokens,
        record.cache_write_1h_tokens,
        record.reasoning_tokens,
    )


# Rules from their stored fields ------------------------------------------------------

RATE_FIELDS = (
    "input_per_mtok",
    "cached_input_per_mtok",
    "cache_write_5m_per_mtok",
    "cache_write_1h_per_mtok",
    "output_per_mtok",
    "reasoning_per_mtok",
)
# Optional rates and what they default to.
RATE_DEFAULTS = {
    "cached_input_per_mtok": "input_per_mtok",
    "cache_write_5m_per_mtok": "input_per_mtok",
    "cache_write_1h_per_mtok": "input_per_mtok",
    "reasoning_per_mtok": "output_per_mtok",
}
FEE_FIELDS = ("request_fee", "byok_request_fee")
RULE_FIELDS = (*RATE_FIELDS, *FEE_FIELDS, "byok_fee_percent", "tiers", "service_tiers")


class PriceRuleInvalid(ValueError):
    """A price rule's field is wrong; ``field`` names it (dotted inside tiers)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _amount(value: Any, name: str, places: int = RATE_PLACES, *, signed: bool = False) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise PriceRuleInvalid(name, "must be a decimal string")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError):
        raise PriceRuleInvalid(name, "must be a decimal string") from None
    if not amount.is_finite():
        raise PriceRuleInvalid(name, "must be a finite number")
    if amount < 0 and not signed:
        raise PriceRuleInvalid(name, "must not be negative")
    # Size first: quantizing "1e400" would overflow the context's precision.
    if abs(amount) >= Decimal(10) ** 8:
        raise PriceRuleInvalid(name, "is too large")
    if amount != amount.quantize(Decimal(1).scaleb(-places), rounding="ROUND_DOWN"):
        raise PriceRuleInvalid(name, f"has more than {places} decimal places")
    return amount


def _rates_of(
    values: Mapping[str, Any], prefix: str, base: Mapping[str, Any] | None = None
) -> dict[str, Decimal]:
    """The six rates of a rule or of one of its tiers. A tier's missing rate is the base
    rule's as the base states it; a rate neither states follows its default *within the
    tier* (a tier's cached input defaults to the tier's input rate)."""
    rates: dict[str, Decimal] = {}
    for name in RATE_FIELDS:
        value = values.get(name)
        if value in (None, "") and base is not None:
            value = base.get(name)
        if value in (None, ""):
            if name in RATE_DEFAULTS:
                rates[name] = rates[RATE_DEFAULTS[name]]
            elif name == "output_per_mtok":
                rates[name] = ZERO
            else:
                raise PriceRuleInvalid(prefix + name, "is required")
        else:
            rates[name] = _amount(value, prefix + name)
    return rates


def rule_fields_validate(values: Mapping[str, Any]) -> dict[str, Any]:
    """A price rule's fields checked and normalised (Decimals, tiers sorted); raises
    ``PriceRuleInvalid`` naming the first bad field. Optional rates left empty stay None
    (they follow their default: see ``RATE_DEFAULTS``)."""
    unknown = sorted(set(values) - set(RULE_FIELDS) - {"effective_from", "model"})
    if unknown:
        raise PriceRuleInvalid(unknown[0], "is not a price rule field")
    rates = _rates_of(values, "")
    clean: dict[str, Any] = {
        name: (
            rates[name] if name not in RATE_DEFAULTS or values.get(name) not in (None, "") else None
        )
        for name in RATE_FIELDS
    }
    for name in FEE_FIELDS:
        raw = values.get(name)
        clean[name] = ZERO if raw in (None, "") else _amount(raw, name)
    raw = values.get("byok_fee_percent")
    clean["byok_fee_percent"] = (
        None if raw in (None, "") else _amount(raw, "byok_fee_percent", FACTOR_PLACES)
    )
    clean["tiers"] = _tiers_validate(values.get("tiers"))
    clean["service_tiers"] = _service_tiers_validate(values.get("service_tiers"))
    return clean


def _tiers_validate(tiers: Any) -> list[dict[str, Any]]:
    if tiers in (None, ""):
        return []
    if not isinstance(tiers, list):
        raise PriceRuleInvalid("tiers", "must be a list")
    if len(tiers) > MAX_TIERS:
        raise PriceRuleInvalid("tiers", f"at most {MAX_TIERS} tiers")
    clean = []
    for i, tier in enumerate(tiers):
        prefix = f"tiers[{i}]."
        if not isinstance(tier, dict):
            raise PriceRuleInvalid(f"tiers[{i}]", "must be an object")
        unknown = sorted(set(tier) - {"above_prompt_tokens", *RATE_FIELDS})
        if unknown:
            raise PriceRuleInvalid(prefix + unknown[0], "is not a tier field")
        above = tier.get("above_prompt_tokens")
        if type(above) is not int or not 0 < above < 2**31:
            raise PriceRuleInvalid(prefix + "above_prompt_tokens", "must be a positive integer")
        entry: dict[str, Any] = {"above_prompt_tokens": above}
        for name in RATE_FIELDS:
            if tier.get(name) not in (None, ""):
                entry[name] = str(_amount(tier[name], prefix + name))
        clean.append(entry)
    clean.sort(key=lambda t: t["above_prompt_tokens"])
    thresholds = [t["above_prompt_tokens"] for t in clean]
    if len(set(thresholds)) != len(thresholds):
        raise PriceRuleInvalid("tiers", "two tiers have the same above_prompt_tokens")
    return clean


def _service_tiers_validate(tiers: Any) -> dict[str, str]:
    if tiers in (None, ""):
        return {}
    if not isinstance(tiers, dict):
        raise PriceRuleInvalid("service_tiers", "must be an object of tier: multiplier")
    if len(tiers) > MAX_SERVICE_TIERS:
        raise PriceRuleInvalid("service_tiers", f"at most {MAX_SERVICE_TIERS} tiers")
    clean = {}
    for name, multiplier in tiers.items():
        if not isinstance(name, str) or not SERVICE_TIER_NAME.fullmatch(name):
            raise PriceRuleInvalid("service_tiers", "tier names are short ASCII words")
        clean[name] = str(_amount(multiplier, f"service_tiers.{name}", FACTOR_PLACES))
    return clean


def markup_validate(value: Any) -> Decimal:
    """A rate card's markup percentage (negative: a discount, at most 100%)."""
    if value in (None, ""):
        return ZERO
    markup = _amount(value, "markup_percent", FACTOR_PLACES, signed=True)
    if markup < -100:
        raise PriceRuleInvalid("markup_percent", "a discount cannot exceed 100%")
    return markup


def _micro(amount: Decimal | str) -> int:
    return int(Decimal(amount).scaleb(RATE_PLACES).to_integral_value())


def _pico(amount: Decimal | str | None) -> int:
    return 0 if amount is None else int(Decimal(amount).scaleb(COST_PLACES).to_integral_value())


def _rates(values: Mapping[str, Any]) -> Rates:
    return Rates(*(_micro(values[name]) for name in RATE_FIELDS))


def rule_from(row: Any) -> PriceRule:
    """A ``PriceRule`` from a stored rule (a catalog ``Price``, a ``RateCardPrice``, or any
    object with the rule fields as attributes; their values already validated)."""
    values = {name: getattr(row, name, None) for name in RULE_FIELDS}
    base = _rates_of(values, "")
    tiers = tuple(
        (tier["above_prompt_tokens"], _rates(_rates_of(tier, "", values)))
        for tier in sorted(values["tiers"] or (), key=lambda t: t["above_prompt_tokens"])
    )
    percent = values["byok_fee_percent"]
    return PriceRule(
        id=getattr(row, "id", None),
        effective_from=getattr(row, "effective_from", None),
        rates=_rates(base),
        request_fee=_pico(values["request_fee"]),
        tiers=tiers,
        service_tiers={
            name: Factor.of(Decimal(m)) for name, m in (values["service_tiers"] or {}).items()
        },
        byok_percent=None if percent is None else Factor.of(Decimal(percent)),
        byok_request_fee=_pico(values["byok_request_fee"]),
    )


def markup_factor(markup_percent: Decimal) -> Factor:
    """1 + markup/100 as an exact factor."""
    return Factor.of(1 + Decimal(markup_percent).scaleb(-2))


# Versions in force -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateCardVersion:
    id: int
    effective_from: datetime
    markup: Factor
    overrides: Mapping[str, PriceRule]  # model name → rule


class Versions:
    """Items with an ``effective_from``, and the one in force at a time."""

    __slots__ = ("_items", "_starts")

    def __init__(self, items: Iterable[Any]) -> None:
        self._items = sorted(items, key=lambda i: i.effective_from)
        self._starts = [i.effective_from for i in self._items]

    def at(self, when: datetime) -> Any:
        index = bisect_right(self._starts, when) - 1
        return self._items[index] if index >= 0 else None


class PriceBook:
    """Every price rule version of some models and every rate card version of some
    tenants, and the ``Tariff`` in force for (tenant, model, time). The gateway keeps one
    for the whole catalog (caches.py); ingest builds one per batch."""

    def __init__(
        self,
        rules: Mapping[str, Iterable[PriceRule]],
        cards: Mapping[int, Iterable[RateCardVersion]],
    ) -> None:
        self._rules = {model: Versions(v) for model, v in rules.items()}
        self._cards = {tenant: Versions(v) for tenant, v in cards.items()}
        self._marked_up: dict[tuple[int, int], PriceRule] = {}

    def tariff(self, tenant_id: int, model: str, when: datetime) -> Tariff:
        versions = self._rules.get(model)
        rule = versions.at(when) if versions is not None else None
        cards = self._cards.get(tenant_id)
        card = cards.at(when) if cards is not None else None
        if card is None:
            return Tariff(rule) if rule is not None else NO_TARIFF
        override = card.overrides.get(model)
        if override is not None:
            return Tariff(rule, override, ONE, card.id, True)
        if rule is None:
            return NO_TARIFF
        if card.markup == ONE:
            return Tariff(rule, None, ONE, card.id)
        key = (card.id, id(rule))
        marked_up = self._marked_up.get(key)
        if marked_up is None:
            marked_up = self._marked_up[key] = rule.scaled(card.markup)
        return Tariff(rule, marked_up, card.markup, card.id)

    @classmethod
    def load(
        cls, *, model_names: Iterable[str] | None = None, tenant_ids: Iterable[int] | None = None
    ) -> "PriceBook":
        """From the database: the given models' rules and tenants' cards (None = all)."""
        from apps.billing.models import RateCard, RateCardPrice
        from apps.catalog.models import Price

        prices = Price.objects.select_related("model")
        cards = RateCard.objects.all()
        overrides = RateCardPrice.objects.select_related("model")
        if model_names is not None:
            names = set(model_names)
            prices = prices.filter(model__name__in=names)
            overrides = overrides.filter(model__name__in=names)
        if tenant_ids is not None:
            ids = set(tenant_ids)
            cards = cards.filter(tenant_id__in=ids)
            overrides = overrides.filter(rate_card__tenant_id__in=ids)
        rules: dict[str, list[PriceRule]] = {}
        for price in prices:
            rules.setdefault(price.model.name, []).append(rule_from(price))
        by_card: dict[int, dict[str, PriceRule]] = {}
        for override in overrides:
            by_card.setdefault(override.rate_card_id, {})[override.model.name] = rule_from(override)
        versions: dict[int, list[RateCardVersion]] = {}
        for card in cards:
            versions.setdefault(card.tenant_id, []).append(
                RateCardVersion(
                    card.id,
                    card.effective_from,
                    markup_factor(card.markup_percent),
                    by_card.get(card.id, {}),
                )
            )
        return cls(rules, versions)
