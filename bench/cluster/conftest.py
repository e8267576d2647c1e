"""Fixtures of the many-hosts suite: it runs against the cluster `cluster.py up` started
(described in var/cluster/cluster.json), never against the machine's own PostgreSQL and
Redis. This process is a client and an operator: Django is set up with the cluster's
database and Redis, so the tests issue keys with config_apply and revoke them with the
same services the dashboard uses, and read the ledger.

    python bench/cluster/cluster.py up && .venv/bin/pytest -p no:django bench/cluster
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
STATE_FILE = ROOT / "var" / "cluster" / "cluster.json"
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "cluster")]

import cluster  # noqa: E402


def _state() -> dict:
    if not STATE_FILE.exists():
        pytest.exit("no cluster running: python bench/cluster/cluster.py up", returncode=2)
    return json.loads(STATE_FILE.read_text())


STATE = _state()
os.environ.update(STATE["env"])
os.environ["DJANGO_SETTINGS_MODULE"] = "apps.platform.settings"
os.environ.pop("PYTEST_XDIST_WORKER", None)

import django  # noqa: E402

django.setup()


def wait_until(predicate: Callable[[], object], timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        if result := predicate():
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        time.sleep(interval)


@pytest.fixture(scope="session")
def state() -> dict:
    return STATE


@pytest.fixture
def gateways(state) -> list[str]:
    """Every gateway host, up (a test that killed one restarts it when done)."""
    return list(state["gateways"].values())


class FakeUpstream:
    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def stats(self) -> dict:
        return httpx.get(self.url + "/_stats").json()

    def open_gate(self, name: str) -> None:
        httpx.post(f"{self.url}/_gates/{name}").raise_for_status()


@pytest.fixture
def upstream(state) -> FakeUpstream:
    httpx.post(state["fake_upstream"] + "/_reset").raise_for_status()
    return FakeUpstream(state["fake_upstream"])


PRICE = {"effective_from": "2026-01-01", "input_per_mtok": "1.00", "output_per_mtok": "2.00"}


def issue_key(upstream: FakeUpstream, tenant_limits: dict | None = None, **limits) -> str:
    """A fresh tenant (its own counters) with one key for "cluster-model" on the fake."""
    from apps.provisioning.services import config_apply

    tenant = f"cluster-{uuid.uuid4().hex[:10]}"
    result = config_apply(
        document={
            "backends": [{"name": "cluster-fake", "base_url": upstream.base_url, "timeout_s": 30}],
            "models": [
                {
                    "name": "cluster-model",
                    "deployments": [{"backend": "cluster-fake", "upstream_model": "m"}],
                    "prices": [PRICE],
                }
            ],
            "tenants": [
                {
                    "name": tenant,
                    **(tenant_limits or {}),
                    "keys": [{"name": "k", "models": ["cluster-model"], **limits}],
                }
            ],
        }
    )
    return result.keys_created[0]["secret"]


def body(text: str = "hi", **extra) -> dict:
    return {"model": "cluster-model", "messages": [{"role": "user", "content": text}], **extra}


def statuses(responses) -> dict[int, int]:
    out: dict[int, int] = {}
    for r in responses:
        out[r.status_code] = out.get(r.status_code, 0) + 1
    return out


async def fire(urls: list[str], secret: str, count: int, payload: dict) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        return await asyncio.gather(
            *[
                client.post(urls[i % len(urls)] + "/v1/chat/completions", json=payload,
                            headers=headers)
                for i in range(count)
            ]
        )  # fmt: skip


async def fire_held(
    upstream: FakeUpstream, urls: list[str], secret: str, count: int, payload: dict, *,
    admitted: int, patience_s: float = 60.0,
) -> list[httpx.Response]:  # fmt: skip
    """``count`` parallel requests over ``urls`` whose admitted ones the fake holds at
    "#gate=NAME" until all but ``admitted`` are answered (refused): no admitted request
    finishes and frees what it reserved while another is being admitted, however slow the
    machine. More than ``admitted`` let through never get that far: after ``patience_s``
    the gate opens anyway and the caller's assertion shows the count."""
    gate = re.search(r"#gate=(\S+)", payload["messages"][0]["content"]).group(1)
    headers = {"Authorization": f"Bearer {secret}"}
    async with httpx.AsyncClient(timeout=180, limits=httpx.Limits(max_connections=count)) as c:
        tasks = [
            asyncio.create_task(
                c.post(urls[i % len(urls)] + "/v1/chat/completions", json=payload,
                       headers=headers)
            )
            for i in range(count)
        ]  # fmt: skip
        deadline = time.monotonic() + patience_s
        while sum(t.done() for t in tasks) < count - admitted and time.monotonic() < deadline:
            await asyncio.wait(tasks, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
        upstream.open_gate(gate)
        return await asyncio.gather(*tasks)


def ledger_rows(request_ids: set[str]) -> dict[str, int]:
    """How many ledger rows each of ``request_ids`` has."""
    from django.db.models import Count

    from apps.ledger.models import UsageRecord

    rows = (
        UsageRecord.objects.filter(request_id__in=request_ids)
        .values("request_id")
        .annotate(n=Count("id"))
    )
    return {row["request_id"]: row["n"] for row in rows}


def ingest_drained() -> bool:
    """Every usage event appended so far is in the ledger (nothing pending or unread)."""
    from apps.ledger.selectors import ledger_pipeline_health

    health = ledger_pipeline_health()
    return health["pending"] == 0 and health["lag_seconds"] == 0


@pytest.fixture
def restart_after(state):
    """Hosts the test killed; started again after it."""
    killed: list[str] = []
    yield killed
    for host in killed:
        cluster.restart_gateway(host)


def api_key_of(secret: str):
    from apps.keys.hashing import secret_hash
    from apps.keys.models import ApiKey

    return ApiKey.objects.get(key_hash=secret_hash(secret))
