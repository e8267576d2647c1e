"""Failover benchmark: a model with two deployments (two mock upstream processes, equal
weights) behind one gateway process, under a steady open-loop load of streamed chat
requests; mid-run one deployment goes away, later it comes back.

Two variants:
- ``kill``: its server process is killed (connections refused), later started again;
- ``stop``: it is SIGSTOPped (the kernel still accepts connections, nothing answers:
  only the first-byte deadline notices), later SIGCONTinued.

Reports, per variant: the healthy p99 (before the outage); N, the failed attempts at
the lost deployment before its breaker opened (the gateway's own counters); the outage
p99 of the requests that started after the breaker opened (acceptance: within 2x the
healthy p99); the requests that failed for the client; and, once the deployment is back,
the failed attempts during recovery (half-open: one probe, no burst) and how long until
its breaker closed.

Uses Postgres and Redis (BENCH_DATABASE_URL, BENCH_REDIS_URL; defaults: database
tollgate_failover_bench, Redis db 14).

    .venv/bin/python bench/failover_bench.py [--rate 50] [--healthy-s 6] [--outage-s 12]
        [--recovery-s 10] [--variant kill|stop|both]
"""

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import BIN, ROOT, ensure_database, free_port, wait_port  # noqa: E402

FIRST_BYTE_S = 1.0
COOLDOWN_S = 5.0
FAILURES = 3
BODY = (
    b'{"model":"failover-bench","max_tokens":64,"stream":true,'
    b'"messages":[{"role":"user","content":"Say twenty words, please."}]}'
)


def setup(env: dict[str, str], port_a: int, port_b: int) -> str:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True)
    breaker = f'{{"failures": {FAILURES}, "cooldown_s": {COOLDOWN_S}}}'
    code = f"""
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke
from apps.provisioning.services import config_apply
for key in ApiKey.objects.filter(tenant__name="failover-bench", revoked_at__isnull=True):
    api_key_revoke(api_key=key)
backend = {{"kind": "openai", "timeout_s": 10, "connect_timeout_s": 0.5,
           "first_byte_timeout_s": {FIRST_BYTE_S}, "breaker": {breaker}}}
result = config_apply(document={{
    "backends": [{{"name": "bench-a", "base_url": "http://127.0.0.1:{port_a}/v1", **backend}},
                 {{"name": "bench-b", "base_url": "http://127.0.0.1:{port_b}/v1", **backend}}],
    "models": [{{"name": "failover-bench",
                "deployments": [{{"backend": "bench-a", "upstream_model": "a", "weight": 1}},
                                {{"backend": "bench-b", "upstream_model": "b", "weight": 1}}],
                "prices": [{{"effective_from": "2026-01-01", "input_per_mtok": "0.10",
                            "cached_input_per_mtok": "0.05", "output_per_mtok": "0.40"}}]}}],
    "tenants": [{{"name": "failover-bench",
                 "keys": [{{"name": "bench", "models": ["failover-bench"]}}]}}],
}})
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


def start_upstream(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "bench" / "mock_upstream.py"),
            "--port",
            str(port),
            "--pace-ms",
            "1",
        ],
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return process


def metric(text: str, name: str, deployment: str) -> float:
    """Sum of the series of ``name`` for ``deployment`` in a /metrics page."""
    total = 0.0
    pattern = re.compile(rf'^{name}\{{deployment="{re.escape(deployment)}"[^}}]*\}} ([\d.e+-]+)$')
    for line in text.splitlines():
        if match := pattern.match(line):
            total += float(match.group(1))
    return total


def p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def run_variant(
    variant: str, gateway: str, secret: str, upstreams: dict, ports: dict, args
) -> dict:
    import aiohttp

    results: list[tuple[float, float, int]] = []  # (start, latency s, status)
    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    marks: dict[str, float] = {}
    failures_at: dict[str, float] = {}
    label = "bench-a/a"

    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=60),
        connector=aiohttp.TCPConnector(limit=0),
    ) as session:

        async def one() -> None:
            start = time.monotonic()
            status = 0
            try:
                async with session.post(
                    gateway + "/v1/chat/completions", data=BODY, headers=headers
                ) as r:
                    body = await r.read()
                    status = r.status if b"[DONE]" in body or r.status != 200 else 599
            except (aiohttp.ClientError, TimeoutError):
                status = 598
            results.append((start, time.monotonic() - start, status))

        async def metrics_page() -> str:
            async with session.get(gateway + "/metrics") as r:
                return await r.text()

        async def watch() -> None:
            """When the breaker of A opened and closed (the gateway's gauge), and its
            failure count then."""
            while True:
                page = await metrics_page()
                state = metric(page, "tollgate_deployment_breaker_state", label)
                failures = metric(page, "tollgate_deployment_failures_total", label)
                now = time.monotonic()
                if "lost" in marks and "opened" not in marks and state >= 1:
                    marks["opened"] = now
                    failures_at["opened"] = failures
                if "back" in marks and "closed" not in marks and state == 0:
                    marks["closed"] = now
                    failures_at["closed"] = failures
                failures_at["last"] = failures
                await asyncio.sleep(0.05)

        async def load(seconds: float) -> None:
            tasks = []
            interval = 1 / args.rate
            until = time.monotonic() + seconds
            tick = time.monotonic()
            while tick < until:
                tasks.append(asyncio.create_task(one()))
                tick += interval
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
            await asyncio.gather(*tasks)

        await load(args.warmup_s)  # connections pooled, caches warm: not measured
        results.clear()
        watcher = asyncio.create_task(watch())
        failures_at["start"] = metric(
            await metrics_page(), "tollgate_deployment_failures_total", label
        )
        runner = asyncio.create_task(load(args.healthy_s + args.outage_s + args.recovery_s))
        await asyncio.sleep(args.healthy_s)
        marks["lost"] = time.monotonic()
        failures_at["lost"] = failures_at.get("last", failures_at["start"])
        if variant == "kill":
            upstreams["a"].kill()
            upstreams["a"].wait()
        else:
            upstreams["a"].send_signal(signal.SIGSTOP)
        await asyncio.sleep(args.outage_s)
        marks["back"] = time.monotonic()
        failures_at["back"] = failures_at.get("last", 0.0)
        if variant == "kill":
            upstreams["a"] = await asyncio.to_thread(start_upstream, ports["a"])
        else:
            upstreams["a"].send_signal(signal.SIGCONT)
        await runner
        await asyncio.sleep(0.2)
        watcher.cancel()
        failures_at["end"] = metric(
            await metrics_page(), "tollgate_deployment_failures_total", label
        )

    healthy = [lat for start, lat, _ in results if start < marks["lost"]]
    opened = marks.get("opened", float("inf"))
    outage = [lat for start, lat, _ in results if opened <= start < marks["back"]]
    recovery = [lat for start, lat, _ in results if start >= marks["back"]]
    failed = [s for _, _, s in results if s != 200]
    return {
        "variant": variant,
        "requests": len(results),
        "healthy_p99_ms": p99(healthy) * 1000,
        "n_failures_to_open": failures_at.get("opened", float("nan")) - failures_at["lost"],
        "opened_after_s": opened - marks["lost"],
        "outage_p99_ms": p99(outage) * 1000,
        "outage_requests": len(outage),
        "slow_before_open": sum(
            1 for start, lat, _ in results if marks["lost"] - 1 <= start < opened and lat > 0.5
        ),
        "client_failures": len(failed),
        "outage_failed_attempts": failures_at["back"] - failures_at["lost"],
        "recovery_failed_attempts": failures_at["end"] - failures_at["back"],
        "recovery_p99_ms": p99(recovery) * 1000,
        "closed_after_back_s": marks.get("closed", float("nan")) - marks["back"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50, help="requests per second")
    parser.add_argument("--warmup-s", type=float, default=2)
    parser.add_argument("--healthy-s", type=float, default=6)
    parser.add_argument("--outage-s", type=float, default=12)
    parser.add_argument("--recovery-s", type=float, default=10)
    parser.add_argument("--variant", choices=("kill", "stop", "both"), default="both")
    args = parser.parse_args()

    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_failover_bench"
        ),
        "REDIS_URL": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "LEDGER_STREAM": "tollgate:bench:failover-usage",
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
    }
    ensure_database(env["DATABASE_URL"])
    ports = {"a": free_port(), "b": free_port()}
    upstreams = {name: start_upstream(port) for name, port in ports.items()}
    gateway = None
    variants = ("kill", "stop") if args.variant == "both" else (args.variant,)
    try:
        secret = setup(env, ports["a"], ports["b"])
        gateway_port = free_port()
        gateway = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "apps.platform.asgi:application",
                "--port",
                str(gateway_port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
            ],
            cwd=ROOT,
            env=env,
        )
        wait_port(gateway_port)
        url = f"http://127.0.0.1:{gateway_port}"
        print(
            f"{args.rate:g} req/s streamed, two deployments (equal weights); first byte "
            f"{FIRST_BYTE_S:g} s, breaker {FAILURES} failures / {COOLDOWN_S:g} s cool-down; "
            f"{args.healthy_s:g} s healthy, {args.outage_s:g} s outage, "
            f"{args.recovery_s:g} s recovery"
        )
        for variant in variants:
            result = asyncio.run(run_variant(variant, url, secret, upstreams, ports, args))
            ratio = result["outage_p99_ms"] / result["healthy_p99_ms"]
            print(
                f"\n[{variant}] {result['requests']} requests\n"
                f"  healthy p99            {result['healthy_p99_ms']:8.1f} ms\n"
                f"  N (failed attempts until the breaker opened) {result['n_failures_to_open']:.0f}"
                f", opened {result['opened_after_s']:.2f} s after the loss\n"
                f"  outage p99 after open  {result['outage_p99_ms']:8.1f} ms"
                f"  ({ratio:.2f}x healthy; {result['outage_requests']} requests)\n"
                f"  requests > 0.5 s around the loss (before open) {result['slow_before_open']}\n"
                f"  failed attempts at the lost deployment during the outage "
                f"{result['outage_failed_attempts']:.0f} (half-open probes included)\n"
                f"  client-visible failures {result['client_failures']}\n"
                f"  recovery: failed attempts {result['recovery_failed_attempts']:.0f}, "
                f"p99 {result['recovery_p99_ms']:.1f} ms, breaker closed "
                f"{result['closed_after_back_s']:.2f} s after it came back"
            )
    finally:
        for process in (gateway, *upstreams.values()):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        import redis

        redis.Redis.from_url(env["REDIS_URL"]).delete("tollgate:bench:failover-usage")


if __name__ == "__main__":
    main()
