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
