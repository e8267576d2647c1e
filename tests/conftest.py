"""Shared fixtures: real PostgreSQL and Redis, and real processes (gateway server, Celery
worker, fake upstream) started by the tests."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from django.conf import settings

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Callable[[], object], timeout: float = 15.0, interval: float = 0.05):
    """Poll until predicate() is truthy; returns its value. Not a sleep: it waits for a fact."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def openai_client(gateway: str, secret: str):
    """The official openai SDK pointed at a test gateway (no retries: tests see every answer)."""
    import openai

    return openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)


def usage_record(request_id: str):
    """The ledger's record of a request, once the Celery worker has ingested it."""
    from apps.ledger.models import UsageRecord

    return wait_until(lambda: UsageRecord.objects.filter(request_id=request_id).first())


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class Process:
    def __init__(self, name: str, args: list[str], env: dict[str, str], port: int | None = None):
        self.name = name
        self.port = port
        self.log_path = (
            Path(os.environ.get("TMPDIR", "/tmp")) / f"tollgate-test-{name}-{os.getpid()}.log"
        )
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if port is not None:
            try:
                wait_until(lambda: self.proc.poll() is not None or _port_open(port), timeout=30)
            except AssertionError:
                self.stop()
                raise
            if self.proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = settings.REDIS_URL
    if not url:
        pytest.skip("the suite needs REDIS_URL (make test sets it)")
    import redis

    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def server_env(django_db_setup, redis_url) -> dict[str, str]:
    """Environment for processes that must see the test database and Redis."""
    db = settings.DATABASES["default"]
    database_url = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        SECRET_KEY=settings.SECRET_KEY,
        KEY_HASH_SECRET=settings.KEY_HASH_SECRET,
        LEDGER_STREAM=settings.LEDGER_STREAM,
        LEDGER_SPOOL_DIR=settings.LEDGER_SPOOL_DIR,
        LEDGER_RECLAIM_IDLE_MS=str(settings.LEDGER_RECLAIM_IDLE_MS),
        DJANGO_SETTINGS_MODULE="apps.platform.settings",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[str]:
    port = free_port()
    process = Process(
        "upstream", [PYTHON, "tests/fakes/upstream.py", "--port", str(port)], dict(os.environ), port
    )
    yield f"http://127.0.0.1:{port}"
    process.stop()


@pytest.fixture
def upstream(fake_upstream) -> "FakeUpstream":
    httpx.post(fake_upstream + "/_reset")
    return FakeUpstream(fake_upstream)


@dataclass
class FakeUpstream:
    url: str

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats").json()

    def requests(self) -> list[dict]:
        return self.stats()["requests"]

    def open_gate(self, name: str) -> None:
        """Let go every request held by "#gate=<name>" (and any later one)."""
        httpx.post(f"{self.url}/_gates/{name}").raise_for_status()


async def release_when_refused(
    upstream: FakeUpstream, gate: str, tasks: list, *, admitted: int, patience_s: float = 60.0
) -> list:
    """Wait until all but ``admitted`` of ``tasks`` (requests whose admitted ones the
    upstream holds at "#gate=<gate>") are done, then open the gate; their results. However
    slowly the machine runs them, no admitted request finishes (and frees what it
    reserved) while another is still being admitted. More than ``admitted`` let through
    never get that far: after ``patience_s`` the gate opens anyway and the caller's
    assertion shows the count."""
    import asyncio

    deadline = time.monotonic() + patience_s
    while sum(t.done() for t in tasks) < len(tasks) - admitted and time.monotonic() < deadline:
        await asyncio.wait(tasks, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
    upstream.open_gate(gate)
    return await asyncio.gather(*tasks)


async def fire_held(
    upstream: FakeUpstream,
    urls: list[str],
    headers: dict[str, str],
    count: int,
    payload: dict,
    *,
    admitted: int,
) -> list[httpx.Response]:
    """``count`` parallel chat requests spread over ``urls``, released as
    ``release_when_refused`` says; ``payload``'s first message carries "#gate=NAME"."""
    import asyncio
    import re

    gate = re.search(r"#gate=(\S+)", str(payload["messages"][0]["content"])).group(1)
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=180, limits=limits) as client:
        tasks = [
            asyncio.create_task(
                client.post(
                    urls[i % len(urls)] + "/v1/chat/completions", json=payload, headers=headers
                )
            )
            for i in range(count)
        ]
        return await release_when_refused(upstream, gate, tasks, admitted=admitted)


def start_gateway(server_env: dict[str, str], name: str = "gateway", **extra_env) -> Process:
    port = free_port()
    env = {**server_env, **extra_env}
    return Process(
        name,
        [
            str(BIN / "uvicorn"),
            "apps.platform.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        env,
        port,
    )


@pytest.fixture(scope="session")
def gateway_process(server_env) -> Iterator[Process]:
    process = start_gateway(server_env)
    yield process
    process.stop()


@pytest.fixture
def gateway(gateway_process) -> str:
    return f"http://127.0.0.1:{gateway_process.port}"


@pytest.fixture(scope="session")
def celery_worker(server_env) -> Iterator[Process]:
    process = start_celery_worker(server_env)
    yield process
    process.stop()


def start_celery_worker(server_env: dict[str, str], name: str = "worker") -> Process:
    """A worker with beat that runs only the usage ingest: the tests run rollups,
    statements, alerts and the rest themselves, and a session worker's beat committing
    them at random moments would race every test that does."""
    server_env = {"CELERY_BEAT_ONLY": "ledger-ingest", **server_env}
    process = Process(
        name,
        [
            str(BIN / "celery"),
            "-A",
            "apps.platform.celery_app",
            "worker",
            "-B",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "-n",
            f"{name}-{os.getpid()}@%h",
            "-s",
            f"/tmp/tollgate-beat-{name}-{os.getpid()}",
        ],
        server_env,
    )
    wait_until(
        lambda: b"ready" in process.log_path.read_bytes() or process.proc.poll() is not None,
        timeout=60,
    )
    if process.proc.poll() is not None:
        raise RuntimeError(f"celery worker exited:\n{process.log()}")
    return process


@dataclass
class Seed:
    tenant_name: str
    # may call test-model (and its alias), slow-model, failover-model, claude-fake,
    # llama-model and llama-stop (the fake upstream behaving as llama-cpp-python's server)
    secret: str
    restricted_secret: str  # may call other-model only
    model: str = "test-model"


def seed_document(upstream_base_url: str, tenant: str = "acme") -> dict:
    price = {
        "effective_from": "2026-01-01",
        "input_per_mtok": "1.00",
        "cached_input_per_mtok": "0.50",
        "output_per_mtok": "2.00",
    }
    return {
        "backends": [
            {
                "name": "fake",
                "kind": "openai",
                "base_url": upstream_base_url,
                "api_key": "upstream-secret",
                "timeout_s": 10,
                "reports_stop_sequence": True,  # as vLLM: choices[].stop_reason
            },
            {
                "name": "fake-llama-stop",
                "kind": "openai",
                "base_url": upstream_base_url.removesuffix("/v1") + "/llama/v1",
                "timeout_s": 10,
            },
            {
                "name": "fake-slow",
                "kind": "openai",
                "base_url": upstream_base_url,
                "timeout_s": 0.5,
            },
            {
                "name": "dead",
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "connect_timeout_s": 0.5,
            },
            {
                "name": "fake-llama",
                "kind": "openai",
                "base_url": upstream_base_url.removesuffix("/v1") + "/llama/v1",
                "timeout_s": 10,
            },
            {
                "name": "fake-anthropic",
                "kind": "anthropic",
                "base_url": upstream_base_url,
                "api_key": "anthropic-upstream-secret",
                "timeout_s": 10,
            },
        ],
        "models": [
            {
                "name": "test-model",
                "aliases": ["tm"],
                "prices": [price],
                "deployments": [{"backend": "fake", "upstream_model": "fake-upstream-model"}],
            },
            {
                "name": "other-model",
                "prices": [price],
                "deployments": [{"backend": "fake", "upstream_model": "fake-other"}],
            },
            {
                "name": "slow-model",
                "prices": [price],
                "deployments": [{"backend": "fake-slow", "upstream_model": "fake-slow"}],
            },
            {
                "name": "failover-model",
                "prices": [price],
                "deployments": [
                    {"backend": "dead", "upstream_model": "x", "weight": 1000000},
                    {"backend": "fake", "upstream_model": "fake-failover", "weight": 1},
                ],
            },
            {
                "name": "llama-stop",
                "prices": [price],
                "deployments": [{"backend": "fake-llama-stop", "upstream_model": "llama-stop"}],
            },
            {
                "name": "claude-fake",
                "prices": [price],
                "deployments": [{"backend": "fake-anthropic", "upstream_model": "claude-upstream"}],
            },
            {
                "name": "llama-model",
                "prices": [price],
                "deployments": [{"backend": "fake-llama", "upstream_model": "llama-upstream"}],
            },
        ],
        "tenants": [
            {
                "name": tenant,
                "keys": [
                    {
                        "name": "main",
                        "models": [
                            "test-model",
                            "slow-model",
                            "failover-model",
                            "claude-fake",
                            "llama-model",
                            "llama-stop",
                        ],
                    },
                    {"name": "restricted", "models": ["other-model"]},
                ],
            },
        ],
    }


@pytest.fixture
def clean_stream(redis_url, settings):
    """An empty usage stream of this test's own, its consumer group made: settings'
    LEDGER_STREAM names it while the test runs. The session's Celery worker (started by an
    end-to-end test of this process) ingests the shared stream every second, and would
    take this test's events: ingest them before the test does, or lose them to the dead
    letters when their tenant is not committed yet."""
    from apps.core.redis import sync_client
    from apps.ledger.services import usage_stream_ensure_group

    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:own-{os.getpid()}"
    client = sync_client()
    client.delete(settings.LEDGER_STREAM, settings.LEDGER_STREAM + ":dead")
    usage_stream_ensure_group(client)
    return client


@pytest.fixture
def seed(transactional_db, upstream) -> Seed:
    from apps.provisioning.services import config_apply

    result = config_apply(document=seed_document(upstream.base_url))
    secrets = {k["name"]: k["secret"] for k in result.keys_created}
    return Seed(tenant_name="acme", secret=secrets["main"], restricted_secret=secrets["restricted"])


def _flush_with_retries() -> None:
    """Transactional tests end with a TRUNCATE of every table while the test's gateway and
    Celery worker may still be writing (usage ingest, rollups): Postgres can then pick the
    TRUNCATE as a deadlock victim. Retry it rather than leak rows into the next test."""
    from django.core.management.base import CommandError
    from django.core.management.commands import flush
    from django.db import OperationalError

    original = flush.Command.handle

    def handle(self, **options):
        for attempt in range(10):
            try:
                return original(self, **options)
            except CommandError as exc:
                if not isinstance(exc.__cause__, OperationalError) or attempt == 9:
                    raise
                time.sleep(0.05 * (attempt + 1))

    flush.Command.handle = handle


def pytest_configure(config) -> None:
    import logging

    # Quick password hashes here and in every server process the suite starts (they
    # inherit the environment): platform/settings.py.
    os.environ["TOLLGATE_TEST_FAST_PASSWORD_HASH"] = "1"
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

    _flush_with_retries()

    for noisy in ("httpx", "httpx2", "httpcore", "openai", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@pytest.fixture
def extra_kind() -> Iterator[str]:
    """A backend kind registered for the test only (an OpenAI-compatible adapter under
    another name), unregistered after it."""
    from apps.gateway.backends import ADAPTERS, register
    from apps.gateway.backends.openai import OpenAIAdapter

    class ExtraKindAdapter(OpenAIAdapter):
        kind = "test-extra"
        label = "Test: an extra kind"

    adapter = register(ExtraKindAdapter())
    yield adapter.kind
    ADAPTERS.pop(adapter.kind)
