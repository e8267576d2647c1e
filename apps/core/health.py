import os
import platform

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

from apps.core.redis import sync_client


def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers."""
    return JsonResponse({"status": "ok", "platform": platform.system()})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and Redis answer, and the metering pipeline moves (usage
    ingested within PIPELINE_MAX_INGEST_LAG_S, beat ticked within
    PIPELINE_MAX_BEAT_SILENCE_S); the pipeline's figures come along either way."""
    from apps.ledger.selectors import ledger_pipeline_health

    checks = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        sync_client().ping()
        checks["redis"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    health = ledger_pipeline_health()
    checks["ingest"] = health["ingest"]
    checks["beat"] = health["beat"]
    ok = all(v == "ok" for v in checks.values())
    last_tick = health["beat_last_tick"]
    pipeline = {
        "lag_seconds": health["lag_seconds"],
        "pending": health["pending"],
        "stream_length": health["length"],
        "beat_last_tick_at": last_tick.isoformat() if last_tick else None,
        "beat_silent_seconds": health["beat_silent_seconds"],
    }
    return JsonResponse(
        {"status": "ok" if ok else "unavailable", **checks, "pipeline": pipeline},
        status=200 if ok else 503,
    )


class _PipelineGauges:
    """The metering pipeline's state, read from Redis at each scrape: reported as read,
    never stored in a process's metric values (which multiprocess mode would aggregate
    again, per process)."""

    def __init__(self, state: dict) -> None:
        self.state = state

    def collect(self):
        for name, help_text, key in (
            ("tollgate_ledger_stream_length", "Usage events waiting in the stream.", "length"),
            ("tollgate_ledger_pending", "Events read but not yet acknowledged.", "pending"),
            (
                "tollgate_ledger_lag_seconds",
                "Age of the oldest event not yet ingested.",
                "lag_seconds",
            ),
        ):
            if self.state[key] is not None:
                yield GaugeMetricFamily(name, help_text, value=self.state[key])


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: the process's (or, in multiprocess mode, all processes')
    gateway metrics plus the metering pipeline's state read from Redis."""
    from apps.ledger.selectors import ledger_pipeline_state

    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    pipeline = CollectorRegistry()
    pipeline.register(_PipelineGauges(ledger_pipeline_state()))
    body += generate_latest(pipeline)
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
