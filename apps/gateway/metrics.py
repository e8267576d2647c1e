"""Prometheus metrics of the gateway, recorded once per request at settlement.

With several web processes set PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode) so /metrics aggregates them all.
"""

from typing import NamedTuple

from prometheus_client import Counter, Gauge, Histogram

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
FALLBACKS = Counter(
    "tollgate_fallbacks_total",
    "Requests served by a fallback model, by the model asked for, the one that served and "
    "why (unavailable: every deployment failed; context_window: the prompt was too long).",
    ["requested", "served", "reason"],
)
LIMIT_REFUSALS = Counter(
    "tollgate_limit_refusals_total", "Requests refused by a limit.", ["reason", "scope"]
)
# Per deployment (its label, backend/upstream model): the breaker (apps/gateway/upstream/health.py).
BREAKER_STATE = Gauge(
    "tollgate_deployment_breaker_state",
    "The deployment's circuit breaker as this process sees it: 0 closed, 1 open, 2 half-open.",
    ["deployment"],
    multiprocess_mode="livemax",
)
DEPLOYMENT_FAILURES = Counter(
    "tollgate_deployment_failures_total",
    "Failures counted against the deployment's breaker, by reason.",
    ["deployment", "reason"],
)
BREAKER_TRANSITIONS = Counter(
    "tollgate_deployment_breaker_transitions_total",
    "Breaker transitions this process made, by the state entered.",
    ["deployment", "to"],
)
DEPLOYMENT_TTFT = Histogram(
    "tollgate_deployment_time_to_first_byte_seconds",
    "Time from sending the request to the deployment's first byte (a stream's first chunk, "
    "a non-stream's headers).",
    ["deployment"],
    buckets=LATENCY_BUCKETS,
)


class _Partial:
    """A labelled metric with its first label (the deployment) given."""

    __slots__ = ("_metric", "_first", "_children")

    def __init__(self, metric, first: str) -> None:
        self._metric = metric
        self._first = first
        self._children: dict[str, object] = {}

    def labels(self, second: str):
        child = self._children.get(second)
        if child is None:
            child = self._children[second] = self._metric.labels(self._first, second)
        return child


class BreakerSeries(NamedTuple):
    state: Gauge
    failures: _Partial  # .labels(reason)
    transitions: _Partial  # .labels(to)
    ttft: Histogram


_breaker_children: dict[str, BreakerSeries] = {}


def breaker_series(deployment: str) -> BreakerSeries:
    """The series of one deployment (its label), looked up once."""
    series = _breaker_children.get(deployment)
    if series is None:
        if len(_breaker_children) > 10_000:
            _breaker_children.clear()
        series = _breaker_children[deployment] = BreakerSeries(
            BREAKER_STATE.labels(deployment),
            _Partial(DEPLOYMENT_FAILURES, deployment),
            _Partial(BREAKER_TRANSITIONS, deployment),
            DEPLOYMENT_TTFT.labels(deployment),
        )
    return series


AFFINITY = Counter(
    "tollgate_affinity_total",
    "Requests of affinity-balanced models: hit (served by the deployment their session key "
    "ranks first), miss (by another: the first was unavailable or failed).",
    ["model", "result"],
)
# Set once a second by the balance board (upstream/balancing.py), as this process sees
# every process's counts: all processes agree, so the most recent value is the answer.
DEPLOYMENT_IN_FLIGHT = Gauge(
    "tollgate_deployment_in_flight",
    "Requests in flight per deployment, across gateway processes (least-busy models).",
    ["deployment"],
    multiprocess_mode="mostrecent",
)
DEPLOYMENT_TTFT_EWMA = Gauge(
    "tollgate_deployment_ttft_ewma_seconds",
    "Moving average of time to first token per deployment (latency models).",
    ["deployment"],
    multiprocess_mode="mostrecent",
)
# Finer around 1 (an estimate near right), coarser out to 4 (prose that tokenizes
# densely, code and JSON, chat templates around short prompts); past it: +Inf.
RATIO_BUCKETS = (0.25, 0.33, 0.5, 0.67, 0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0)
PROMPT_ESTIMATE_RATIO = Histogram(
    "tollgate_prompt_estimate_ratio",
    "Prompt tokens the upstream reported over the gateway's estimate, per request.",
    ["model"],
    buckets=RATIO_BUCKETS,
)


_children: dict[tuple, tuple] = {}


def _series(model: str, protocol: str, status: str, outcome: str) -> tuple:
    """The labelled children of one request's series, looked up once (labels() is slow)."""
    key = (model, protocol, status, outcome)
    series = _children.get(key)
    if series is None:
        if len(_children) > 10_000:  # bound memory against label explosions
            _children.clear()
        series = _children[key] = (
            REQUESTS.labels(model, protocol, status, outcome),
            LATENCY.labels(model, status),
            TTFT.labels(model),
            TOKENS.labels(model, "prompt"),
            TOKENS.labels(model, "completion"),
        )
    return series


def prompt_estimate_ratio(model: str) -> Histogram:
    """The ratio histogram's child of ``model``, a catalog model's name (the caller keeps
    it: labels() is slow)."""
    return PROMPT_ESTIMATE_RATIO.labels(model)


def observe_request(event: UsageEvent, *, model_known: bool) -> None:
    # A model name the catalog did not resolve is client input: never a label value.
    model = event.model if model_known else "(unresolved)"
    requests, latency, ttft, prompt, completion = _series(
        model, event.protocol, str(event.status), event.outcome
    )
    requests.inc()
    latency.observe(event.latency_ms / 1000)
    if event.ttft_ms is not None:
        ttft.observe(event.ttft_ms / 1000)
    if event.prompt_tokens:
        prompt.inc(event.prompt_tokens)
    if event.completion_tokens:
        completion.inc(event.completion_tokens)
