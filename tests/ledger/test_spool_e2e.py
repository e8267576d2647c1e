"""A usage event that cannot reach Redis is spooled on the web host and replayed."""

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import free_port, start_gateway, wait_until

pytestmark = pytest.mark.e2e


def start_redis(port: int, workdir: Path) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client))
    return process


def _pings(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.mark.skipif(not shutil.which("redis-server"), reason="needs the redis-server binary")
def test_events_survive_a_redis_outage(server_env, seed, upstream, tmp_path):
    port = free_port()
    own_redis = start_redis(port, tmp_path)
    spool = tmp_path / "spool"
    gateway = start_gateway(
        {**server_env, "REDIS_URL": f"redis://127.0.0.1:{port}/0", "LEDGER_SPOOL_DIR": str(spool)},
        name="spooling",
    )
    url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
    request = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
    headers = {"Authorization": f"Bearer {seed.secret}"}
    try:
        assert httpx.post(url, json=request, headers=headers).status_code == 200
        own_redis.terminate()
        own_redis.wait(10)
        # Redis is gone: the key has no limits, so the request is served and its usage
        # event waits on local disk.
        answer = httpx.post(url, json=request, headers=headers)
        assert answer.status_code == 200
        request_id = answer.headers["x-request-id"]
        assert request_id.encode() in b"".join(p.read_bytes() for p in spool.glob("*.jsonl"))
        own_redis = start_redis(port, tmp_path)
        client = redis.Redis(port=port)

        def replayed() -> bool:
            entries = client.xrange(server_env["LEDGER_STREAM"])
            return any(request_id.encode() in fields[b"e"] for _id, fields in entries)

        wait_until(replayed, timeout=20)
        assert not list(spool.glob("*.jsonl"))
    finally:
        gateway.stop()
        own_redis.terminate()
