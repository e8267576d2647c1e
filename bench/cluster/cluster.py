"""Many hosts on one machine: Tollgate's production topology in Linux network namespaces.

Every host is a network namespace with its own IP on one bridge (``tgc-br``,
10.88.0.0/24; the machine itself is 10.88.0.1 on it, so tests and load generators reach
every host):

    pg        10.88.0.10   PostgreSQL 15 (a fresh cluster under var/cluster/pg)
    gw1..gw3  10.88.0.11-13 uvicorn with the gateway (as `make serve` runs it), port 8000
    redis1..6 10.88.0.21-26 --redis cluster: a Redis Cluster, 3 masters + 3 replicas
              (--redis single: one Redis on redis1)
    broker    10.88.0.30   --redis cluster: Celery's broker (kombu cannot use a cluster)
    upstream  10.88.0.40   bench/mock_upstream.py on :8099 (load) and the test suite's
                           fake upstream (tests/fakes/upstream.py, gates, stats) on :8098
    worker1,2 10.88.0.51-52 Celery workers (no -B)
    beat      10.88.0.53   Celery beat, the only one

    python bench/cluster/cluster.py up [--redis single|cluster] [--gateways 3] [--web-workers 1]
    python bench/cluster/cluster.py down
    python bench/cluster/cluster.py status
    python bench/cluster/cluster.py kill gw3        # SIGKILL every process of one host
    python bench/cluster/cluster.py restart gw3     # start that gateway host again

Root only (namespaces, veths, a bridge). `up` first runs `down`, every wait has a timeout,
and a failed `up` tears down what it started. `down` is idempotent: it kills every process
in a ``tgc-`` namespace (found by namespace, not by name), deletes the namespaces (their
veths go with them) and the bridge, and removes the data directories. What `up` made is
described in var/cluster/cluster.json (read by bench/cluster/conftest.py and load.py);
each process logs to var/cluster/logs/<host>.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.request import urlopen

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
STATE = ROOT / "var" / "cluster"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
PREFIX = "tgc-"
BRIDGE = "tgc-br"
NET = "10.88.0"
HOST_IP = f"{NET}.1"
GATEWAY_PORT = 8000
MOCK_PORT = 8099
FAKE_PORT = 8098
# What every Tollgate process of the cluster is started with (kept in cluster.json).
HOST_ENV = ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "SECRET_KEY", "KEY_HASH_SECRET",
            "DB_POOL_MAX", "PYTHONUNBUFFERED")  # fmt: skip


def ip_of(host: str) -> str:
    fixed = {"pg": 10, "broker": 30, "upstream": 40, "beat": 53}
    if host in fixed:
        return f"{NET}.{fixed[host]}"
    kind, number = host.rstrip("0123456789"), int(host[len(host.rstrip("0123456789")) :])
    base = {"gw": 10, "redis": 20, "worker": 50}[kind]
    return f"{NET}.{base + number}"


def run(*args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True, timeout=timeout)


def log(message: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- network ---------------------------------------------------------------------------


def our_namespaces() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(PREFIX)]


def namespace_pids(ns: str) -> list[int]:
    out = run("ip", "netns", "pids", ns, check=False).stdout
    return [int(p) for p in out.split()]


def add_host(host: str) -> None:
    ns, veth = PREFIX + host, PREFIX + host
    run("ip", "netns", "add", ns)
    run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    run("ip", "link", "set", veth, "master", BRIDGE, "up")
    run("ip", "-n", ns, "addr", "add", f"{ip_of(host)}/24", "dev", "eth0")
    run("ip", "-n", ns, "link", "set", "eth0", "up")
    run("ip", "-n", ns, "link", "set", "lo", "up")
    run("ip", "-n", ns, "route", "add", "default", "via", HOST_IP)


def make_bridge() -> None:
    run("ip", "link", "add", BRIDGE, "type", "bridge")
    run("ip", "addr", "add", f"{HOST_IP}/24", "dev", BRIDGE)
    run("ip", "link", "set", BRIDGE, "up")


# --- processes -------------------------------------------------------------------------


def spawn(host: str, name: str, cmd: list[str], env: dict[str, str] | None = None) -> int:
    """Start ``cmd`` inside ``host``'s namespace, in its own session, logging to logs/."""
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    out = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
    process = subprocess.Popen(
        ["ip", "netns", "exec", PREFIX + host, *cmd],
        cwd=ROOT,
        env=env or os.environ.copy(),
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    out.close()
    return process.pid


def wait_for(what: str, predicate, timeout: float, logname: str | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(0.2)
    tail = ""
    if logname and (path := STATE / "logs" / f"{logname}.log").exists():
        tail = "\n" + "\n".join(path.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


def port_open(ip: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((ip, port)) == 0


def http_ok(url: str) -> bool:
    with urlopen(url, timeout=2) as response:  # noqa: S310 - our own hosts
        return response.status == 200


def kill_namespace(ns: str, sig: int = signal.SIGKILL) -> None:
    for pid in namespace_pids(ns):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# --- down ------------------------------------------------------------------------------


def down() -> None:
    namespaces = our_namespaces()
    for ns in namespaces:
        kill_namespace(ns, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(namespace_pids(ns) for ns in namespaces):
        time.sleep(0.2)
    for ns in namespaces:
        kill_namespace(ns, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(namespace_pids(ns) for ns in namespaces):
        time.sleep(0.1)
    for ns in namespaces:
        run("ip", "netns", "del", ns, check=False)
    # A veth whose namespace is gone is gone too; one left by a half-made host is not.
    links = run("ip", "-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(PREFIX):
            run("ip", "link", "del", name, check=False)
    for data in ("pg", "redis", "spool", "prometheus", "celerybeat-schedule"):
        path = STATE / data
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.exists():
            path.unlink()
    (STATE / "cluster.json").unlink(missing_ok=True)
    left = our_namespaces()
    if left:
        raise RuntimeError(f"namespaces left behind: {left}")
    log("down: no tgc- process, namespace, veth or bridge left")


# --- up --------------------------------------------------------------------------------


def start_postgres() -> str:
    data = STATE / "pg"
    data.mkdir(parents=True)
    shutil.chown(data, "postgres", "postgres")
    run(
        "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
        str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
        timeout=120,
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        f"local all all trust\nhost all all {NET}.0/24 trust\nhost all all 127.0.0.1/32 trust\n"
    )
    with open(data / "postgresql.conf", "a") as conf:
        conf.write(
            f"listen_addresses = '{ip_of('pg')}'\nport = 5432\nunix_socket_directories = ''\n"
            "max_connections = 300\nshared_buffers = 256MB\nfsync = on\n"
        )
    spawn(
        "pg",
        "pg",
        ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
         str(PG_BIN / "postgres"), "-D", str(data)],
    )  # fmt: skip
    wait_for("PostgreSQL", lambda: port_open(ip_of("pg"), 5432), 60, "pg")
    url = f"postgres://postgres@{ip_of('pg')}:5432/tollgate"
    import psycopg

    def create() -> bool:
        with psycopg.connect(url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE tollgate")
        return True

    wait_for("CREATE DATABASE", create, 30, "pg")
    return url


def start_redis(host: str, cluster: bool) -> None:
    data = STATE / "redis" / host
    data.mkdir(parents=True)
    cmd = [
        "redis-server", "--bind", ip_of(host), "--port", "6379", "--dir", str(data),
        "--protected-mode", "no", "--save", "", "--appendonly", "yes",
        "--appendfsync", "everysec",
    ]  # fmt: skip
    if cluster:
        cmd += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "3000"]  # fmt: skip
    spawn(host, host, cmd)


def redis_ping(host: str) -> bool:
    out = run("redis-cli", "-h", ip_of(host), "-p", "6379", "ping", check=False, timeout=5)
    return out.stdout.strip() == "PONG"


def cluster_ready(hosts: list[str]) -> bool:
    for host in hosts:
        info = run("redis-cli", "-h", ip_of(host), "cluster", "info", timeout=5).stdout
        if "cluster_state:ok" not in info or "cluster_known_nodes:6" not in info:
            return False
    nodes = run("redis-cli", "-h", ip_of(hosts[0]), "cluster", "nodes", timeout=5).stdout
    masters = [line for line in nodes.splitlines() if "master" in line.split()[2]]
    slaves = [line for line in nodes.splitlines() if "slave" in line.split()[2]]
    return len(masters) == 3 and len(slaves) == 3


def start_gateway(host: str, env: dict[str, str], web_workers: int) -> int:
    """uvicorn as `make serve` runs it on a real deployment, on the host's own IP."""
    host_env = {**env, "LEDGER_SPOOL_DIR": str(STATE / "spool" / host)}
    if web_workers > 1:
        prom = STATE / "prometheus" / host
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        host_env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    return spawn(
        host,
        host,
        [str(BIN / "uvicorn"), "apps.platform.asgi:application", "--host", ip_of(host),
         "--port", str(GATEWAY_PORT), "--loop", "uvloop", "--http", "httptools",
         "--no-access-log", "--workers", str(web_workers)],
        host_env,
    )  # fmt: skip


def restart_gateway(host: str) -> None:
    """Start a (killed) gateway host again with the environment `up` gave it."""
    state = json.loads((STATE / "cluster.json").read_text())
    kill_namespace(PREFIX + host)
    wait_for(f"{host}'s processes gone", lambda: not namespace_pids(PREFIX + host), 10)
    env = {**os.environ, **state["env"], "DJANGO_SETTINGS_MODULE": "apps.platform.settings"}
    state["pids"][host] = start_gateway(host, env, state["web_workers"])
    url = f"http://{ip_of(host)}:{GATEWAY_PORT}/healthz"
    wait_for(f"gateway {host}", lambda: http_ok(url), 60, host)
    (STATE / "cluster.json").write_text(json.dumps(state, indent=2))


def up(args: argparse.Namespace) -> dict:
    if os.geteuid() != 0:
        raise SystemExit("root only: namespaces, veths and a bridge")
    down()
    STATE.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(STATE / "logs", ignore_errors=True)
    cluster = args.redis == "cluster"
    gateways = [f"gw{i}" for i in range(1, args.gateways + 1)]
    redis_hosts = [f"redis{i}" for i in range(1, 7)] if cluster else ["redis1"]
    hosts = ["pg", *redis_hosts, *(["broker"] if cluster else []), "upstream", *gateways,
             "worker1", "worker2", "beat"]  # fmt: skip
    started = time.monotonic()
    make_bridge()
    for host in hosts:
        add_host(host)
    log(f"{len(hosts)} namespaces on {BRIDGE}")

    database_url = start_postgres()
    for host in redis_hosts:
        start_redis(host, cluster)
    if cluster:
        start_redis("broker", cluster=False)
    for host in redis_hosts + (["broker"] if cluster else []):
        wait_for(f"redis on {host}", lambda h=host: redis_ping(h), 30, host)
    if cluster:
        run(
            "redis-cli", "--cluster", "create",
            *[f"{ip_of(h)}:6379" for h in redis_hosts], "--cluster-replicas", "1", "--cluster-yes",
            timeout=60,
        )  # fmt: skip
        wait_for("Redis Cluster: 3 masters, 3 replicas, state ok",
                 lambda: cluster_ready(redis_hosts), 60)  # fmt: skip
        redis_url = "redis+cluster://" + ",".join(f"{ip_of(h)}:6379" for h in redis_hosts[:3])
        broker_url = f"redis://{ip_of('broker')}:6379/0"
    else:
        redis_url = broker_url = f"redis://{ip_of('redis1')}:6379/0"
    log(f"PostgreSQL and Redis ({args.redis}) up")

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "TEST_"))},
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "CELERY_BROKER_URL": broker_url,
        "SECRET_KEY": secrets.token_urlsafe(32),
        "KEY_HASH_SECRET": secrets.token_urlsafe(32),
        "DB_POOL_MAX": "10",
        "PYTHONUNBUFFERED": "1",
    }
    upstream_env = {k: v for k, v in env.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    spawn("upstream", "mock-upstream",
          [sys.executable, "bench/mock_upstream.py", "--host", ip_of("upstream"),
           "--port", str(MOCK_PORT)], upstream_env)  # fmt: skip
    spawn("upstream", "fake-upstream",
          [sys.executable, "tests/fakes/upstream.py", "--host", ip_of("upstream"),
           "--port", str(FAKE_PORT)], upstream_env)  # fmt: skip
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v0"],
        cwd=ROOT, env=env, check=True, timeout=300,
    )  # fmt: skip
    log("migrated")

    pids: dict[str, int] = {}
    for host in gateways:
        pids[host] = start_gateway(host, env, args.web_workers)
    for host in ("worker1", "worker2"):
        pids[host] = spawn(
            host,
            host,
            [str(BIN / "celery"), "-A", "apps.platform.celery_app", "worker", "--loglevel=INFO",
             "--concurrency", "1", "-n", f"{host}@tollgate"],
            env,
        )  # fmt: skip
    pids["beat"] = spawn(
        "beat",
        "beat",
        [str(BIN / "celery"), "-A", "apps.platform.celery_app", "beat", "--loglevel=INFO",
         "-s", str(STATE / "celerybeat-schedule")],
        env,
    )  # fmt: skip
    for name, port in (("mock-upstream", MOCK_PORT), ("fake-upstream", FAKE_PORT)):
        wait_for(name, lambda p=port: port_open(ip_of("upstream"), p), 30, name)
    for host in gateways:
        url = f"http://{ip_of(host)}:{GATEWAY_PORT}/healthz"
        wait_for(f"gateway {host}", lambda u=url: http_ok(u), 60, host)
    readyz = f"http://{ip_of(gateways[0])}:{GATEWAY_PORT}/readyz"
    wait_for("/readyz (ingest and beat running)", lambda: http_ok(readyz), 90, "beat")
    state = {
        "redis_mode": args.redis,
        "gateways": {h: f"http://{ip_of(h)}:{GATEWAY_PORT}" for h in gateways},
        "mock_upstream": f"http://{ip_of('upstream')}:{MOCK_PORT}",
        "fake_upstream": f"http://{ip_of('upstream')}:{FAKE_PORT}",
        "redis_nodes": [f"{ip_of(h)}:6379" for h in redis_hosts],
        "web_workers": args.web_workers,
        "pids": pids,
        "env": {k: env[k] for k in HOST_ENV},
    }
    (STATE / "cluster.json").write_text(json.dumps(state, indent=2))
    log(f"up in {time.monotonic() - started:.1f}s: {', '.join(state['gateways'].values())}")
    return state


def status() -> None:
    for ns in our_namespaces():
        print(f"{ns:<14} {len(namespace_pids(ns))} process(es)")
    path = STATE / "cluster.json"
    print(path.read_text() if path.exists() else "no cluster.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up_parser = sub.add_parser("up")
    up_parser.add_argument("--redis", choices=["single", "cluster"], default="single")
    up_parser.add_argument("--gateways", type=int, default=3, choices=[1, 2, 3])
    up_parser.add_argument("--web-workers", type=int, default=1, help="uvicorn workers per host")
    sub.add_parser("down")
    sub.add_parser("status")
    kill_parser = sub.add_parser("kill", help="SIGKILL every process of one host")
    kill_parser.add_argument("host")
    restart_parser = sub.add_parser("restart", help="start a gateway host again")
    restart_parser.add_argument("host")
    args = parser.parse_args()
    if args.command == "up":
        try:
            up(args)
        except BaseException:
            log("up failed: tearing down")
            down()
            raise
    elif args.command == "down":
        down()
    elif args.command == "status":
        status()
    elif args.command == "kill":
        kill_namespace(PREFIX + args.host)
    elif args.command == "restart":
        restart_gateway(args.host)


if __name__ == "__main__":
    main()
