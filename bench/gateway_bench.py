"""Load benchmark of the /v1 gateway against a local mock upstream.

Prints req/s, p50/p99 latency and the gateway process's CPU-ms per request for a
non-stream request and a 20-chunk stream, with auth, admission (RPM/TPM/concurrency/
budget all set; ``--prepaid``: a prepaid balance instead of the budgets) and the ledger on. Uses Postgres and Redis (DATABASE_URL, REDIS_URL;
defaults: database tollgate_bench, Redis db 14) and wrk when installed (apt install wrk),
else a Python load generator.

    .venv/bin/python bench/gateway_bench.py [--seconds 10] [--connections 32]
        [--strategy weighted|least-busy|latency|affinity] [--deployments N]
"""

import argparse
import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float:
    """CPU of the server process and every process under it (its web workers)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))):
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if fields := _stat(current):
            total += int(fields[11]) + int(fields[12])  # utime + stime
        todo.extend(parents.get(current, ()))
    return total / TICKS


SERVERS = {
    "uvicorn": lambda port, workers: [
        str(BIN / "uvicorn"), "apps.platform.asgi:application", "--port", str(port),
        "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning",
        "--workers", str(workers),
    ],
    "granian": lambda port, workers: [
        str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--port", str(port),
        "--workers", str(workers), "--log-level", "warning", "apps.platform.asgi:application",
    ],
}  # fmt: skip


def ensure_database(url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def setup(
    env: dict[str, str],
    upstream_port: int,
    limits: bool = True,
    rate_card: bool = False,
    prepaid: bool = False,
    strategy: str = "weighted",
    deployments: int = 1,
) -> str:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    # Prepaid: the balance takes the budgets' place (the same rate limits, no budgets).
    budget = "" if prepaid else ', "budget": {"amount": "1000000", "period": "monthly"}'
    limits_literal = (
        '{"rpm": 100000000, "tpm": 2000000000, "max_concurrent": 100000' + budget + "}"
        if limits
        else "{}"
    )
    billing = (
        '"billing_mode": "prepaid", '
        '"grants": [{"ref": "bench", "amount": "1000000", "reason": "benchmark"}],'
        if prepaid
        else '"billing_mode": "postpaid",'
    )
    deployment_list = [
        {"backend": "bench-mock", "upstream_model": f"m{i}" if i else "m"}
        for i in range(deployments)
    ]
    code = f"""
import orjson
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke
from apps.provisioning.services import config_apply
LIMITS = {limits_literal}
for key in ApiKey.objects.filter(tenant__name="bench", revoked_at__isnull=True):
    api_key_revoke(api_key=key)
result = config_apply(document={{
    "backends": [{{"name": "bench-mock", "base_url": "http://127.0.0.1:{upstream_port}/v1"}}],
    "models": [{{"name": "bench-model", "strategy": {strategy!r}, "deployments": {deployment_list!r},
                "prices": [{{"effective_from": "2026-01-01", "input_per_mtok": "0.10",
                            "cached_input_per_mtok": "0.05", "output_per_mtok": "0.40"}}]}}],
    "tenants": [{{"name": "bench", **LIMITS, {billing}
                 "keys": [{{"name": "bench", "models": ["bench-model"], **LIMITS}}]}}],
}})
from datetime import UTC, datetime
from decimal import Decimal
from apps.billing.models import RateCard
from apps.tenants.models import Tenant
RateCard.objects.filter(tenant__name="bench").delete()
if {rate_card!r}:  # the tenant pays 50% over cost
    RateCard.objects.create(tenant=Tenant.objects.get(name="bench"),
                            effective_from=datetime(2026, 1, 1, tzinfo=UTC),
                            markup_percent=Decimal("50"))
print(result.keys_created[0]["secret"])
"""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return out.stdout.strip().splitlines()[-1]


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {secret}"
"""


def parse_wrk(output: str) -> dict[str, float]:
    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    requests = int(re.search(r"(\d+) requests in", output).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {
        "requests": requests,
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "errors": int(errors.group(1)) if errors else 0,
    }


def run_wrk(url: str, secret: str, body: str, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=body, secret=secret))
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    os.unlink(script.name)
    return parse_wrk(out)


def run_python(url: str, secret: str, body: str, seconds: int, connections: int) -> dict:
    import aiohttp

    async def main() -> dict:
        latencies: list[float] = []
        errors = 0
        deadline = time.monotonic() + seconds
        headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                nonlocal errors
                while time.monotonic() < deadline:
                    start = time.perf_counter()
                    async with session.post(url, data=body, headers=headers) as r:
                        await r.read()
                        errors += r.status != 200
                    latencies.append((time.perf_counter() - start) * 1000)

            started = time.monotonic()
            await asyncio.gather(*[worker() for _ in range(connections)])
            elapsed = time.monotonic() - started
        latencies.sort()
        return {
            "requests": len(latencies),
            "rps": len(latencies) / elapsed,
            "p50_ms": latencies[len(latencies) // 2],
            "p99_ms": latencies[int(len(latencies) * 0.99)],
            "errors": errors,
        }

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--python-client", action="store_true", help="do not use wrk")
    parser.add_argument("--no-limits", action="store_true", help="key and tenant unlimited")
    parser.add_argument(
        "--rate-card", action="store_true", help="the bench tenant has a 50%% markup rate card"
    )
    parser.add_argument(
        "--prepaid",
        action="store_true",
        help="the bench tenant is prepaid: its balance instead of the budgets",
    )
    parser.add_argument(
        "--strategy",
        default="weighted",
        choices=["weighted", "least-busy", "latency", "affinity"],
        help="the bench model's balancing strategy",
    )
    parser.add_argument(
        "--deployments", type=int, default=1, help="deployments of the bench model (one mock)"
    )
    parser.add_argument("--profile", help="py-spy collapsed stacks of the gateway to this file")
    parser.add_argument(
        "--server", choices=sorted(SERVERS), default="uvicorn", help="granian: pip install granian"
    )
    parser.add_argument("--workers", type=int, default=1, help="web processes")
    args = parser.parse_args()

    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_gateway_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "LEDGER_STREAM": "tollgate:bench:usage",
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
    }
    ensure_database(env["DATABASE_URL"])
    upstream_port, gateway_port = free_port(), free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(upstream_port)],
        stderr=subprocess.DEVNULL,
    )
    gateway = None
    try:
        wait_port(upstream_port)
        secret = setup(
            env,
            upstream_port,
            limits=not args.no_limits,
            rate_card=args.rate_card,
            prepaid=args.prepaid,
            strategy=args.strategy,
            deployments=args.deployments,
        )
        server_cmd = os.environ.get("BENCH_SERVER_CMD")  # e.g. a profiling wrapper
        gateway = subprocess.Popen(
            [*server_cmd.split(), str(gateway_port)]
            if server_cmd
            else SERVERS[args.server](gateway_port, args.workers),
            cwd=ROOT,
            env=env,
        )
        wait_port(gateway_port)
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        use_wrk = shutil.which("wrk") and not args.python_client
        load = run_wrk if use_wrk else run_python
        messages = '[{"role":"user","content":"Say twenty words, please."}]'
        scenarios = {
            "non-stream": f'{{"model":"bench-model","max_tokens":64,"messages":{messages}}}',
            "stream-20": f'{{"model":"bench-model","max_tokens":64,"stream":true,"messages":{messages}}}',
        }
        load(url, secret, scenarios["non-stream"], 2, args.connections)  # warm up
        print(
            f"load generator: {'wrk' if use_wrk else 'python'}; {args.connections} connections; "
            f"{args.seconds}s per scenario; {args.server}, {args.workers} web process(es); "
            f"{args.strategy} over {args.deployments} deployment(s)"
        )
        print(
            f"{'scenario':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU ms/req':>12}{'non-2xx':>9}"
        )
        for name, body in scenarios.items():
            spy = None
            if args.profile:
                spy = subprocess.Popen(
                    [
                        str(BIN / "py-spy"),
                        "record",
                        "-f",
                        "raw",
                        "-r",
                        "500",
                        "-o",
                        f"{args.profile}.{name}",
                        "-p",
                        str(gateway.pid),
                        "-d",
                        str(args.seconds),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            before = cpu_seconds(gateway.pid)
            result = load(url, secret, body, args.seconds, args.connections)
            used = cpu_seconds(gateway.pid) - before
            if spy is not None:
                spy.wait()
            cpu_ms = used * 1000 / max(result["requests"], 1)
            print(
                f"{name:<12}{result['rps']:>10.0f}{result['p50_ms']:>10.2f}{result['p99_ms']:>10.2f}"
                f"{cpu_ms:>12.3f}{result['errors']:>9}"
            )
    finally:
        for process in (gateway, upstream):
            if process is not None:
                process.send_signal(signal.SIGINT)
                process.wait(30)
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).delete("tollgate:bench:usage")


if __name__ == "__main__":
    main()
