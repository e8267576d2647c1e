"""A steady mixed load for a long time: does anything grow?

Runs against the network-namespace setup (`bench/cluster/cluster.py up --gateways 1
--redis single`: one gateway host, one Redis, PostgreSQL, the workers and beat, each its
own host). It starts a paced mock upstream beside the unpaced one (20 chunks, one every
--pace-ms), then for --minutes holds --streams concurrent streams and sends --rps
non-stream requests per second, all on one key with every limit and a budget set.

Every --sample-s it samples the gateway host's processes: resident memory (RSS) and open
file descriptors. At the end it prints the RSS slope (least squares over the samples after
the first --warmup-min minutes, KB per minute), the FD counts over time, and checks the
ledger: every request the client saw succeed is in it exactly once, and it holds no row
for the key that the client did not send.

    python bench/cluster/cluster.py up --gateways 1
    .venv/bin/python bench/soak.py --minutes 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench" / "cluster")]

import cluster  # noqa: E402

PACED_PORT = 8097


def sample(host: str) -> tuple[int, int]:
    """(RSS in KB, open FDs) summed over the host's processes."""
    rss = fds = 0
    for pid in cluster.namespace_pids(cluster.PREFIX + host):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
            fds += len(os.listdir(f"/proc/{pid}/fd"))
        except OSError:
            continue
    return rss, fds


def slope_per_minute(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    xs, ys = [p[0] / 60 for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def setup(state: dict, paced_url: str) -> str:
    env = {**os.environ, **state["env"], "DJANGO_SETTINGS_MODULE": "apps.platform.settings"}
    code = f"""
from apps.provisioning.services import config_apply
LIMITS = {{"rpm": 100000000, "tpm": 2000000000, "max_concurrent": 100000,
          "budget": {{"amount": "1000000", "period": "monthly"}}}}
PRICE = [{{"effective_from": "2026-01-01", "input_per_mtok": "0.10", "output_per_mtok": "0.40"}}]
import uuid
result = config_apply(document={{
    "backends": [{{"name": "soak-fast", "base_url": "{state["mock_upstream"]}/v1"}},
                 {{"name": "soak-paced", "base_url": "{paced_url}/v1", "timeout_s": 120}}],
    "models": [{{"name": "soak-fast", "deployments": [{{"backend": "soak-fast", "upstream_model": "m"}}], "prices": PRICE}},
               {{"name": "soak-stream", "deployments": [{{"backend": "soak-paced", "upstream_model": "m"}}], "prices": PRICE}}],
    "tenants": [{{"name": "soak-" + uuid.uuid4().hex[:8], **LIMITS,
                 "keys": [{{"name": "soak", "models": ["soak-fast", "soak-stream"], **LIMITS}}]}}],
}})
print(result.keys_created[0]["secret"])
"""
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", code],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip().splitlines()[-1]


async def soak(args: argparse.Namespace, url: str, secret: str, host: str) -> dict:
    import aiohttp

    headers = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    messages = [{"role": "user", "content": "Say twenty words, please."}]
    fast = json.dumps({"model": "soak-fast", "max_tokens": 64, "messages": messages})
    stream = json.dumps(
        {"model": "soak-stream", "max_tokens": 64, "stream": True, "messages": messages}
    )
    seen: list[str] = []
    sent = 0
    outcomes: dict[str, int] = {}
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    deadline = started + args.minutes * 60

    async def one(session: aiohttp.ClientSession, payload: str, is_stream: bool) -> None:
        nonlocal sent
        sent += 1
        outcome = "error"
        try:
            async with session.post(url, data=payload, headers=headers) as r:
                text = await r.text()
                if r.status == 200 and (not is_stream or "data: [DONE]" in text):
                    outcome = "ok"
                    seen.append(r.headers["x-request-id"])
                else:
                    outcome = str(r.status)
        except (TimeoutError, aiohttp.ClientError):
            outcome = "transport"
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def streamer(session: aiohttp.ClientSession) -> None:
        while time.monotonic() < deadline:
            await one(session, stream, True)

    async def paced(session: aiohttp.ClientSession) -> None:
        # Open loop: one request every 1/rps seconds, whatever the answers' latency.
        interval, next_at, tasks = 1 / args.rps, time.monotonic(), set()
        while next_at < deadline:
            task = asyncio.create_task(one(session, fast, False))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        await asyncio.gather(*tasks)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            rss, fds = sample(host)
            samples.append((time.monotonic() - started, rss, fds))
            if len(samples) % max(1, int(60 / args.sample_s)) == 0:
                print(
                    f"  {samples[-1][0] / 60:5.1f} min: RSS {rss / 1024:.1f} MB, {fds} FDs,"
                    f" {len(seen)} ok, {outcomes}",
                    flush=True,
                )
            await asyncio.sleep(args.sample_s)

    connector = aiohttp.TCPConnector(limit=args.streams + 200)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(
            sampler(), paced(session), *[streamer(session) for _ in range(args.streams)]
        )
    return {"seen": seen, "sent": sent, "outcomes": outcomes, "samples": samples}


def ledger_check(state: dict, secret: str, seen: list[str], timeout: float) -> dict:
    os.environ.update(state["env"])
    os.environ["DJANGO_SETTINGS_MODULE"] = "apps.platform.settings"
    import django

    django.setup()
    from django.db.models import Count

    from apps.keys.hashing import secret_hash
    from apps.keys.models import ApiKey
    from apps.ledger.models import UsageRecord
    from apps.ledger.selectors import ledger_pipeline_health

    key = ApiKey.objects.get(key_hash=secret_hash(secret))
    rows = UsageRecord.objects.filter(api_key=key)
    wanted = set(seen)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = ledger_pipeline_health()
        present = rows.filter(request_id__in=wanted).values("request_id").distinct().count()
        if present == len(wanted) and health["pending"] == 0 and health["lag_seconds"] == 0:
            break
        time.sleep(0.5)
    counts = rows.values("request_id").annotate(n=Count("id"))
    per_id = {row["request_id"]: row["n"] for row in counts}
    return {
        "client_successes": len(wanted),
        "ledger_rows": rows.count(),
        "successes_in_ledger": sum(1 for rid in wanted if rid in per_id),
        "ids_more_than_once": sum(1 for n in per_id.values() if n > 1),
        "ledger_ids_not_sent_ok": len(set(per_id) - wanted),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--streams", type=int, default=50, help="concurrent streams held")
    parser.add_argument("--rps", type=float, default=100, help="non-stream requests per second")
    parser.add_argument("--pace-ms", type=float, default=50, help="between a stream's chunks")
    parser.add_argument("--sample-s", type=float, default=10)
    parser.add_argument("--warmup-min", type=float, default=3)
    args = parser.parse_args()
    state = json.loads((cluster.STATE / "cluster.json").read_text())
    host = sorted(state["gateways"])[0]
    upstream_ip = cluster.ip_of("upstream")
    paced = cluster.spawn(
        "upstream",
        "paced-upstream",
        [sys.executable, "bench/mock_upstream.py", "--host", upstream_ip,
         "--port", str(PACED_PORT), "--pace-ms", str(args.pace_ms)],
    )  # fmt: skip
    try:
        cluster.wait_for("paced upstream", lambda: cluster.port_open(upstream_ip, PACED_PORT), 30)
        secret = setup(state, f"http://{upstream_ip}:{PACED_PORT}")
        url = state["gateways"][host] + "/v1/chat/completions"
        print(
            f"soak: {args.minutes:g} min against {host} ({state['web_workers']} web worker(s)),"
            f" {args.streams} streams of 20 chunks every {args.pace_ms:g} ms held open,"
            f" {args.rps:g} non-stream req/s",
            flush=True,
        )
        result = asyncio.run(soak(args, url, secret, host))
    finally:
        os.kill(paced, 15)
    samples = result["samples"]
    late = [(t, rss) for t, rss, _ in samples if t >= args.warmup_min * 60]
    fds = [f for _, _, f in samples]
    late_fds = [f for t, _, f in samples if t >= args.warmup_min * 60]
    ledger = ledger_check(state, secret, result["seen"], timeout=120)
    report = {
        "minutes": args.minutes,
        "requests_sent": result["sent"],
        "outcomes": result["outcomes"],
        "rss_mb_first_last": [round(samples[0][1] / 1024, 1), round(samples[-1][1] / 1024, 1)],
        "rss_slope_kb_per_min_after_warmup": round(slope_per_minute(late), 1),
        "rss_mb_after_warmup_min_max": [round(min(r for _, r in late) / 1024, 1),
                                        round(max(r for _, r in late) / 1024, 1)],
        "fds_first_last_min_max": [fds[0], fds[-1], min(fds), max(fds)],
        "fds_slope_per_min_after_warmup": round(
            slope_per_minute([(t, f) for t, _, f in samples if t >= args.warmup_min * 60]), 3
        ),
        "fds_after_warmup_min_max": [min(late_fds), max(late_fds)],
        "ledger": ledger,
    }  # fmt: skip
    (cluster.STATE / "soak.json").write_text(json.dumps({**report, "samples": samples}))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
