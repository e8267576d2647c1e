"""Prometheus metrics of the gateway, recorded once per request at settlement.

With several web processes set PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode) so /metrics aggregates them all.
"""

from prometheus_client import Counter, Histogram

from apps.ledger.events import UsageEvent

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

REQUESTS = Counter(
    "tollgate_requests_total",
    "Metered /v1 requests by model, protocol, HTTP status and outcome.",
    ["model", "protocol", "status", "outcome"],
)
LATENCY = Histogram(
    "tollgate_request_latency_seconds",
    "Time from request to the end of the response.",
    ["model", "status"],
    buckets=LATENCY_BUCKETS,
)
TTFT = Histogram(
    "tollgate_time_to_first_token_seconds",
    "Time from request to the first streamed byte.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter("tollgate_tokens_total", "Tokens metered.", ["model", "kind"])
UPSTREAM_ERRORS = Counter(
    "tollgate_upstream_errors_total",
    "Failed upstream attempts by backend and reason.",
    ["backend", "reason"],
)
LIMIT_REFUSALS = Counter(
    "tollgate_limit_refusals_total", "Requests refused by a limit.", ["reason", "scope"]
)


def observe_request(event: UsageEvent) -> None:
    model = event.model if event.status != 404 else "(unknown)"
    status = str(event.status)
    REQUESTS.labels(model, event.protocol, status, event.outcome).inc()
    LATENCY.labels(model, status).observe(event.latency_ms / 1000)
    if event.ttft_ms is not None:
        TTFT.labels(model).observe(event.ttft_ms / 1000)
    if event.prompt_tokens:
        TOKENS.labels(model, "prompt").inc(event.prompt_tokens)
    if event.completion_tokens:
        TOKENS.labels(model, "completion").inc(event.completion_tokens)
