"""CPU of the balancing strategies, per request.

Two measures:

* in-process: ``balancing.order()`` per strategy over three deployments (and, for
  affinity, extracting the session key from a chat body), µs per call, against
  ``ModelInfo.deployment_order()`` alone (what the weighted strategy costs without it);
* end to end (``--rounds N``): ``bench/gateway_bench.py`` per strategy over three
  deployments of one mock, the rounds alternating the strategies so that drift of the
  machine falls on all of them alike; the median gateway CPU-ms per request.

    .venv/bin/python bench/balancing_bench.py [--rounds 3] [--seconds 6]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STRATEGIES = ("weighted", "least-busy", "latency", "affinity")


def in_process(number: int) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")
    import django

    django.setup()
    from apps.gateway.backends import adapter_for
    from apps.gateway.caches import DeploymentInfo, ModelInfo
    from apps.gateway.upstream.balancing import BalanceBoard, order, session_key_of

    adapter = adapter_for("openai")
    deployments = tuple(
        DeploymentInfo(
            id=i,
            backend=f"b{i}",
            adapter=adapter,
            speaks=adapter.speaks,
            base_url="http://127.0.0.1:9/v1",
            headers={},
            upstream_model=f"m{i}",
            weight=1,
            timeout_s=60,
            connect_timeout_s=5,
        )
        for i in range(1, 4)
    )
    board = BalanceBoard(None)
    for d in deployments:
        board.observe_ttft(d.id, 100 + d.id)
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. " * 20},
            {"role": "user", "content": "Say twenty words, please."},
            {"role": "assistant", "content": "One two three."},
            {"role": "user", "content": "More."},
        ],
    }
    headers: dict[bytes, bytes] = {}

    def per_call_us(statement) -> float:
        best = min(timeit.repeat(statement, number=number, repeat=5))
        return best / number * 1e6

    plain = ModelInfo("m", "m", 0, deployments)
    baseline = per_call_us(plain.deployment_order)
    print(f"in-process, 3 deployments, best of 5 × {number:,} calls")
    print(f"{'what':<44}{'µs/call':>10}{'vs baseline':>14}")
    print(f"{'deployment_order() (weighted before)':<44}{baseline:>10.2f}{'':>14}")
    for strategy in STRATEGIES:
        model = ModelInfo("m", "m", 0, deployments, strategy=strategy)
        if strategy == "affinity":
            from apps.gateway.protocol.session import affinity_source_parse

            model = ModelInfo(
                "m",
                "m",
                0,
                deployments,
                strategy=strategy,
                affinity=affinity_source_parse("prefix"),
            )

        def request(model=model) -> None:
            order(model, session_key_of(model, body, headers), board=board)

        us = per_call_us(request)
        label = f"session_key_of + order(), {strategy}"
        print(f"{label:<44}{us:>10.2f}{us - baseline:>+14.2f}")


def end_to_end(rounds: int, seconds: int) -> None:
    results: dict[str, dict[str, list[float]]] = {s: {} for s in STRATEGIES}
    for round_ in range(rounds):
        for strategy in STRATEGIES if round_ % 2 == 0 else reversed(STRATEGIES):
            out = subprocess.run(
                [
                    sys.executable,
                    str(ROOT / "bench" / "gateway_bench.py"),
                    "--seconds",
                    str(seconds),
                    "--strategy",
                    strategy,
                    "--deployments",
                    "3",
                ],
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            for line in out.splitlines():
                match = re.match(r"(non-stream|stream-20)\s+\S+\s+\S+\s+\S+\s+(\S+)", line)
                if match:
                    results[strategy].setdefault(match.group(1), []).append(float(match.group(2)))
            print(f"round {round_ + 1} {strategy}: {results[strategy]}", flush=True)
    print(f"\nend to end, 3 deployments, {rounds} rounds of {seconds}s: CPU ms/request")
    print(f"{'strategy':<12}{'non-stream median':>20}{'stream-20 median':>20}  (all runs)")
    for strategy in STRATEGIES:
        runs = results[strategy]
        print(
            f"{strategy:<12}{statistics.median(runs['non-stream']):>20.3f}"
            f"{statistics.median(runs['stream-20']):>20.3f}  {runs}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=20_000, help="in-process calls per repeat")
    parser.add_argument("--rounds", type=int, default=0, help="end-to-end rounds (0: none)")
    parser.add_argument("--seconds", type=int, default=6, help="seconds per end-to-end scenario")
    args = parser.parse_args()
    in_process(args.number)
    if args.rounds:
        end_to_end(args.rounds, args.seconds)


if __name__ == "__main__":
    main()
