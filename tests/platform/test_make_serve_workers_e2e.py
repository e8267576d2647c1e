"""`make serve` on a real deployment (DATABASE_URL and REDIS_URL set) runs one web process
per core, and /metrics adds up what every one of them served."""

import asyncio
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import psycopg
import pytest
import redis
from django.conf import settings

from tests.conftest import ROOT, Process, free_port, wait_until

pytestmark = pytest.mark.e2e

WORKERS = 2
REQUESTS = 40


def _serve_command(port: int, metrics_dir: Path) -> list[str]:
    """`make serve`'s recipe without its `install` prerequisite (which would rebuild the
    virtualenv): migrate, the demo tenant, the web processes."""
    recipe = subprocess.run(
        [
            "make", "--no-print-directory", "-n", "-o", "install", "serve",
            f"PORT={port}", f"WEB_WORKERS={WORKERS}", f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}",
        ],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return ["sh", "-c", "set -e\n" + recipe]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def served(server_env, tmp_path_factory):
    """`make serve` on a database of its own (its demo tenant stays out of the suite's) and
    a Redis database of its own (the suite's worker's, eight below)."""
    db = settings.DATABASES["default"]
    name = f"{db['NAME']}_serve"
    admin = f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, number = server_env["REDIS_URL"].rpartition("/")
    redis_url = f"{base}/{(int(number) - 8) % 16}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}",
        "REDIS_URL": redis_url,
        "SECRET_KEY": server_env["SECRET_KEY"],
        "KEY_HASH_SECRET": server_env["KEY_HASH_SECRET"],
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", "/tmp"),
    }
    port = free_port()
    process = Process("make-serve", _serve_command(port, tmp_path_factory.mktemp("metrics")), env)
    try:
        wait_until(lambda: "Demo key" in process.log() or process.proc.poll() is not None, 120)
        secret = re.search(r"Demo key \(shown once\): (tg-\S+)", process.log()).group(1)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: process.proc.poll() is not None or _answers(url), 60)
        yield url, secret, process
    finally:
        if process.proc.poll() is None:
            os.killpg(process.proc.pid, signal.SIGTERM)
            try:
                process.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.proc.pid, signal.SIGKILL)
        process.stop()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _requests_counted(url: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        float(line.rpartition(" ")[2])
        for line in text.splitlines()
        if line.startswith("tollgate_requests_total{") and 'model="tollgate-demo"' in line
    )


def _uvicorn_workers(sh_pid: int) -> int:
    # The shell runs uvicorn as its child, or becomes it (exec of its last command).
    if _is_uvicorn(sh_pid):
        uvicorn = sh_pid
    else:
        (uvicorn,) = [p for p in _children(sh_pid) if _is_uvicorn(p)]
    return len([p for p in _children(uvicorn) if "spawn_main" in _cmdline(p)])


def _is_uvicorn(pid: int) -> bool:
    return any(arg.endswith("/uvicorn") for arg in _cmdline(pid).split()[:2])


def _cmdline(pid: int) -> str:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_a_real_deployment_serves_one_process_per_core(served):
    _url, _secret, process = served
    assert _uvicorn_workers(process.proc.pid) == WORKERS


def test_metrics_add_up_every_process(served):
    url, secret, _process = served

    async def burst() -> list[int]:
        # A connection per request, so the listening socket hands them to every process.
        async def one() -> int:
            async with httpx.AsyncClient(timeout=30) as client:
                response = await client.post(
                    url + "/v1/chat/completions",
                    headers={"Authorization": f"Bearer {secret}"},
                    json={
                        "model": "tollgate-demo",
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                )
                return response.status_code

        return await asyncio.gather(*(one() for _ in range(REQUESTS)))

    assert asyncio.run(burst()) == [200] * REQUESTS
    # Each scrape is answered by whichever process accepts it: all of them must agree.
    assert {_requests_counted(url) for _ in range(6)} == {float(REQUESTS)}
