"""Streams at scale: C concurrent chat-completions streams through one gateway process.

A pacing upstream (``bench/streams/upstream.mjs``, Node) sends each stream a chunk every
T ms for D s, each chunk carrying its send time; a Node client
(``bench/streams/client.mjs``) opens C streams and measures per chunk arrival − send.
The same run straight to the upstream first gives the floor (``--direct``: only that);
the gateway's figures are then given as added to it:

    delay p50/p99    per content chunk, gateway − direct (ms)
    TTFT p50/p99     time to the first chunk, gateway − direct (ms)
    completed        streams that got every chunk and [DONE] (the rest by failure kind)
    CPU/chunk        the gateway process's utime+stime / content chunks relayed, while
                     every stream is open (steady), and over the whole run (setup and
                     settlement included)
    KB/stream        (gateway RSS with every stream open − its RSS idle, warmed up, before
                     the first run) / C

Starts its own gateway (uvicorn as ``make serve`` does; ``--server granian`` for granian) on Postgres and Redis with the
setup of ``bench/gateway_bench.py`` (DATABASE_URL: BENCH_DATABASE_URL, default database
tollgate_streams_bench; Redis: ``--redis-db``, default 4). Needs node (v20).

    .venv/bin/python bench/streams_bench.py --streams 1000 [--interval-ms 50]
        [--duration-s 30] [--repeat 3] [--direct] [--gateway-workers 1] [--redis-db 4]
        [--server uvicorn|granian]
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway_bench import ROOT, SERVERS, cpu_seconds, ensure_database, free_port, setup, wait_port

HERE = Path(__file__).resolve().parent / "streams"


def rss_kb(pid: int) -> int:
    """Resident KB of ``pid`` and every process under it (its web workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int(
                    Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
        todo.extend(children.get(current, ()))
    return total


def run_client(
    url: str, key: str | None, model: str, streams: int, chunks: int, ramp_s: float, pid: int | None
) -> dict:
    """One client run; with the gateway's ``pid``, its CPU and RSS while it runs."""
    node = shutil.which("node") or "node"
    command = [
        node, str(HERE / "client.mjs"), "--url", url, "--model", model,
        "--streams", str(streams), "--chunks", str(chunks), "--ramp-s", str(ramp_s),
    ]  # fmt: skip
    if key:
        command += ["--key", key]
    peak = [0]
    stop = threading.Event()

    def sample() -> None:  # the highest RSS while every stream is open
        while not stop.wait(0.25):
            peak[0] = max(peak[0], rss_kb(pid))

    marks: dict[str, tuple[float, int]] = {}
    cpu_start = cpu_seconds(pid) if pid else 0.0
    client = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sampler = threading.Thread(target=sample, daemon=True)
    result: dict = {}
    for line in client.stdout:
        word, _, rest = line.strip().partition(" ")
        if word == "OPEN":
            if pid:
                marks["open"] = (cpu_seconds(pid), int(rest))
                peak[0] = rss_kb(pid)
                sampler.start()
        elif word == "CLOSING":
            if pid:
                stop.set()
                marks["closing"] = (cpu_seconds(pid), int(rest))
        elif word == "RESULT":
            result = json.loads(rest)
    client.wait()
    stop.set()
    if pid:
        result["cpu_us_per_chunk"] = (
            (cpu_seconds(pid) - cpu_start) * 1e6 / max(result["content_chunks"], 1)
        )
        if "open" in marks and "closing" in marks:
            (cpu_a, chunks_a), (cpu_b, chunks_b) = marks["open"], marks["closing"]
            if chunks_b > chunks_a:
                result["steady_cpu_us_per_chunk"] = (cpu_b - cpu_a) * 1e6 / (chunks_b - chunks_a)
        result["rss_open_kb"] = peak[0]
    return result


def spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return f"{median:.2f}"
    return f"{median:.2f} [{min(values):.2f}–{max(values):.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", "-c", type=int, default=200, help="C: concurrent streams")
    parser.add_argument("--interval-ms", "-t", type=float, default=50, help="T: ms between chunks")
    parser.add_argument(
        "--duration-s", "-d", type=float, default=30, help="D: seconds a stream lasts"
    )
    parser.add_argument("--ramp-s", type=float, default=2, help="the streams open over this long")
    parser.add_argument("--repeat", type=int, default=1, help="gateway runs (medians, [min–max])")
    parser.add_argument(
        "--direct", action="store_true", help="only the floor: straight to the upstream"
    )
    parser.add_argument("--gateway-workers", type=int, default=1, help="web processes")
    parser.add_argument(
        "--server", choices=sorted(SERVERS), default="uvicorn", help="granian: pip install granian"
    )
    parser.add_argument("--redis-db", type=int, default=4)
    parser.add_argument("--json", help="write every run's raw figures to this file")
    args = parser.parse_args()  # fmt: skip

    chunks = max(1, round(args.duration_s * 1000 / args.interval_ms))
    env = {
        **os.environ,
        "DATABASE_URL": os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/tollgate_streams_bench"
        ),
        "REDIS_URL": f"redis://127.0.0.1:6379/{args.redis_db}",
        "LEDGER_STREAM": "tollgate:bench:usage",
        "DJANGO_SETTINGS_MODULE": "apps.platform.settings",
    }
    upstream_port = free_port()
    upstream = subprocess.Popen(
        [
            shutil.which("node") or "node", str(HERE / "upstream.mjs"), "--port", str(upstream_port),
            "--interval-ms", str(args.interval_ms), "--duration-s", str(args.duration_s),
        ]
    )  # fmt: skip
    gateway = None
    runs: dict[str, list[dict]] = {"direct": [], "gateway": []}
    try:
        wait_port(upstream_port)
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        print(
            f"C={args.streams} streams, a chunk every {args.interval_ms:g} ms for "
            f"{args.duration_s:g} s ({chunks} chunks each, "
            f"{args.streams * 1000 / args.interval_ms:,.0f} chunks/s asked), opened over "
            f"{args.ramp_s:g} s",
            flush=True,
        )
        run_client(direct_url, None, "m", 50, 3, 0.2, None)  # warm the client's JIT
        floor = run_client(direct_url, None, "m", args.streams, chunks, args.ramp_s, None)
        runs["direct"].append(floor)
        print(
            f"direct (floor): completed {floor['completed']}/{floor['streams']}; delay p50 "
            f"{floor['delay_ms']['p50']:.2f} p99 {floor['delay_ms']['p99']:.2f} ms; TTFT p50 "
            f"{floor['ttft_ms']['p50']:.2f} p99 {floor['ttft_ms']['p99']:.2f} ms",
            flush=True,
        )
        if args.direct:
            return
        ensure_database(env["DATABASE_URL"])
        secret = setup(env, upstream_port)
        gateway_port = free_port()
        gateway = subprocess.Popen(
            SERVERS[args.server](gateway_port, args.gateway_workers), cwd=ROOT, env=env
        )
        wait_port(gateway_port)
        url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        # Warm: connections, caches, the key; then the idle RSS the streams add to.
        warm = run_client(url, secret, "bench-model", 50, 3, 0.2, None)
        if warm["completed"] != 50:
            print(f"warm-up failed: {warm}", file=sys.stderr)
        time.sleep(1)  # let the warm-up's connections close before the idle reading
        idle_kb = rss_kb(gateway.pid)
        for _ in range(args.repeat):
            result = run_client(
                url, secret, "bench-model", args.streams, chunks, args.ramp_s, gateway.pid
            )
            result["idle_kb"] = idle_kb
            result["kb_per_stream"] = (result["rss_open_kb"] - idle_kb) / args.streams
            runs["gateway"].append(result)
            print(
                f"gateway run: completed {result['completed']}/{result['streams']} "
                f"{result['failures'] or ''}; delay p50 {result['delay_ms']['p50']:.2f} p99 "
                f"{result['delay_ms']['p99']:.2f} ms; CPU/chunk steady "
                f"{result.get('steady_cpu_us_per_chunk', float('nan')):.1f} µs, whole "
                f"{result['cpu_us_per_chunk']:.1f} µs; {result['kb_per_stream']:.1f} KB/stream",
                flush=True,
            )
        rows = runs["gateway"]

        def added(path: tuple[str, str]) -> list[float]:
            base = floor[path[0]][path[1]]
            return [r[path[0]][path[1]] - base for r in rows if r[path[0]][path[1]] is not None]

        print(f"\none gateway process; {len(rows)} run(s): median [min–max]")
        print(f"  added delay per chunk p50  {spread(added(('delay_ms', 'p50')))} ms")
        print(f"  added delay per chunk p99  {spread(added(('delay_ms', 'p99')))} ms")
        print(f"  added TTFT p50             {spread(added(('ttft_ms', 'p50')))} ms")
        print(f"  added TTFT p99             {spread(added(('ttft_ms', 'p99')))} ms")
        print(
            f"  completed                  "
            f"{spread([100 * r['completed'] / r['streams'] for r in rows])} %"
        )
        print(
            f"  CPU per chunk (steady)     "
            f"{spread([r.get('steady_cpu_us_per_chunk') for r in rows])} µs"
        )
        print(f"  CPU per chunk (whole run)  {spread([r['cpu_us_per_chunk'] for r in rows])} µs")
        print(f"  RSS per open stream        {spread([r['kb_per_stream'] for r in rows])} KB")
        failures: dict[str, int] = {}
        for r in rows:
            for kind, n in r["failures"].items():
                failures[kind] = failures.get(kind, 0) + n
        if failures:
            print(f"  failures (all runs)        {failures}")
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(runs, indent=1))
        for process in (gateway, upstream):
            if process is not None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if gateway is not None:
            import redis

            redis.Redis.from_url(env["REDIS_URL"]).delete("tollgate:bench:usage")


if __name__ == "__main__":
    main()
