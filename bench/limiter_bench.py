"""CPU of the gateway's side of admission and settlement: what ``Limiter.admit`` and
``Limiter.settle`` cost one process per request, Redis' own work not counted.

One process admits and settles requests, 16 at a time, against a real Redis (the
hiredis client the gateway uses) and prints the process's CPU µs per admit+settle pair
for these key shapes:

- ``plain``:   key and tenant with rpm, tpm, concurrency and a budget;
- ``all-on``:  the same, the key in a project with its own four limits, per-model limits
  (rpm, tpm, budget) in the key and the project, per-end-user limits (rpm, tpm, budget);
- ``sparse``:  the key with rpm only, the project with a budget only, the model with tpm
  only, nothing on the tenant.

``--baseline DIR`` runs the same from another checkout in alternating rounds, each round
a fresh process, and prints both; every figure is the median of the rounds, with the
spread. Redis: BENCH_REDIS_URL (default redis://127.0.0.1:6379/8); the counters it
makes are deleted at the end.

    .venv/bin/python bench/limiter_bench.py [--requests 20000] [--rounds 5] [--baseline DIR]
"""

import argparse
import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
STREAM = "tollgate:bench:limiter"
# Ids far from any test's or other bench's, so the counters are this bench's own.
KEY_ID, PROJECT_ID, TENANT_ID = 910_001, 920_001, 930_001
SHAPES = ("plain", "all-on", "sparse")
# Requests in flight at once, as a loaded gateway process has them (their commands share
# the writes).
CONCURRENCY = 16
END_USER = "0123456789abcdef0123456789abcdef"  # an end user's hash


def key_of(shape: str):
    from apps.gateway.caches import KeyInfo
    from apps.limits.limiter import LimitSpec, base_scopes, model_scopes

    big = 10**15
    full = LimitSpec(rpm=10**8, tpm=2 * 10**9, max_concurrent=10**5, budget_nanos=big)
    block = LimitSpec(rpm=10**8, tpm=2 * 10**9, budget_nanos=big)
    fields = {
        "plain": dict(limits=full, tenant_limits=full),
        "all-on": dict(
            limits=full,
            tenant_limits=full,
            project_limits=full,
            model_limits={"bench-model": block},
            project_model_limits={"bench-model": block},
            end_user_limits=block,
        ),
        "sparse": dict(
            limits=LimitSpec(rpm=10**8),
            tenant_limits=LimitSpec(),
            project_limits=LimitSpec(budget_nanos=big),
            model_limits={"bench-model": LimitSpec(tpm=2 * 10**9)},
        ),
    }[shape]
    info = KeyInfo(
        id=KEY_ID,
        tenant_id=TENANT_ID,
        tenant_name="bench",
        prefix="tg-bench",
        allowed_models=frozenset({"bench-model"}),
        expires_at=None,
        revoked=False,
        project_id=PROJECT_ID,
        **fields,
    )
    return dataclasses.replace(info, scopes=base_scopes(info), model_scopes=model_scopes(info))


async def measure(shape: str, requests: int) -> float:
    """CPU µs per admit+settle pair (after a warm-up)."""
    import redis.asyncio as aioredis

    from apps.core.fastredis import FastRedis
    from apps.ledger.events import UsageEvent
    from apps.limits.limiter import Limiter

    fast = FastRedis(REDIS_URL)
    limiter = Limiter(aioredis.from_url(REDIS_URL), STREAM, fast)
    key = key_of(shape)
    end_user = END_USER if key.end_user_limits else None
    ids = [str(uuid.uuid4()) for _ in range(requests + 200)]
    event = UsageEvent(ids[0], TENANT_ID, KEY_ID, "bench-model", "openai", "chat", False, 0.0)
    event.prompt_tokens, event.completion_tokens = 12, 20

    async def one(request_id: str) -> None:
        admission = await limiter.admit(
            request_id=request_id,
            key=key,
            prompt_tokens=12,
            max_output_tokens=64,
            worst_price_nanos=40_000,
            model="bench-model",
            end_user_hash=end_user,
        )
        event.request_id = request_id  # read before settle's first await: safe to share
        await limiter.settle(admission, event, 9_000)

    async def worker(mine: list[str]) -> None:
        for request_id in mine:
            await one(request_id)

    async def run(batch: list[str]) -> None:
        await asyncio.gather(*(worker(batch[i::CONCURRENCY]) for i in range(CONCURRENCY)))

    await run(ids[:200])
    start = time.process_time()
    await run(ids[200:])
    used = time.process_time() - start
    await fast.close()
    return used * 1e6 / requests


def child(requests: int) -> None:
    import django

    sys.path.insert(0, os.getcwd())
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")
    django.setup()
    import uvloop

    for shape in SHAPES:
        print(shape, uvloop.run(measure(shape, requests)), flush=True)


def run_round(root: Path, requests: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", "--requests", str(requests)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return {name: float(value) for name, value in (line.split() for line in out.splitlines())}


def cleanup() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.delete(STREAM)
    for pattern in ("tg:lim:*:9[123]0001*", f"tg:lim:u:{END_USER}*", "tg:bal:t:930001*"):
        names = list(client.scan_iter(match=pattern, count=1000))
        if names:
            client.delete(*names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline", type=Path)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.requests)
        return
    targets = [("new", ROOT)]
    if args.baseline:
        targets.insert(0, ("baseline", args.baseline.resolve()))
    results: dict[str, dict[str, list[float]]] = {
        label: {shape: [] for shape in SHAPES} for label, _root in targets
    }
    try:
        for _ in range(args.rounds):
            for label, root in targets:
                for shape, value in run_round(root, args.requests).items():
                    results[label][shape].append(value)
                cleanup()
    finally:
        cleanup()
    print(f"{args.rounds} rounds of {args.requests} admit+settle pairs; CPU µs per pair")
    print(f"{'checkout':<10}{'shape':<8}{'median':>9}{'min':>9}{'max':>9}   rounds")
    for label, shapes in results.items():
        for shape, values in shapes.items():
            rounds = " ".join(f"{v:.1f}" for v in values)
            print(
                f"{label:<10}{shape:<8}{statistics.median(values):>9.1f}"
                f"{min(values):>9.1f}{max(values):>9.1f}   {rounds}"
            )
    if args.baseline:
        for shape in SHAPES:
            delta = statistics.median(results["new"][shape]) - statistics.median(
                results["baseline"][shape]
            )
            print(f"{shape}: new - baseline {delta:+.1f} µs")


if __name__ == "__main__":
    main()
