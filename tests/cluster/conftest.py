"""A real 3-master Redis Cluster on free local ports, started once per test session (as
the suite starts its other servers) and removed at the end; gateways pointed at it."""

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
import redis.cluster

from tests.conftest import Process, free_port, start_gateway, wait_until

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


@dataclass
class Cluster:
    ports: list[int]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port)

    def client(self) -> redis.cluster.RedisCluster:
        return redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode("127.0.0.1", p) for p in self.ports]
        )

    def node_id(self, port: int) -> str:
        return self.node(port).execute_command("CLUSTER", "MYID").decode()

    def owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for start, end, primary, *_replicas in self.node(self.ports[0]).execute_command(
            "CLUSTER", "SLOTS"
        ):
            if start <= slot <= end:
                return int(primary[1])
        raise AssertionError(f"no node serves slot {slot}")

    def migrate_slot(self, slot: int, to_port: int) -> int:
        """Move ``slot`` and its keys to the master at ``to_port`` the way redis-cli
        --cluster reshard does (IMPORTING, MIGRATING, MIGRATE, then NODE everywhere);
        returns how many keys moved."""
        from_port = self.owner(slot)
        source, target = self.node(from_port), self.node(to_port)
        source_id, target_id = self.node_id(from_port), self.node_id(to_port)
        target.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        source.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        moved = 0
        while keys := source.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.execute_command(
                "MIGRATE", "127.0.0.1", to_port, "", 0, 5000, "REPLACE", "KEYS", *keys
            )
            moved += len(keys)
        for port in [to_port, from_port, *(p for p in self.ports if p not in (to_port, from_port))]:
            self.node(port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
        return moved

    def flush(self) -> None:
        """Empty the cluster's own nodes (started for these tests only)."""
        for port in self.ports:
            self.node(port).flushdb()


def _cluster_ok(ports: list[int]) -> bool:
    for port in ports:
        try:
            info = redis.Redis(host="127.0.0.1", port=port).execute_command("CLUSTER", "INFO")
        except redis.RedisError:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        if "cluster_state:ok" not in text:
            return False
    return True


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[Cluster]:
    if not REDIS_SERVER or not REDIS_CLI:
        pytest.skip("redis-server and redis-cli are needed for the cluster tests")
    workdir = tempfile.mkdtemp(prefix="tollgate-cluster-")
    ports = [free_port() for _ in range(3)]
    processes = []
    try:
        for port in ports:
            node_dir = os.path.join(workdir, str(port))
            os.makedirs(node_dir)
            processes.append(
                Process(
                    f"redis-cluster-{port}",
                    [
                        REDIS_SERVER,
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        # Its own free port for the bus (port + 10000 may not exist).
                        "--cluster-port",
                        str(free_port()),
                        "--cluster-config-file",
                        os.path.join(node_dir, "nodes.conf"),
                        "--dir",
                        node_dir,
                        "--save",
                        "",
                        "--appendonly",
                        "no",
                    ],
                    dict(os.environ),
                    port,
                )
            )
        created = subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed:\n{created.stdout}")
        wait_until(lambda: _cluster_ok(ports), timeout=30)
        yield Cluster(ports)
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster_env(server_env, redis_cluster) -> dict[str, str]:
    """The environment of processes on the cluster: Celery's broker stays on the suite's
    single Redis (kombu cannot use a cluster), every tenant's state on the cluster."""
    return {
        **server_env,
        "REDIS_URL": redis_cluster.url,
        "CELERY_BROKER_URL": server_env["REDIS_URL"],
        "LEDGER_SHARDS": "16",
        "LEDGER_STREAM": f"tollgate:cluster-usage:{uuid.uuid4().hex[:8]}",
        # Reservations as estimated, without the drift a fresh process learns.
        "PROMPT_ESTIMATE_SCALE_MAX": "1",
    }


@pytest.fixture(scope="module")
def cluster_gateways(cluster_env) -> Iterator[list[str]]:
    first = start_gateway(cluster_env, name="cluster-gateway1")
    second = start_gateway(cluster_env, name="cluster-gateway2")
    yield [f"http://127.0.0.1:{first.port}", f"http://127.0.0.1:{second.port}"]
    first.stop()
    second.stop()


@pytest.fixture
def on_cluster(redis_cluster, cluster_env, settings):
    """The test process configured as the cluster's processes are (its invalidations
    published on the cluster, the ingest run in the test reading the cluster's shards),
    and an empty cluster."""
    from apps.core.redis import sync_client

    redis_cluster.flush()
    settings.REDIS_URL = redis_cluster.url
    settings.REDIS_CLUSTER = True
    settings.LEDGER_SHARDS = 16
    settings.LEDGER_STREAM = cluster_env["LEDGER_STREAM"]
    sync_client.cache_clear()
    yield redis_cluster
    sync_client.cache_clear()  # settings restored: the suite's single Redis again
