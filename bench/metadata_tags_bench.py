"""CPU per request of reading tags off a body's ``metadata`` (apps/gateway/protocol/
attribution.py ``take_metadata_tags``): a body without ``metadata`` (every request that
sends none) and one with two tags (the object copied each time, as it is taken off).

    .venv/bin/python bench/metadata_tags_bench.py [--calls N] [--runs R]

Prints the median and the spread of R runs, in microseconds of process CPU per call.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.gateway.protocol.attribution import take_metadata_tags  # noqa: E402

PLAIN = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TAGGED = {"model": "m", "messages": [], "metadata": {"team": "web", "env": "prod"}}


def per_call(body: dict, calls: int, copy: bool) -> float:
    start = time.process_time()
    for _ in range(calls):
        take_metadata_tags(dict(body) if copy else body, "unstored")
    return (time.process_time() - start) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    for label, body, copy in (("no metadata", PLAIN, False), ("two tags", TAGGED, True)):
        runs = [per_call(body, args.calls, copy) for _ in range(args.runs)]
        print(
            f"{label:>12}: median {statistics.median(runs):.3f} µs/call "
            f"(min {min(runs):.3f}, max {max(runs):.3f}, {args.runs} runs)"
        )


if __name__ == "__main__":
    main()
