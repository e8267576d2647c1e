"""A stalled metering pipeline is visible: /readyz reports the ingest lag and when beat
last ran, and answers 503 past PIPELINE_MAX_INGEST_LAG_S / PIPELINE_MAX_BEAT_SILENCE_S; the
staff pipeline page shows the same. Each test has its own usage stream (and so its own
beat stamp), so a worker running elsewhere in the session cannot touch it."""

import re
import time
import uuid

import pytest
from django.contrib.auth.models import User
from django.urls import reverse

from apps.core.beat import beat_tick_record
from apps.core.redis import sync_client


@pytest.fixture
def pipeline(settings, db, redis_url):
    settings.LEDGER_STREAM = f"tollgate:test-health:{uuid.uuid4().hex}"
    settings.PIPELINE_MAX_INGEST_LAG_S = 120
    settings.PIPELINE_MAX_BEAT_SILENCE_S = 60
    yield settings
    sync_client().delete(settings.LEDGER_STREAM, settings.LEDGER_STREAM + ":beat")


def old_event(settings, age_s: float) -> None:
    entry_ms = int((time.time() - age_s) * 1000)
    sync_client().xadd(settings.LEDGER_STREAM, {"e": b"{}"}, id=f"{entry_ms}-0")


def test_readyz_is_unavailable_when_beat_never_ran(pipeline, client):
    assert client.get("/readyz").status_code == 503


def test_readyz_says_beat_never_ran(pipeline, client):
    assert client.get("/readyz").json()["beat"].startswith("never ran")


def test_readyz_is_ready_when_beat_ticked_and_nothing_waits(pipeline, client):
    beat_tick_record()
    assert client.get("/readyz").status_code == 200


def test_readyz_reports_when_beat_last_ran(pipeline, client):
    beat_tick_record(now=time.time() - 30)
    assert client.get("/readyz").json()["pipeline"]["beat_silent_seconds"] >= 30


def test_readyz_reports_the_time_of_the_last_beat_tick(pipeline, client):
    beat_tick_record(now=1_767_225_600.0)
    last = client.get("/readyz").json()["pipeline"]["beat_last_tick_at"]
    assert last == "2026-01-01T00:00:00+00:00"


def test_readyz_is_unavailable_when_beat_is_silent_too_long(pipeline, client):
    beat_tick_record(now=time.time() - 90)
    assert client.get("/readyz").status_code == 503


def test_readyz_says_how_long_beat_has_been_silent(pipeline, client):
    beat_tick_record(now=time.time() - 90)
    assert client.get("/readyz").json()["beat"].startswith("silent for 9")


def test_readyz_reports_the_ingest_lag(pipeline, client):
    beat_tick_record()
    old_event(pipeline, 30)
    assert client.get("/readyz").json()["pipeline"]["lag_seconds"] >= 30


def test_readyz_is_ready_while_the_lag_is_under_the_limit(pipeline, client):
    beat_tick_record()
    old_event(pipeline, 30)
    assert client.get("/readyz").status_code == 200


def test_readyz_is_unavailable_when_ingest_lags_past_the_limit(pipeline, client):
    beat_tick_record()
    old_event(pipeline, 300)
    assert client.get("/readyz").status_code == 503


def test_readyz_says_ingest_is_stalled(pipeline, client):
    beat_tick_record()
    old_event(pipeline, 300)
    assert client.get("/readyz").json()["ingest"].startswith("stalled")


def test_a_limit_of_zero_reports_without_failing(pipeline, client):
    pipeline.PIPELINE_MAX_BEAT_SILENCE_S = 0
    pipeline.PIPELINE_MAX_INGEST_LAG_S = 0
    old_event(pipeline, 300)
    assert client.get("/readyz").status_code == 200


def staff_page(client) -> str:
    staff = User.objects.create_user("ops", "ops@example.com", "pw", is_staff=True)
    client.force_login(staff)
    return client.get(reverse("dashboard:staff-pipeline")).content.decode()


def test_the_staff_pipeline_page_shows_beat_never_ran(pipeline, client):
    assert "never ran" in staff_page(client)


def test_the_staff_pipeline_page_shows_how_long_ago_beat_ran(pipeline, client):
    started = time.time()
    beat_tick_record(now=started - 42)
    page = staff_page(client)
    shown = int(re.search(r"\b(\d+) s ago", page).group(1))
    # 42 s plus however long the page took to render (a loaded machine is slow), no more.
    assert 42 <= shown <= 43 + (time.time() - started)


def test_the_staff_pipeline_page_shows_a_stalled_ingest(pipeline, client):
    beat_tick_record()
    old_event(pipeline, 300)
    assert "stalled: the oldest event not ingested is 30" in staff_page(client)
