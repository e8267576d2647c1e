"""CPU per request of the upstream path alone (failover + pooled client, with the
deployment breakers on), against bench/mock_upstream.py, in one process: a 20-chunk
stream and a non-stream answer. Less noisy than bench/gateway_bench.py on a busy
machine, for comparing two checkouts (run it in each, alternately).

    .venv/bin/python bench/upstream_path_bench.py [--requests 4000] [--rounds 5]
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_bench import free_port, wait_port  # noqa: E402

STREAM = b'{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}'
ONCE = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'


async def measure(port: int, requests: int, rounds: int) -> dict[str, list[float]]:
    from apps.core.redis import async_client
    from apps.gateway.backends import adapter_for
    from apps.gateway.caches import DeploymentInfo, ModelInfo
    from apps.gateway.upstream import failover
    from apps.gateway.upstream.client import UpstreamClient

    adapter = adapter_for("openai")
    deployment = DeploymentInfo(
        id=1,
        backend="bench",
        adapter=adapter,
        speaks=adapter.speaks,
        base_url=f"http://127.0.0.1:{port}/v1",
        headers={},
        upstream_model="m",
        weight=1,
        timeout_s=60.0,
        connect_timeout_s=5.0,
    )
    model = ModelInfo(name="m", display_name="m", created=0, deployments=(deployment,))
    client = UpstreamClient(64)
    # A checkout without breakers takes no ``health``.
    extra = {}
    if hasattr(failover, "DeploymentHealth"):
        extra["health"] = failover.DeploymentHealth(async_client())

    async def once(stream: bool) -> None:
        body = STREAM if stream else ONCE
        async with failover.open_upstream(
            client, model, "/chat/completions", lambda _: body, stream=stream, **extra
        ) as (response, _):
            if stream:
                async for _chunk in response.chunks():
                    pass
            else:
                await response.read()

    for stream in (True, False):
        for _ in range(300):  # warm: pooled connections
            await once(stream)
    found: dict[str, list[float]] = {"stream-20": [], "non-stream": []}
    for _ in range(rounds):
        for name, stream in (("stream-20", True), ("non-stream", False)):
            started = time.process_time()
            for _ in range(requests):
                await once(stream)
            found[name].append((time.process_time() - started) / requests * 1e6)
    await client.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "apps.platform.settings")
    os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/14")
    import django
    import uvloop

    django.setup()
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "mock_upstream.py"), "--port", str(port)],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port)
        found = uvloop.run(measure(port, args.requests, args.rounds))
    finally:
        upstream.terminate()
        upstream.wait(10)
    for name, values in found.items():
        print(
            f"{name:<12} CPU µs/request: min {min(values):.1f}  median "
            f"{statistics.median(values):.1f}  ({args.rounds} rounds × {args.requests})"
        )


if __name__ == "__main__":
    main()
