"""Balancing strategies end to end: three fake upstream processes behind one model, the
requests counted where they land (each upstream's own record)."""

import asyncio
import os
import re
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import PYTHON, FakeUpstream, Process, free_port, start_gateway, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

CONVERSATIONS = 100
TURNS = 5
CONVERSATION = re.compile(r"conversation (\d+)\b")


class Upstreams:
    """Fake upstream processes, each a deployment of its own."""

    def __init__(self, delays_ms: list[int]) -> None:
        self.processes: list[Process] = []
        self.fakes: list[FakeUpstream] = []
        for i, delay in enumerate(delays_ms):
            port = free_port()
            args = [
                PYTHON,
                "tests/fakes/upstream.py",
                "--port",
                str(port),
                "--delay-ms",
                str(delay),
            ]
            self.processes.append(Process(f"upstream-b{i}", args, dict(os.environ), port))
            self.fakes.append(FakeUpstream(f"http://127.0.0.1:{port}"))

    def stop(self) -> None:
        for process in self.processes:
            process.stop()


@pytest.fixture
def three_upstreams() -> Iterator[Upstreams]:
    upstreams = Upstreams([0, 0, 0])
    yield upstreams
    upstreams.stop()


def _document(fakes: list[FakeUpstream], models: list[dict]) -> dict:
    return {
        "backends": [
            {"name": f"bal-{i}", "kind": "openai", "base_url": fake.base_url, "timeout_s": 10}
            for i, fake in enumerate(fakes)
        ],
        "models": models,
        "tenants": [
            {
                "name": "balance-co",
                "keys": [{"name": "main", "models": [m["name"] for m in models]}],
            }
        ],
    }


def _model(name: str, count: int, strategy: str, **extra) -> dict:
    return {
        "name": name,
        "strategy": strategy,
        "deployments": [
            {
                "backend": f"bal-{i}",
                "upstream_model": f"{name}-{i}",
                "weight": extra.pop(f"w{i}", 1),
            }
            for i in range(count)
        ],
        **extra,
    }


def _apply(document: dict) -> str:
    from apps.provisioning.services import config_apply

    result = config_apply(document=document)
    return result.keys_created[0]["secret"]


def _conversation(number: int, turn: int) -> list[dict]:
    messages = [
        {"role": "system", "content": f"You help conversation {number}."},
        {"role": "user", "content": f"conversation {number} opens"},
    ]
    for t in range(1, turn + 1):
        messages.append({"role": "assistant", "content": f"answer {t}"})
        messages.append({"role": "user", "content": f"turn {t}"})
    return messages


async def _talk(gateway: str, secret: str, model: str, numbers, turns: range) -> list[int]:
    """Every conversation's turns in order, the conversations side by side; statuses."""
    statuses: list[int] = []
    headers = {"Authorization": f"Bearer {secret}"}
    limits = httpx.Limits(max_connections=20)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        gate = asyncio.Semaphore(20)

        async def one(number: int) -> None:
            async with gate:
                for turn in turns:
                    response = await client.post(
                        gateway + "/v1/chat/completions",
                        json={"model": model, "messages": _conversation(number, turn)},
                        headers=headers,
                    )
                    statuses.append(response.status_code)

        await asyncio.gather(*(one(n) for n in numbers))
    return statuses


def _landings(fakes: list[FakeUpstream]) -> dict[int, list[int]]:
    """conversation number → the upstreams (by index) that received each of its turns."""
    landed: dict[int, list[int]] = {}
    for index, fake in enumerate(fakes):
        for request in fake.requests():
            system = request["body"]["messages"][0]["content"]
            number = int(CONVERSATION.search(system).group(1))
            landed.setdefault(number, []).append(index)
    return landed


def _affinity_count(gateway: str, model: str, result: str) -> float:
    text = httpx.get(gateway + "/metrics").text
    pattern = rf'tollgate_affinity_total{{model="{model}",result="{result}"}} (\S+)'
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


def test_every_turn_of_a_conversation_lands_on_one_deployment(gateway, three_upstreams):
    fakes = three_upstreams.fakes
    secret = _apply(_document(fakes, [_model("sticky", 3, "affinity", affinity_key="prefix")]))

    statuses = asyncio.run(_talk(gateway, secret, "sticky", range(CONVERSATIONS), range(TURNS)))

    assert statuses == [200] * (CONVERSATIONS * TURNS)
    landed = _landings(fakes)
    assert sorted(landed) == list(range(CONVERSATIONS))
    moved = {n: places for n, places in landed.items() if len(set(places)) != 1}
    assert moved == {}
    assert all(len(places) == TURNS for places in landed.values())
    holders = {places[0] for places in landed.values()}
    assert holders == {0, 1, 2}  # every deployment holds some conversations


def test_a_stopped_deployment_moves_only_its_own_conversations(gateway, three_upstreams):
    fakes = three_upstreams.fakes
    secret = _apply(_document(fakes, [_model("sticky", 3, "affinity", affinity_key="prefix")]))
    assert asyncio.run(_talk(gateway, secret, "sticky", range(CONVERSATIONS), range(2))) == [
        200
    ] * (CONVERSATIONS * 2)
    before = {n: places[0] for n, places in _landings(fakes).items()}

    three_upstreams.processes[1].stop()
    for fake in (fakes[0], fakes[2]):
        httpx.post(fake.url + "/_reset")
    hits, misses = (_affinity_count(gateway, "sticky", r) for r in ("hit", "miss"))
    statuses = asyncio.run(_talk(gateway, secret, "sticky", range(CONVERSATIONS), range(2, 5)))
    hits = _affinity_count(gateway, "sticky", "hit") - hits
    misses = _affinity_count(gateway, "sticky", "miss") - misses

    assert statuses == [200] * (CONVERSATIONS * 3)
    after = _landings([fakes[0], fakes[2]])
    after = {n: {(0, 2)[i] for i in places} for n, places in after.items()}
    stayed = {n: after[n] for n, was in before.items() if was != 1}
    assert stayed == {n: {was} for n, was in before.items() if was != 1}
    moved = {n: after[n] for n, was in before.items() if was == 1}
    assert moved  # the stopped one held some conversations
    assert all(len(places) == 1 for places in moved.values())  # each moved once, to one
    assert misses == 3 * len(moved)  # the metrics count the moved conversations' turns
    assert hits == 3 * (CONVERSATIONS - len(moved))


def test_a_session_header_keeps_different_prompts_together(gateway, three_upstreams):
    fakes = three_upstreams.fakes
    model = _model("sticky-header", 3, "affinity", affinity_key="header:x-session-id")
    secret = _apply(_document(fakes, [model]))
    headers = {"Authorization": f"Bearer {secret}", "X-Session-Id": "session-42"}

    for n in range(12):
        response = httpx.post(
            gateway + "/v1/chat/completions",
            json={"model": "sticky-header", "messages": _conversation(n, 0)},
            headers=headers,
        )
        assert response.status_code == 200

    counts = [len(fake.requests()) for fake in fakes]
    assert sorted(counts) == [0, 0, 12]


def test_least_busy_sends_to_the_idle_deployment(gateway, three_upstreams):
    fakes = three_upstreams.fakes[:2]
    model = _model("busy", 2, "least-busy", w0=1000, w1=1)
    secret = _apply(_document(fakes, [model]))
    headers = {"Authorization": f"Bearer {secret}"}

    async def scenario() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:

            def send(tag: str):
                content = f"hold #gate={tag}" if tag else "go"
                return asyncio.create_task(
                    client.post(
                        gateway + "/v1/chat/completions",
                        json={"model": "busy", "messages": [{"role": "user", "content": content}]},
                        headers=headers,
                    )
                )

            held = [send("held")]
            await asyncio.to_thread(
                wait_until, lambda: sum(f.stats()["in_flight"] for f in fakes) == 1
            )
            busy = next(i for i, f in enumerate(fakes) if f.stats()["in_flight"] == 1)
            idle = 1 - busy
            free = await send("")
            held.append(send("held"))
            await asyncio.to_thread(wait_until, lambda: fakes[idle].stats()["in_flight"] == 1)
            for fake in fakes:
                fake.open_gate("held")
            done = await asyncio.gather(*held)
            return [free.status_code, *(r.status_code for r in done), busy, idle]

    *statuses, busy, idle = asyncio.run(scenario())
    assert statuses == [200, 200, 200]
    served = [[r["body"]["messages"][0]["content"] for r in f.requests()] for f in fakes]
    assert served[busy] == ["hold #gate=held"]
    assert sorted(served[idle]) == ["go", "hold #gate=held"]


def test_least_busy_counts_another_gateway_process(gateway, server_env, three_upstreams):
    fakes = three_upstreams.fakes[:2]
    secret = _apply(_document(fakes, [_model("busy-shared", 2, "least-busy")]))
    headers = {"Authorization": f"Bearer {secret}"}
    other = start_gateway(server_env, name="gateway-balance-2")
    second = f"http://127.0.0.1:{other.port}"
    try:

        def chat(url: str, content: str, client: httpx.Client) -> httpx.Response:
            return client.post(
                url + "/v1/chat/completions",
                json={"model": "busy-shared", "messages": [{"role": "user", "content": content}]},
                headers=headers,
                timeout=60,
            )

        with httpx.Client() as client:
            assert chat(second, "warm up", client).status_code == 200  # the board is in use

        async def scenario():
            async with httpx.AsyncClient(timeout=60) as client:
                held = asyncio.create_task(
                    client.post(
                        gateway + "/v1/chat/completions",
                        json={
                            "model": "busy-shared",
                            "messages": [{"role": "user", "content": "hold #gate=shared"}],
                        },
                        headers=headers,
                    )
                )
                await asyncio.to_thread(
                    wait_until, lambda: sum(f.stats()["in_flight"] for f in fakes) == 1
                )
                busy = next(i for i, f in enumerate(fakes) if f.stats()["in_flight"] == 1)
                label = f"bal-{busy}/busy-shared-{busy}"
                # The second process's own view, as its /metrics shows it.
                await asyncio.to_thread(
                    wait_until,
                    lambda: (
                        f'tollgate_deployment_in_flight{{deployment="{label}"}} 1.0'
                        in httpx.get(second + "/metrics").text
                    ),
                )
                with httpx.Client() as sync_client:
                    answers = [chat(second, f"free {n}", sync_client) for n in range(6)]
                fakes[busy].open_gate("shared")
                return busy, answers, await held

        busy, answers, held = asyncio.run(scenario())
    finally:
        other.stop()
    assert [a.status_code for a in answers] == [200] * 6
    assert held.status_code == 200
    free = [r for r in fakes[busy].requests() if r["body"]["messages"][0]["content"][:4] == "free"]
    assert free == []


def test_latency_prefers_the_faster_deployment(gateway):
    upstreams = Upstreams([150, 0])
    try:
        fakes = upstreams.fakes
        secret = _apply(_document(fakes, [_model("quick", 2, "latency", w0=1000, w1=1)]))
        headers = {"Authorization": f"Bearer {secret}"}
        with httpx.Client(timeout=60) as client:
            statuses = [
                client.post(
                    gateway + "/v1/chat/completions",
                    json={"model": "quick", "messages": [{"role": "user", "content": f"q{n}"}]},
                    headers=headers,
                ).status_code
                for n in range(12)
            ]
        counts = [len(f.requests()) for f in fakes]
    finally:
        upstreams.stop()
    assert statuses == [200] * 12
    assert counts == [1, 11]  # the slow one measured once, then avoided


def test_weighted_still_follows_the_weights(gateway, three_upstreams):
    fakes = three_upstreams.fakes[:2]
    secret = _apply(_document(fakes, [_model("plain", 2, "weighted", w0=1_000_000, w1=1)]))
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(timeout=60) as client:
        for n in range(20):
            response = client.post(
                gateway + "/v1/chat/completions",
                json={"model": "plain", "messages": [{"role": "user", "content": f"w{n}"}]},
                headers=headers,
            )
            assert response.status_code == 200
    assert [len(f.requests()) for f in fakes] == [20, 0]


def test_a_messages_callers_user_id_keeps_its_requests_together(gateway, three_upstreams):
    fakes = three_upstreams.fakes
    secret = _apply(_document(fakes, [_model("sticky-user", 3, "affinity", affinity_key="user")]))
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01"}

    for n in range(12):
        response = httpx.post(
            gateway + "/v1/messages",
            json={
                "model": "sticky-user",
                "max_tokens": 16,
                "metadata": {"user_id": "user-7"},
                "messages": [{"role": "user", "content": f"question {n}"}],
            },
            headers=headers,
        )
        assert response.status_code == 200

    counts = [len(fake.requests()) for fake in fakes]
    assert sorted(counts) == [0, 0, 12]
