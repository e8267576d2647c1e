"""CELERY_BEAT_ONLY: a beat that runs only the schedules it names (a node that only
ingests, say); unset, every schedule runs."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PRINT_SCHEDULE = (
    "import django; django.setup(); import json; from django.conf import settings;"
    " print(json.dumps(sorted(settings.CELERY_BEAT_SCHEDULE)))"
)


def schedules(**env: str) -> list[str]:
    environment = {k: v for k, v in os.environ.items() if k != "CELERY_BEAT_ONLY"}
    environment.update(DJANGO_SETTINGS_MODULE="apps.platform.settings", **env)
    out = subprocess.run(
        [sys.executable, "-c", PRINT_SCHEDULE],
        cwd=ROOT,
        env=environment,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def test_beat_only_keeps_just_the_named_schedules():
    assert schedules(CELERY_BEAT_ONLY="ledger-ingest, billing-rollups") == [
        "billing-rollups",
        "ledger-ingest",
    ]


def test_without_beat_only_every_schedule_runs():
    assert "billing-statements" in schedules()


def test_a_misspelt_schedule_stops_the_process_with_its_name():
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "apps.platform.settings"}
    environment["CELERY_BEAT_ONLY"] = "ledger-ingst"
    run = subprocess.run(
        [sys.executable, "-c", PRINT_SCHEDULE], cwd=ROOT, env=environment, capture_output=True
    )
    assert b"CELERY_BEAT_ONLY names no schedule: ledger-ingst" in run.stderr
