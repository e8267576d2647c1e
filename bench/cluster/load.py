"""Requests per second and CPU per request with 1, 2 and 3 gateway hosts of the
network-namespace cluster (`cluster.py up` first).

The load (wrk, one per host in use, the connections split between them; a Python client
without wrk) goes to the first N gateway hosts; CPU is read from /proc for every process
of each host's namespace (its uvicorn workers included), and for the Redis, PostgreSQL
and Celery worker hosts, over the same interval. The bench tenant's key has every limit
and a budget set (as in bench/gateway_bench.py); the model is served by
bench/mock_upstream.py on the upstream host.

All the hosts share this machine's cores: with 2 cores, more gateway hosts cannot serve
more requests per second (they and the load generator compete for the same two cores); what
the figures show is the overhead of spreading the load (CPU per request per host, and the
shared engines' CPU per request), not a speedup.

    .venv/bin/python bench/cluster/load.py [--seconds 10] [--repeats 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "bench" / "cluster")]

import cluster  # noqa: E402
from gateway_bench import WRK_SCRIPT, parse_wrk, run_python  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MESSAGES = '[{"role":"user","content":"Say twenty words, please."}]'
SCENARIOS = {
    "non-stream": f'{{"model":"bench-model","max_tokens":64,"messages":{MESSAGES}}}',
    "stream-20": (f'{{"model":"bench-model","max_tokens":64,"stream":true,"messages":{MESSAGES}}}'),
}


def namespace_cpu(host: str) -> float:
    """CPU seconds of every process now in ``host``'s namespace: user + system, and its
    reaped children's (PostgreSQL's backends that ended, a worker's old children)."""
    total = 0
    for pid in cluster.namespace_pids(cluster.PREFIX + host):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])
    return total / TICKS


def setup(state: dict) -> str:
    """The bench tenant and its key (limits and budget on), on the mock upstream."""
    env = {**os.environ, **state["env"], "DJANGO_SETTINGS_MODULE": "apps.platform.settings"}
    code = f"""
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke
from apps.provisioning.services import config_apply
LIMITS = {{"rpm": 100000000, "tpm": 2000000000, "max_concurrent": 100000,
          "budget": {{"amount": "1000000", "period": "monthly"}}}}
for key in ApiKey.objects.filter(tenant__name="bench", revoked_at__isnull=True):
    api_key_revoke(api_key=key)
result = config_apply(document={{
    "backends": [{{"name": "bench-mock", "base_url": "{state["mock_upstream"]}/v1"}}],
    "models": [{{"name": "bench-model", "deployments": [{{"backend": "bench-mock", "upstream_model": "m"}}],
                "prices": [{{"effective_from": "2026-01-01", "input_per_mtok": "0.10",
                            "output_per_mtok": "0.40"}}]}}],
    "tenants": [{{"name": "bench", **LIMITS, "keys": [{{"name": "bench", "models": ["bench-model"], **LIMITS}}]}}],
}})
print(result.keys_created[0]["secret"])
"""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


def run_load(urls: list[str], secret: str, body: str, seconds: int, connections: int) -> dict:
    if not shutil.which("wrk"):
        # One Python client round-robin is not possible with run_python's one URL: split.
        results = [run_python(u + "/v1/chat/completions", secret, body, seconds,
                              max(1, connections // len(urls))) for u in urls]  # fmt: skip
        return {"requests": sum(r["requests"] for r in results),
                "per_url": [r["requests"] for r in results],
                "errors": sum(r["errors"] for r in results)}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT.format(body=body, secret=secret))
    per_host = max(1, connections // len(urls))
    processes = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{per_host}",
                f"-d{seconds}s",
                "--latency",
                "-s",
                script.name,
                url + "/v1/chat/completions",
            ],
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for url in urls
    ]
    outputs = [p.communicate(timeout=seconds + 60)[0] for p in processes]
    os.unlink(script.name)
    parsed = [parse_wrk(o) for o in outputs]
    return {
        "requests": sum(p["requests"] for p in parsed),
        "per_url": [p["requests"] for p in parsed],
        "errors": sum(p["errors"] for p in parsed),
        "p50_ms": statistics.median(p["p50_ms"] for p in parsed),
        "p99_ms": max(p["p99_ms"] for p in parsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--hosts", default="1,2,3", help="gateway host counts to measure")
    args = parser.parse_args()
    state = json.loads((cluster.STATE / "cluster.json").read_text())
    secret = setup(state)
    all_gateways = sorted(state["gateways"])
    engines = [h for h in ("redis1", "redis2", "redis3", "redis4", "redis5", "redis6",
                           "broker", "pg", "worker1", "worker2")
               if cluster.namespace_pids(cluster.PREFIX + h)]  # fmt: skip
    urls_all = [state["gateways"][h] for h in all_gateways]
    run_load(urls_all, secret, SCENARIOS["non-stream"], 2, args.connections)  # warm up
    print(
        f"load: {'wrk' if shutil.which('wrk') else 'python'}, {args.connections} connections "
        f"split over the hosts in use, {args.seconds}s x {args.repeats} per cell; "
        f"{state['web_workers']} uvicorn worker(s) per host; Redis {state['redis_mode']}; "
        f"{os.cpu_count()} cores shared by every host and the load generator"
    )
    print(
        f"{'hosts':>5} {'scenario':<11}{'req/s':>14}{'gw CPU ms/req (all hosts)':>28}"
        f"{'per host ms/req':>26}{'redis':>8}{'pg':>7}{'workers':>9}{'non-2xx':>8}"
    )
    # The engines' CPU with no load at all (cluster bus, replication, the ingest's polls,
    # beat): the part of their CPU per request below that is fixed, not per request.
    idle_hosts = all_gateways + engines
    before = {h: namespace_cpu(h) for h in idle_hosts}
    time.sleep(args.seconds)
    idle = {h: (namespace_cpu(h) - before[h]) / args.seconds for h in idle_hosts}
    print(
        "idle, cores used: gateways {:.3f}, redis {:.3f}, pg {:.3f}, workers {:.3f}".format(
            sum(idle[h] for h in all_gateways),
            sum(v for h, v in idle.items() if "redis" in h or h == "broker"),
            idle.get("pg", 0),
            sum(v for h, v in idle.items() if h.startswith("worker")),
        )
    )
    results = []
    for count in [int(n) for n in args.hosts.split(",")]:
        hosts = all_gateways[:count]
        urls = [state["gateways"][h] for h in hosts]
        for name, body in SCENARIOS.items():
            cells = []
            for _ in range(args.repeats):
                before = {h: namespace_cpu(h) for h in hosts + engines}
                result = run_load(urls, secret, body, args.seconds, args.connections)
                used = {h: namespace_cpu(h) - before[h] for h in hosts + engines}
                n = max(result["requests"], 1)
                cells.append({
                    "rps": result["requests"] / args.seconds,
                    "gw": sum(used[h] for h in hosts) * 1000 / n,
                    "per_host": [used[h] * 1000 / max(r, 1)
                                 for h, r in zip(hosts, result["per_url"], strict=True)],
                    "redis": sum(used[h] for h in engines if "redis" in h or h == "broker")
                    * 1000 / n,
                    "pg": used.get("pg", 0) * 1000 / n,
                    "workers": sum(used[h] for h in engines if h.startswith("worker")) * 1000 / n,
                    "errors": result["errors"],
                })  # fmt: skip

            def med(key: str, cells: list = cells) -> str:
                values = [c[key] for c in cells]
                return f"{statistics.median(values):.3f} ({min(values):.3f}-{max(values):.3f})"

            rps = [c["rps"] for c in cells]
            per_host = cells[len(cells) // 2]["per_host"]
            print(
                f"{count:>5} {name:<11}{statistics.median(rps):>6.0f} ({min(rps):.0f}-{max(rps):.0f})"
                f"{med('gw'):>28}{'/'.join(f'{v:.2f}' for v in per_host):>26}"
                f"{statistics.median(c['redis'] for c in cells):>8.3f}"
                f"{statistics.median(c['pg'] for c in cells):>7.3f}"
                f"{statistics.median(c['workers'] for c in cells):>9.3f}"
                f"{sum(c['errors'] for c in cells):>8}",
                flush=True,
            )
            results.append({"hosts": count, "scenario": name, "cells": cells})
    out = cluster.STATE / "load.json"
    out.write_text(json.dumps(results, indent=2))
    print(f"raw figures: {out}")


if __name__ == "__main__":
    main()
