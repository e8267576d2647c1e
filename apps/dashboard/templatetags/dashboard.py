"""Formatting for the dashboard templates."""

from decimal import ROUND_HALF_UP, Decimal

from django import template

register = template.Library()


@register.filter
def usd(value) -> str:
    """$1,234.56 or $0.000042: money to at most 6 decimals, at least 2 (display only; the
    ledger and the CSV exports keep the exact values)."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value).quantize(Decimal("0.000001"), rounding=ROUND_HALF_UP)
    whole, _, fraction = f"{amount:,.6f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"${whole}.{fraction}"


@register.filter
def percent(value) -> str:
    if value is None:
        return "—"
    return f"{float(value) * 100:.1f}%"


@register.filter
def limit(value) -> str:
    return "∞" if value is None else f"{value:,}"


@register.filter
def models_list(value) -> str:
    if not value:
        return "none"
    return ", ".join("all" if name == "*" else name for name in value)


def _rate(value) -> str:
    """A rate or fee as written, without trailing zeros ($0.30, $0.000125)."""
    amount = Decimal(value).normalize()
    text = f"{amount:f}"
    whole, _, fraction = text.partition(".")
    return f"${whole}.{fraction.ljust(2, '0')}"


@register.filter
def rule_parts(rule) -> list[str]:
    """A price rule (catalog Price or rate card override) as short phrases, for a compact
    line: rates per million tokens, fees, tiers, service tiers, BYOK fee. An optional rate
    left empty (it follows its default) is not shown."""
    parts = [f"in {_rate(rule.input_per_mtok)}"]
    for field, label in (
        ("cached_input_per_mtok", "cached"),
        ("cache_write_5m_per_mtok", "5m write"),
        ("cache_write_1h_per_mtok", "1h write"),
    ):
        if getattr(rule, field) is not None:
            parts.append(f"{label} {_rate(getattr(rule, field))}")
    parts.append(f"out {_rate(rule.output_per_mtok)}")
    if rule.reasoning_per_mtok is not None:
        parts.append(f"reasoning {_rate(rule.reasoning_per_mtok)}")
    if rule.request_fee:
        parts.append(f"{_rate(rule.request_fee)}/request")
    for tier in rule.tiers or ():
        rates = ", ".join(
            f"{name.removesuffix('_per_mtok').replace('_', ' ')} {_rate(value)}"
            for name, value in tier.items()
            if name != "above_prompt_tokens"
        )
        parts.append(f"above {tier['above_prompt_tokens']:,} prompt tokens: {rates or 'same'}")
    if rule.service_tiers:
        parts.append(
            "service tiers "
            + ", ".join(
                f"{name} ×{Decimal(m).normalize():f}" for name, m in rule.service_tiers.items()
            )
        )
    if rule.byok_fee_percent is not None or rule.byok_request_fee:
        fee = []
        if rule.byok_fee_percent is not None:
            fee.append(f"{Decimal(rule.byok_fee_percent).normalize():f}%")
        if rule.byok_request_fee:
            fee.append(f"{_rate(rule.byok_request_fee)}/request")
        parts.append("BYOK " + " + ".join(fee))
    return parts


@register.filter
def money(value) -> str:
    """An exact amount, every digit the ledger holds ($12.000000000042): staff figures that
    must add up to the unit."""
    if value is None or value == "":
        return "—"
    amount = Decimal(value)
    sign = "−" if amount < 0 else ""
    whole, _, fraction = f"{abs(amount):,f}".partition(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{sign}${whole}.{fraction}"


@register.filter
def plain(value) -> str:
    """A decimal without trailing zeros (a markup of 12.500000 → 12.5)."""
    if value is None or value == "":
        return "—"
    return f"{Decimal(value).normalize():f}"
