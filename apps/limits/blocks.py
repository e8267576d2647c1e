"""Limit blocks stored as JSON: a project's ``end_user_limits`` and the ``model_limits`` of
a key or project, checked and normalised in one place (config as code, the management
API, the dashboard and the admin all call these), and read by the gateway as LimitSpecs.

A block says limits the way config as code says a key's::

    {"rpm": 10, "tpm": 20000, "max_concurrent": 2, "budget": {"amount": "5.00", "period": "monthly"}}

Every entry is optional (absent = unlimited); amounts are decimal strings (never floats),
at most 6 decimal places, like ``LimitFields.budget_amount``. ``model_limits`` maps a
public model name to such a block. An end user's budget is daily or monthly: its counters
expire when the end user is idle, so a lifetime budget could not be kept.
"""

from decimal import Decimal, InvalidOperation
from typing import Any

# BudgetPeriod's values (apps/limits/fields.py), named here so that this module and the
# limiter importing it need no Django models.
PERIODS = ("daily", "monthly", "lifetime")
MONTHLY = "monthly"

# As the integer fields of LimitFields (PositiveIntegerField) hold.
MAX_LIMIT = 2**31 - 1
# As LimitFields.budget_amount (max_digits=14, decimal_places=6) holds.
MAX_BUDGET = Decimal("99999999.999999")
MAX_MODEL_LIMITS = 200
MAX_MODEL_NAME = 128
BUDGET_KEYS = frozenset({"amount", "period"})
BLOCK_KEYS = frozenset({"rpm", "tpm", "max_concurrent", "budget"})
END_USER_KEYS = frozenset({"rpm", "tpm", "budget"})
END_USER_PERIODS = ("daily", "monthly")


class LimitBlockInvalid(ValueError):
    """A refused block; ``field`` is the dotted path of the offending entry
    (``model_limits.gemma-270m.budget.amount``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def _count(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LimitBlockInvalid(field, "must be a whole number")
    if not 0 <= value <= MAX_LIMIT:
        raise LimitBlockInvalid(field, f"must be between 0 and {MAX_LIMIT}")
    return value


def _amount(value: Any, field: str) -> str:
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        try:
            amount = Decimal(value.strip())
        except InvalidOperation:
            raise LimitBlockInvalid(field, "must be a decimal string") from None
    else:
        raise LimitBlockInvalid(field, 'must be a decimal string ("5.00"), never a number')
    if not amount.is_finite() or amount < 0:
        raise LimitBlockInvalid(field, "must be zero or more")
    if amount.as_tuple().exponent < -6:
        raise LimitBlockInvalid(field, "at most 6 decimal places")
    if amount > MAX_BUDGET:
        raise LimitBlockInvalid(field, f"must be at most {MAX_BUDGET}")
    return str(amount)


def _budget(value: Any, field: str, periods: tuple[str, ...]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise LimitBlockInvalid(field, 'must be {"amount": "…", "period": "…"}')
    for name in value:
        if name not in BUDGET_KEYS:
            raise LimitBlockInvalid(f"{field}.{name}", "unknown field")
    if "amount" not in value:
        raise LimitBlockInvalid(f"{field}.amount", "is required")
    period = value.get("period", MONTHLY)
    if period not in periods:
        raise LimitBlockInvalid(f"{field}.period", f"must be one of {', '.join(periods)}")
    return {"amount": _amount(value["amount"], f"{field}.amount"), "period": period}


def limit_block_validate(
    value: Any,
    *,
    field: str,
    allowed: frozenset[str] = BLOCK_KEYS,
    periods: tuple[str, ...] = PERIODS,
) -> dict[str, Any]:
    """The block in its stored form (unset entries left out); LimitBlockInvalid names the
    dotted field."""
    if not isinstance(value, dict):
        raise LimitBlockInvalid(field, "must be an object of limits")
    block: dict[str, Any] = {}
    for name, entry in value.items():
        if name not in allowed:
            raise LimitBlockInvalid(
                f"{field}.{name}", f"unknown limit ({', '.join(sorted(allowed))})"
            )
        if entry is None:
            continue
        if name == "budget":
            block[name] = _budget(entry, f"{field}.budget", periods)
        else:
            block[name] = _count(entry, f"{field}.{name}")
    return block


def end_user_limits_validate(value: Any, *, field: str = "end_user_limits") -> dict[str, Any]:
    """A project's per-end-user limits: rpm, tpm and a daily or monthly budget."""
    if value is None:
        return {}
    return limit_block_validate(value, field=field, allowed=END_USER_KEYS, periods=END_USER_PERIODS)


def model_limits_validate(
    value: Any, *, field: str = "model_limits", known_models: frozenset[str] | None = None
) -> dict[str, dict[str, Any]]:
    """``{model name: block}``; with ``known_models`` a name outside it is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LimitBlockInvalid(field, "must map model names to limits")
    if len(value) > MAX_MODEL_LIMITS:
        raise LimitBlockInvalid(field, f"at most {MAX_MODEL_LIMITS} models")
    limits: dict[str, dict[str, Any]] = {}
    for name, block in value.items():
        if not isinstance(name, str) or not 0 < len(name) <= MAX_MODEL_NAME:
            raise LimitBlockInvalid(field, f"model names are 1 to {MAX_MODEL_NAME} characters")
        if known_models is not None and name not in known_models:
            raise LimitBlockInvalid(f"{field}.{name}", f"unknown model '{name}'")
        checked = limit_block_validate(block, field=f"{field}.{name}")
        if checked:
            limits[name] = checked
    return limits


def budget_of(block: dict[str, Any]) -> tuple[Decimal | None, str]:
    """(amount, period) of a stored block's budget; (None, monthly) without one."""
    budget = block.get("budget")
    if not budget:
        return None, MONTHLY
    return Decimal(budget["amount"]), budget.get("period", MONTHLY)
