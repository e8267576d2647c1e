"""Operations endpoints: health, readiness and Prometheus metrics."""

import httpx
import pytest

from tests.conftest import wait_until

pytestmark = pytest.mark.e2e


def test_healthz_and_readyz(gateway, celery_worker):
    assert httpx.get(gateway + "/healthz").json()["status"] == "ok"
    ready = wait_until(lambda: (r := httpx.get(gateway + "/readyz")).status_code == 200 and r)
    checks = {k: v for k, v in ready.json().items() if k != "pipeline"}
    assert checks == {"status": "ok", "database": "ok", "redis": "ok", "ingest": "ok", "beat": "ok"}


def test_metrics_count_requests_latency_and_the_pipeline(gateway, seed, upstream):
    r = httpx.post(
        gateway + "/v1/chat/completions",
        headers={"x-api-key": seed.secret},
        json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
    text = httpx.get(gateway + "/metrics").text
    assert (
        'tollgate_requests_total{model="test-model",outcome="ok",protocol="openai",status="200"}'
        in text
    )
    assert "tollgate_request_latency_seconds_bucket" in text
    assert "tollgate_ledger_stream_length" in text
    assert "tollgate_ledger_lag_seconds" in text
