"""The README's real-deployment path works as written: `make worker`, with only the
environment the README names, ingests a request into the ledger without a separate beat,
and beat's tick shows on /readyz."""

import contextlib
import os
import signal
import subprocess

import httpx
import pytest
from django.conf import settings

from apps.core.redis import sync_client
from apps.ledger.models import UsageRecord
from tests.conftest import ROOT, Process, openai_client, start_gateway, wait_until

pytestmark = pytest.mark.e2e

# What the README tells a newcomer to set (plus what any shell has).
README_ENV = ("DATABASE_URL", "REDIS_URL", "SECRET_KEY", "KEY_HASH_SECRET")


def make_worker_command() -> list[str]:
    """`make worker`'s recipe, without its `install` prerequisite (which would rebuild the
    virtualenv): the very command line a newcomer runs."""
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "install", "worker"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return ["sh", "-c", "set -e\n" + recipe]


@pytest.fixture
def make_worker(server_env):
    env = {name: server_env[name] for name in README_ENV}
    env.update(PATH=os.environ["PATH"], HOME=os.environ.get("HOME", "/tmp"))
    sync_client().delete(settings.LEDGER_STREAM + ":beat")  # a tick of an earlier worker
    process = Process("make-worker", make_worker_command(), env)
    yield process
    if process.proc.poll() is None:
        os.killpg(process.proc.pid, signal.SIGTERM)  # the worker and its pool children
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.proc.wait(20)
    # The recipe's shell may be gone while the worker it started still shuts down: nothing
    # of the group outlives the test (a stray worker would ingest a later run's stream).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.proc.pid, signal.SIGKILL)
    process.stop()


@pytest.fixture
def lone_gateway(server_env):
    process = start_gateway(server_env, name="gateway-make-worker")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def test_make_worker_alone_ingests_a_request_into_the_ledger(seed, lone_gateway, make_worker):
    raw = openai_client(lone_gateway, seed.secret).chat.completions.with_raw_response.create(
        model=seed.model, messages=[{"role": "user", "content": "hi"}]
    )
    request_id = raw.headers["x-request-id"]
    found = lambda: UsageRecord.objects.filter(request_id=request_id).exists()  # noqa: E731
    try:
        wait_until(found, timeout=60)
    except AssertionError:
        raise AssertionError(f"not ingested; worker log:\n{make_worker.log()}") from None


def test_make_worker_runs_the_beat_that_readyz_reports(seed, lone_gateway, make_worker):
    ready = lambda: httpx.get(lone_gateway + "/readyz").json()  # noqa: E731
    body = wait_until(lambda: (b := ready())["beat"] == "ok" and b, timeout=60)
    assert body["pipeline"]["beat_last_tick_at"] is not None
