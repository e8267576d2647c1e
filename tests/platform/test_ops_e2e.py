"""Operations endpoints: health, readiness and Prometheus metrics."""

import httpx
import pytest

pytestmark = pytest.mark.e2e


def test_healthz_and_readyz(gateway):
    assert httpx.get(gateway + "/healthz").json()["status"] == "ok"
    ready = httpx.get(gateway + "/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "database": "ok", "redis": "ok"}


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
