"""Limits as clients see them: rate-limit headers and 429s in each protocol's shape."""

import math
import time
from datetime import UTC, datetime

from apps.gateway.errors import (
    BalanceExhausted,
    BudgetExhausted,
    GatewayError,
    LimitsUnavailable,
    RateLimited,
)
from apps.limits.limiter import LimitExceeded, RateState, reset_duration


def _rfc3339_after(ms: int) -> bytes:
    moment = datetime.fromtimestamp(time.time() + ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ").encode()


_HEADER_NAMES = {
    (protocol, kind): tuple(
        (
            f"anthropic-ratelimit-{kind}-{part}"
            if protocol == "anthropic"
            else f"x-ratelimit-{part}-{kind}"
        ).encode()
        for part in ("limit", "remaining", "reset")
    )
    for protocol in ("openai", "anthropic")
    for kind in ("requests", "tokens")
}


def rate_headers(rate: RateState | None, protocol: str) -> list[tuple[bytes, bytes]]:
    """OpenAI: x-ratelimit-{limit,remaining,reset}-{requests,tokens}, reset as a duration;
    Anthropic: anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}, reset as a time."""
    if rate is None:
        return []
    headers = []
    for kind, limit, remaining, reset_ms in (
        ("requests", rate.rpm, rate.rpm_remaining, rate.rpm_reset_ms),
        ("tokens", rate.tpm, rate.tpm_remaining, rate.tpm_reset_ms),
    ):
        if limit is None:
            continue
        limit_name, remaining_name, reset_name = _HEADER_NAMES[protocol, kind]
        if protocol == "anthropic":
            reset = _rfc3339_after(reset_ms)
        else:
            reset = reset_duration(reset_ms).encode()
        headers += [
            (limit_name, str(limit).encode()),
            (remaining_name, str(remaining).encode()),
            (reset_name, reset),
        ]
    return headers


_MESSAGES = {
    "requests": "Rate limit reached for requests per minute ({scope}).",
    "tokens": "Rate limit reached for tokens per minute ({scope}): the request's "
    "prompt plus max_tokens would exceed it.",
    "concurrency": "Too many concurrent requests ({scope}).",
    "budget": "The budget for the current period is used up ({scope}).",
}
# Which limit refused: key | project | tenant | model | end_user.
LIMIT_SCOPE_HEADER = b"x-tollgate-limit-scope"
_SCOPES = {
    "key": "limit of this API key",
    "project": "limit of this project",
    "tenant": "limit of this organization (tenant)",
    "end_user": "limit of each end user of this project",
}


def limit_error(exc: LimitExceeded, protocol: str) -> GatewayError:
    if exc.reason == "balance":
        return BalanceExhausted(protocol)
    if exc.reason == "nobalance":  # lost again right after it was loaded
        return LimitsUnavailable()
    scope = _SCOPES.get(exc.scope) or f"limit of {exc.description}"
    message = _MESSAGES[exc.reason].format(scope=scope)
    headers = [(LIMIT_SCOPE_HEADER, exc.scope.encode()), *rate_headers(exc.rate, protocol)]
    if exc.retry_after_ms >= 0:
        seconds = max(1, math.ceil(exc.retry_after_ms / 1000))
        message += f" Please retry after {seconds}s."
        headers += [
            (b"retry-after", str(seconds).encode()),
            (b"retry-after-ms", str(max(exc.retry_after_ms, 1)).encode()),
        ]
    if exc.reason == "budget":
        # Retrying cannot help until the period resets or the budget is raised.
        headers.append((b"x-should-retry", b"false"))
        return BudgetExhausted(message, headers)
    return RateLimited(message, exc.reason, headers)
