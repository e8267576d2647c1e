"""The hot-path client on a Sentinel-managed primary follows a failover; the settings and
clients read the redis+sentinel:// and redis+cluster:// URLs."""

import asyncio
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest
import redis

from apps.core.fastredis import SentinelFastRedis
from apps.core.redis import redis_target
from tests.conftest import Process, free_port, wait_until

REDIS_SERVER = shutil.which("redis-server")
SERVICE = "tollgate-test"


def _redis(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)


def _server(workdir: str, port: int, *extra: str) -> Process:
    return Process(
        f"redis-sentinel-test-{port}",
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir]
        + ["--save", "", "--appendonly", "no", *extra],
        dict(os.environ),
        port,
    )


@pytest.fixture(scope="module")
def sentinel_setup() -> Iterator[tuple[int, int, int]]:
    if not REDIS_SERVER:
        pytest.skip("redis-server is needed for the Sentinel test")
    workdir = tempfile.mkdtemp(prefix="tollgate-sentinel-")
    primary, replica, sentinel = free_port(), free_port(), free_port()
    config = os.path.join(workdir, "sentinel.conf")
    with open(config, "w") as f:
        f.write(
            f"port {sentinel}\nbind 127.0.0.1\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
    processes = []
    try:
        processes.append(_server(workdir, primary))
        processes.append(_server(workdir, replica, "--replicaof", "127.0.0.1", str(primary)))
        wait_until(lambda: _redis(replica).info("replication")["master_link_status"] == "up")
        processes.append(
            Process(
                f"redis-sentinel-{sentinel}",
                [REDIS_SERVER, config, "--sentinel"],
                dict(os.environ),
                sentinel,
            )
        )
        wait_until(lambda: _sentinel_sees_replica(sentinel), timeout=30)
        yield primary, replica, sentinel
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _sentinel_sees_replica(port: int) -> bool:
    try:
        return bool(_redis(port).execute_command("SENTINEL", "REPLICAS", SERVICE))
    except redis.RedisError:
        return False


def _named_primary(sentinel: int) -> int:
    host, port = _redis(sentinel).execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
    return int(port)


def _failover(sentinel: int) -> bool:
    try:
        _redis(sentinel).execute_command("SENTINEL", "FAILOVER", SERVICE)
    except redis.ResponseError as exc:
        if "NOGOODSLAVE" in str(exc):
            return False
        raise
    return True


def test_the_hot_path_client_follows_a_sentinel_failover(sentinel_setup):
    primary, replica, sentinel = sentinel_setup

    async def scenario():
        client = SentinelFastRedis([("127.0.0.1", sentinel)], SERVICE)
        sha = client.register("return redis.call('INCR', KEYS[1])")
        before = await client.evalsha(sha, ["tg:sentinel-test"], [])
        first_primary = await client.primary_address()
        # Refused (NOGOODSLAVE) until the Sentinel has seen the replica answer its INFO.
        await asyncio.to_thread(wait_until, lambda: _failover(sentinel), 40, 0.2)
        # Over once the Sentinel names the replica and the old primary follows it.
        await asyncio.to_thread(
            wait_until,
            lambda: (
                _named_primary(sentinel) == replica
                and _redis(primary).info("replication")["role"] == "slave"
            ),
            40,
        )
        # The old primary, now a replica, answers READONLY (or drops the connection):
        # the client asks the Sentinel again and lands on the new one.
        after = None
        for _attempt in range(50):
            try:
                after = await client.evalsha(sha, ["tg:sentinel-test"], [])
                break
            except redis.ConnectionError:
                await asyncio.sleep(0.1)
        second_primary = await client.primary_address()
        await client.close()
        return before, after, first_primary, second_primary

    before, after, first_primary, second_primary = asyncio.run(scenario())
    assert first_primary == ("127.0.0.1", primary)
    assert second_primary == ("127.0.0.1", replica)
    assert after == before + 1


SENTINEL_URL = "redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26379/mymaster/2"


def test_a_sentinel_url_names_its_service():
    assert redis_target(SENTINEL_URL).service == "mymaster"


def test_a_sentinel_url_names_its_database():
    assert redis_target(SENTINEL_URL).db == 2


def test_a_sentinel_url_carries_the_password():
    assert redis_target(SENTINEL_URL).password == "pw"


def test_a_cluster_url_lists_its_nodes():
    target = redis_target("redis+cluster://10.0.0.1:7000,10.0.0.2:7001")
    assert target.nodes == (("10.0.0.1", 7000), ("10.0.0.2", 7001))


def test_a_cluster_url_without_a_port_is_refused():
    with pytest.raises(ValueError, match="host:port"):
        redis_target("redis+cluster://10.0.0.1")


def test_a_cluster_without_a_broker_is_refused_at_startup(tmp_path):
    import subprocess
    import sys

    env = {
        **{k: v for k, v in os.environ.items() if k != "CELERY_BROKER_URL"},
        "REDIS_URL": "redis+cluster://127.0.0.1:7000",
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "set CELERY_BROKER_URL" in result.stderr


def test_a_gateway_and_a_worker_on_sentinel_meter_a_request(
    sentinel_setup, server_env, seed, upstream
):
    """The hot path and the usage stream on the Sentinel's primary, Celery's broker on a
    single Redis (CELERY_BROKER_URL): a request lands in the ledger once."""
    import uuid

    import httpx

    from apps.ledger.models import UsageRecord
    from tests.conftest import start_celery_worker, start_gateway

    _primary, _replica, sentinel = sentinel_setup
    env = {
        **server_env,
        "REDIS_URL": f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}",
        "CELERY_BROKER_URL": server_env["REDIS_URL"],
        "LEDGER_STREAM": f"tollgate:sentinel-usage:{uuid.uuid4().hex[:8]}",
    }
    gateway = start_gateway(env, name="sentinel-gateway")
    worker = start_celery_worker(env, name="sentinel-worker")
    try:
        response = httpx.post(
            f"http://127.0.0.1:{gateway.port}/v1/chat/completions",
            headers={"Authorization": f"Bearer {seed.secret}"},
            json={"model": "test-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        request_id = response.headers.get("x-request-id")
        landed = wait_until(
            lambda: UsageRecord.objects.filter(request_id=request_id).count() == 1, timeout=60
        )
    finally:
        worker.stop()
        gateway.stop()
    assert response.status_code == 200
    assert landed
