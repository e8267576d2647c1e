"""GET /v1/key: the calling key's own standing (after OpenRouter's GET /api/v1/key):
its name, allowlist and limits, and what it and its tenant have used of them now. Not
metered; only the authenticated key's data, never another's."""

import logging
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import redis
from asgiref.sync import sync_to_async

from apps.gateway.caches import KeyInfo
from apps.gateway.call import authenticate
from apps.gateway.exchange import Exchange
from apps.gateway.state import GatewayState
from apps.limits.balances import balance_journal_nanos
from apps.limits.limiter import BalanceUse, LimitSpec, ScopeUse, budget_period_bounds

log = logging.getLogger(__name__)

_NANO = Decimal("0.000000001")


def _usd(nanos: int) -> str:
    # Exact: nano-USD are integers, so nine places show every digit there is.
    return format((Decimal(nanos) * _NANO).quantize(_NANO), "f")


def _remaining(limit: int | None, used: int | None) -> int | None:
    if limit is None or used is None:
        return None
    return max(limit - used, 0)


def _scope(spec: LimitSpec | None, use: ScopeUse | None, known: bool, now: datetime) -> dict:
    """One scope's limits and, when Redis answered (``known``), what is left of them."""
    spec = spec or LimitSpec()
    # A scope without limits has nothing counted: its use is zero, not unknown.
    zero = ScopeUse(0, 0, 0, 0, 0)
    use = use if use is not None else (zero if known else None)
    budget = None
    if spec.budget_nanos is not None:
        _period_id, end_ms = budget_period_bounds(spec.budget_period, now)
        spent = None if use is None else use.spent_nanos
        reserved = None if use is None else use.reserved_nanos
        left = (
            None
            if use is None
            else max(spec.budget_nanos - use.spent_nanos - use.reserved_nanos, 0)
        )
        budget = {
            "amount": _usd(spec.budget_nanos),
            "period": spec.budget_period,
            "resets_at": (
                datetime.fromtimestamp(end_ms / 1000, UTC).isoformat().replace("+00:00", "Z")
                if end_ms >= 0
                else None
            ),
            "spent": None if spent is None else _usd(spent),
            "reserved": None if reserved is None else _usd(reserved),
            "remaining": None if left is None else _usd(left),
        }
    return {
        "rpm": spec.rpm,
        "rpm_remaining": _remaining(spec.rpm, use and use.requests),
        "tpm": spec.tpm,
        "tpm_remaining": _remaining(spec.tpm, use and use.tokens),
        "max_concurrent": spec.max_concurrent,
        "concurrent_remaining": _remaining(spec.max_concurrent, use and use.concurrent),
        "budget": budget,
    }


def _rfc3339(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


def _balance(key: KeyInfo, use: BalanceUse | None, known: bool) -> dict | None:
    """A prepaid tenant's balance (null for a postpaid one): settled, reserved by running
    requests, and what is available to the next one; null amounts when Redis could not
    be read or holds no balance yet (its next request loads it from the journal)."""
    if not key.prepaid:
        return None
    loaded = known and use is not None and use.balance_nanos is not None
    return {
        "amount": _usd(use.balance_nanos) if loaded else None,
        "reserved": _usd(use.reserved_nanos) if loaded else None,
        "available": (_usd(max(use.balance_nanos - use.reserved_nanos, 0)) if loaded else None),
    }


def key_standing(key: KeyInfo, standing: dict[str, ScopeUse | BalanceUse | None] | None) -> dict:
    """The response body; ``standing`` None when Redis could not be read."""
    now = datetime.now(UTC)
    known = standing is not None
    standing = standing or {}
    key_scope = _scope(key.limits, standing.get("key"), known, now)
    tenant_scope = _scope(key.tenant_limits, standing.get("tenant"), known, now)
    budget = key_scope["budget"]
    return {
        "data": {
            "id": key.id,
            "name": key.name,
            "label": f"{key.prefix}…",
            "prefix": key.prefix,
            "tenant": key.tenant_name,
            "models": sorted(key.allowed_models),
            "expires_at": _rfc3339(key.expires_at),
            # Asked with a rotated-out secret: when it stops working (null: the current one).
            "secret_valid_until": _rfc3339(key.secret_valid_until),
            "limit": budget["amount"] if budget else None,
            "usage": budget["spent"] if budget else None,
            "limit_remaining": budget["remaining"] if budget else None,
            "limit_reset": budget["period"] if budget else None,
            "is_free_tier": False,
            "limits": {"key": key_scope, "tenant": tenant_scope},
            "billing_mode": "prepaid" if key.prepaid else "postpaid",
            "balance": _balance(key, standing.get("balance"), known),
        }
    }


async def handle_key(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    try:
        standing = await state.limiter.standing(key=key)
        use = standing["balance"]
        if use is not None and use.balance_nanos is None:
            # Not loaded yet: from the journal, as the tenant's next request would.
            journal = await sync_to_async(balance_journal_nanos)(tenant_id=key.tenant_id)
            loaded = await state.limiter.balance_load(tenant_id=key.tenant_id, nanos=journal)
            standing["balance"] = BalanceUse(loaded, use.reserved_nanos)
    except (redis.RedisError, OSError):
        # The limits stay readable without Redis; only what is used of them is unknown.
        log.warning("limits unavailable for GET /v1/key", exc_info=True)
        standing = None
    await exchange.respond(200, orjson.dumps(key_standing(key, standing)))
