"""What projects, per-model and per-end-user limits, end users and tags cost the gateway.

Runs one gateway process against the mock upstream (as bench/gateway_bench.py) and
prints its CPU ms per non-stream chat request in scenarios measured in alternating rounds
(the median of the rounds, so a busy neighbour moving the machine's speed mid-run moves
every scenario alike):

- ``plain``: the key and tenant with rpm, tpm, concurrency and a budget, the request
  naming no end user and no tags (what every request paid before projects);
- ``all-on``: the same, the key in a project with its own limits and budget, per-model
  limits in the key and the project, per-end-user limits; the request sends
  ``x-tollgate-end-user`` and three tags, the key has two default tags.

``--baseline DIR`` also runs a gateway from another checkout (the commit before projects:
only ``plain`` exists there) on its own database, in the same alternating rounds, to
compare against what a request cost before.

``--instructions N`` counts instead of timing: each gateway runs under valgrind's
callgrind (instrumentation off until its scenarios start), and each scenario's N requests
are counted in instructions executed per request (user space: the Python and C the
gateway runs, not the kernel's socket work), the same on a busy machine as on a quiet
one. Two rounds per scenario show that the count repeats; ``--connections 1`` makes it
repeat (concurrent requests share Redis writes and loop wake-ups as their timing falls).

``--redis-db N`` puts both gateways on Redis database N (of BENCH_REDIS_URL's server;
default: 13, and 12 for the baseline). Sharing one is harmless here: the limits are far
above what a run sends, so counters both gateways may use (the same ids in their two
databases) refuse nothing.

    .venv/bin/python bench/attribution_bench.py [--seconds 5] [--rounds 5] [--baseline DIR]
        [--redis-db N] [--instructions N]
"""

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gateway_bench import cpu_seconds, ensure_database, free_port, wait_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
LIMITS = '{"rpm": 100000000, "tpm": 2000000000, "max_concurrent": 100000, "budget": {"amount": "1000000", "period": "monthly"}}'
BLOCK = (
    '{"rpm": 100000000, "tpm": 2000000000, "budget": {"amount": "1000000", "period": "monthly"}}'
)

SETUP = """
from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke
from apps.provisioning.services import config_apply
LIMITS = {limits}
for key in ApiKey.objects.filter(tenant__name="bench", revoked_at__isnull=True):
    api_key_revoke(api_key=key)
result = config_apply(document={{
    "backends": [{{"name": "bench-mock", "base_url": "http://127.0.0.1:{port}/v1"}}],
    "models": [{{"name": "bench-model", "deployments": [{{"backend": "bench-mock", "upstream_model": "m"}}],
                "prices": [{{"effective_from": "2026-01-01", "input_per_mtok": "0.10",
                            "cached_input_per_mtok": "0.05", "output_per_mtok": "0.40"}}]}}],
    "tenants": [{{"name": "bench", "billing_mode": "postpaid", **LIMITS,
                 "keys": [{{"name": "plain", "models": ["bench-model"], **LIMITS}}]}}],
}})
print("plain", result.keys_created[0]["secret"])
if {all_on!r}:
    from decimal import Decimal
    from apps.keys.services import api_key_issue
    from apps.projects.models import Project
    from apps.tenants.models import Tenant
    tenant = Tenant.objects.get(name="bench")
    Project.objects.filter(tenant=tenant, is_default=False, api_keys__isnull=True).delete()
    project, _ = Project.objects.update_or_create(tenant=tenant, name="bench-project", defaults=dict(
        rpm=100000000, tpm=2000000000, max_concurrent=100000, budget_amount=Decimal("1000000"),
        model_limits={{"bench-model": {block}}}, end_user_limits={block}))
    _, secret = api_key_issue(tenant=tenant, name="all-on", project=project,
                              allowed_models=["bench-model"], rpm=100000000, tpm=2000000000,
                              max_concurrent=100000, budget_amount=Decimal("1000000"),
                              model_limits={{"bench-model": {block}}},
                              default_tags={{"team": "web", "cost-center": "cc-42"}})
    print("all-on", secret)
"""

BODY = b'{"model":"bench-model","max_tokens":64,"messages":[{"role":"user","content":"Say twenty words, please."}]}'
ALL_ON_HEADERS = {
    "x-tollgate-end-user": "user-8c1f2e9a@example.com",
    "x-tollgate-tags": "feature:chat,env:prod,route:/v1/chat",
}


def setup(env: dict[str, str], root: Path, port: int, all_on: bool) -> dict[str, str]:
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=root, env=env, check=True)
    code = SETUP.format(limits=LIMITS, block=BLOCK, port=port, all_on=all_on)
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(
        line.split(" ", 1) for line in out.strip().splitlines() if line[:3] in ("pla", "all")
    )


async def load(url: str, headers: dict[str, str], seconds: float, connections: int) -> int:
    import aiohttp

    done = errors = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal done, errors
            while time.monotonic() < deadline:
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    errors += r.status != 200
                    done += 1

        await asyncio.gather(*[worker() for _ in range(connections)])
    if errors:
        raise RuntimeError(f"{errors} requests were not answered 200")
    return done


async def load_count(url: str, headers: dict[str, str], requests: int, connections: int) -> None:
    """Exactly ``requests`` requests, ``connections`` at a time."""
    import aiohttp

    left = requests

    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(url, data=BODY, headers=headers) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"answered {r.status}")

        await asyncio.gather(*[worker() for _ in range(connections)])


def callgrind_count(process: subprocess.Popen, out: Path, run) -> int:
    """Instructions the gateway (under callgrind) executes while ``run()`` runs."""
    pid = str(process.pid)
    subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    run()
    subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
    before = set(out.glob(f"cg.{pid}*"))
    subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    deadline = time.monotonic() + 60
    while not (new := set(out.glob(f"cg.{pid}*")) - before) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)  # the dump is written in one go, but let it finish
    dump = max(new, key=lambda path: path.stat().st_mtime).read_text()
    totals = [line for line in dump.splitlines() if line.startswith("totals:")]
    if not totals:
        raise RuntimeError("no totals in the callgrind dump")
    return int(totals[-1].split()[1])


def start_gateway(
    root: Path, env: dict[str, str], callgrind: Path | None = None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    prefix = [sys.executable]
    if callgrind is not None:
        prefix = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={callgrind}/cg.%p",
            sys.executable,
        ]
    process = subprocess.Popen(
        [
            *prefix,
            "-m",
            "uvicorn",
            "apps.platform.asgi:application",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        cwd=root,
        env=env,
        stderr=subprocess.DEVNULL if callgrind is not None else None,
    )
    wait_port(port, timeout=30 if callgrind is None else 300)
    return process, f"http://127.0.0.1:{port}/v1/chat/completions"


def instructions(
    scenarios: dict[str, tuple[subprocess.Popen, str, dict[str, str]]],
    json: dict[str, str],
    requests: int,
    connections: int,
    out: Path,
) -> dict[str, list[float]]:
    counted: dict[str, list[float]] = {name: [] for name in scenarios}
    for _ in range(2):
        for name, (process, url, headers) in scenarios.items():

            def run(url=url, headers=headers) -> None:
                asyncio.run(load_count(url, {**headers, **json}, requests, connections))

            counted[name].append(callgrind_count(process, out, run) / requests)
    return counted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--baseline",
        type=Path,
        help="also run a gateway from this checkout (an older commit), its own database",
    )
    parser.add_argument(
        "--redis-db",
        type=int,
        help="the Redis database both gateways use (default: 13, the baseline 12)",
    )
    parser.add_argument(
        "--instructions",
        type=int,
        metavar="N",
        help="count instructions per request over N requests a scenario (callgrind)",
    )
    args = parser.parse_args()
    callgrind = Path(tempfile.mkdtemp(prefix="callgrind-")) if args.instructions else None
    base_env = {
        **os.environ,
        "LEDGER_STREAM": "tollgate:bench:attribution",
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
    }
    database = os.environ.get(
        "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_attribution_bench"
    )
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    server = redis_url.rsplit("/", 1)[0]
    baseline_redis = f"{server}/12"
    if args.redis_db is not None:
        redis_url = baseline_redis = f"{server}/{args.redis_db}"
    # (label, checkout, environment): the baseline's database and Redis are its own.
    targets = [("new", ROOT, {**base_env, "DATABASE_URL": database, "REDIS_URL": redis_url})]
    if args.baseline:
        targets.insert(
            0,
            (
                "baseline",
                args.baseline.resolve(),
                {
                    **base_env,
                    "DATABASE_URL": database + "_baseline",
                    "REDIS_URL": baseline_redis,
                },
            ),
        )
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(upstream_port)],
        stderr=subprocess.DEVNULL,
    )
    gateways: list[subprocess.Popen] = []
    try:
        wait_port(upstream_port)
        scenarios: dict[str, tuple[subprocess.Popen, str, dict[str, str]]] = {}
        for label, root, env in targets:
            ensure_database(env["DATABASE_URL"])
            all_on = (root / "apps" / "projects").is_dir()
            secrets = setup(env, root, upstream_port, all_on)
            process, url = start_gateway(root, env, callgrind)
            gateways.append(process)
            auth = {"Authorization": f"Bearer {secrets['plain']}"}
            scenarios[f"plain@{label}"] = (process, url, auth)
            if all_on:
                all_auth = {"Authorization": f"Bearer {secrets['all-on']}", **ALL_ON_HEADERS}
                scenarios[f"all-on@{label}"] = (process, url, all_auth)
        json = {"Content-Type": "application/json"}
        for _process, url, headers in scenarios.values():  # warm up: caches, pools
            asyncio.run(load(url, {**headers, **json}, 1 if callgrind is None else 10, 4))
        if callgrind is not None:
            counted = instructions(scenarios, json, args.instructions, args.connections, callgrind)
            print(f"instructions per request, 2 rounds of {args.instructions} (callgrind)")
            for name, values in counted.items():
                print(f"{name:<18}{values[0]:>12,.0f}{values[1]:>12,.0f}")
            reference = counted.get("plain@baseline")
            for name, values in counted.items():
                if reference is not None and name != "plain@baseline":
                    more = statistics.mean(values) / statistics.mean(reference) - 1
                    print(f"{name} - plain@baseline: {more:+.2%}")
            return
        cpu: dict[str, list[float]] = {name: [] for name in scenarios}
        for _ in range(args.rounds):
            for name, (process, url, headers) in scenarios.items():
                before = cpu_seconds(process.pid)
                done = asyncio.run(load(url, {**headers, **json}, args.seconds, args.connections))
                cpu[name].append((cpu_seconds(process.pid) - before) * 1000 / done)
        print(
            f"{args.rounds} rounds of {args.seconds}s per scenario, {args.connections} connections"
        )
        print(f"{'scenario':<18}{'CPU ms/req (median)':>22}   rounds")
        for name, values in cpu.items():
            rounds = " ".join(f"{v:.3f}" for v in values)
            print(f"{name:<18}{statistics.median(values):>22.3f}   {rounds}")
        medians = {name: statistics.median(values) for name, values in cpu.items()}
        reference = medians.get("plain@baseline")
        if reference is not None:
            for name in ("plain@new", "all-on@new"):
                print(f"{name} - plain@baseline: {medians[name] - reference:+.3f} ms")
        print(f"all-on@new - plain@new: {medians['all-on@new'] - medians['plain@new']:+.3f} ms")
    finally:
        for process in (*gateways, upstream):
            process.send_signal(signal.SIGINT)
            process.wait(30)
        import redis

        for _label, _root, env in targets:
            redis.Redis.from_url(env["REDIS_URL"]).delete("tollgate:bench:attribution")


if __name__ == "__main__":
    main()
