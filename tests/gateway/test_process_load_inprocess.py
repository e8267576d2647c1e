"""A process's load: the upstream pool is never a hidden concurrency limit (a full pool
slows a request down, it does not fail it as an outage), and a process past its load
bound refuses new requests in the protocol's overload shape (OpenAI 503, Anthropic 529
``overloaded_error``, both with Retry-After), through the official SDKs' error classes.

The gateway app runs in process with its real upstream client, against the fake
upstream process ("#gate=NAME" holds a request there until the test opens the gate).
"""

import asyncio
import time
from collections.abc import Callable, Iterator

import anthropic
import openai
import pytest

from apps.catalog.models import Backend
from tests.gateway.conftest import forget_breakers
from tests.gateway.inprocess import BASE_URL, InProcessGateway

HELD = [{"role": "user", "content": "hold #gate=load"}]
PLAIN = [{"role": "user", "content": "hi"}]


@pytest.fixture
def make_gateway(seed, upstream, settings) -> Iterator[Callable[[], InProcessGateway]]:
    """The gateway app over the seed, made once the test has set its settings."""
    settings.LEDGER_STREAM = f"{settings.LEDGER_STREAM}:inprocess"
    forget_breakers()
    made: list[InProcessGateway] = []

    def make() -> InProcessGateway:
        made.append(InProcessGateway())
        return made[-1]

    yield make
    upstream.open_gate("load")  # nothing stays held if a test failed half-way
    for gateway in made:
        gateway.close()


def _openai(gateway: InProcessGateway, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key=secret, http_client=gateway.client, max_retries=0
    )


def _anthropic(gateway: InProcessGateway, secret: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=BASE_URL,
        api_key=secret,
        http_client=gateway.anthropic_http_client,
        max_retries=0,
    )


async def _stream_text(client: openai.AsyncOpenAI, messages: list[dict]) -> str:
    stream = await client.chat.completions.create(
        model="test-model", messages=messages, stream=True
    )
    parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    return "".join(parts)


async def _until_held(upstream, count: int = 1, patience_s: float = 15.0) -> None:
    """Until the fake upstream holds ``count`` requests."""
    deadline = time.monotonic() + patience_s
    # (read off the loop: a blocked loop would time out the connect under test)
    while (await asyncio.to_thread(upstream.stats))["in_flight"] < count:
        assert time.monotonic() < deadline, "the upstream never got the held request"
        await asyncio.sleep(0.01)


def test_the_upstream_pool_has_no_bound_by_default(make_gateway):
    gateway = make_gateway()

    async def pool_limit() -> int:
        return (await gateway.app.state()).upstream.session.connector.limit

    assert gateway.run(pool_limit()) == 0


def test_a_stream_waiting_for_a_full_pool_past_its_connect_timeout_is_served(
    make_gateway, seed, upstream, settings
):
    # One pooled connection (an operator's bound) and a connect timeout far shorter than
    # the wait for it: the wait is load, not an unreachable upstream.
    Backend.objects.filter(name="fake").update(connect_timeout_s=0.2)
    settings.GATEWAY_UPSTREAM_POOL_SIZE = 1
    gateway = make_gateway()
    client = _openai(gateway, seed.secret)

    async def scenario() -> tuple[bool, list[str]]:
        held = asyncio.create_task(_stream_text(client, HELD))
        await _until_held(upstream)
        queued = asyncio.create_task(_stream_text(client, PLAIN))
        done, _pending = await asyncio.wait([queued], timeout=1.0)  # 5× the timeout
        upstream.open_gate("load")
        return bool(done), await asyncio.gather(held, queued)

    finished_while_pool_full, texts = gateway.run(scenario())
    assert finished_while_pool_full is False
    assert all(texts), texts


def _refused_while_one_is_held(gateway: InProcessGateway, secret: str, upstream, call) -> Exception:
    """``call()``'s exception while the process holds one request at the fake upstream."""

    async def scenario() -> Exception:
        held = asyncio.create_task(_stream_text(_openai(gateway, secret), HELD))
        await _until_held(upstream)
        try:
            await call()
        except Exception as exc:  # noqa: BLE001 - the refusal is what the test reads
            return exc
        finally:
            upstream.open_gate("load")
            await held
        raise AssertionError("admitted past the process's bound")

    return gateway.run(scenario())


def test_past_the_in_flight_bound_openai_clients_get_a_503_overloaded(
    make_gateway, seed, upstream, settings
):
    settings.GATEWAY_MAX_IN_FLIGHT = 1
    gateway = make_gateway()
    client = _openai(gateway, seed.secret)
    error = _refused_while_one_is_held(
        gateway,
        seed.secret,
        upstream,
        lambda: client.chat.completions.create(model="test-model", messages=PLAIN),
    )
    assert isinstance(error, openai.InternalServerError), repr(error)
    assert error.status_code == 503
    assert error.code == "gateway_overloaded"
    assert error.type == "server_error"
    assert error.response.headers["retry-after"] == "1"


def test_past_the_in_flight_bound_anthropic_clients_get_a_529_overloaded_error(
    make_gateway, seed, upstream, settings
):
    settings.GATEWAY_MAX_IN_FLIGHT = 1
    gateway = make_gateway()
    client = _anthropic(gateway, seed.secret)
    error = _refused_while_one_is_held(
        gateway,
        seed.secret,
        upstream,
        lambda: client.messages.create(model="test-model", max_tokens=16, messages=PLAIN),
    )
    assert isinstance(error, anthropic.OverloadedError), repr(error)
    assert error.status_code == 529
    assert error.body["error"]["type"] == "overloaded_error"
    assert error.response.headers["retry-after"] == "1"


def test_a_stream_open_when_the_bound_is_reached_goes_on(make_gateway, seed, upstream, settings):
    settings.GATEWAY_MAX_IN_FLIGHT = 1
    gateway = make_gateway()

    async def scenario() -> str:
        held = asyncio.create_task(_stream_text(_openai(gateway, seed.secret), HELD))
        await _until_held(upstream)
        upstream.open_gate("load")
        return await held

    assert gateway.run(scenario())


def test_an_event_loop_running_late_refuses_new_requests(make_gateway, seed, settings):
    settings.GATEWAY_MAX_LOOP_LAG_MS = 100
    gateway = make_gateway()
    client = _openai(gateway, seed.secret)
    state = gateway.run(gateway.app.state())

    async def scenario() -> Exception:
        deadline = time.monotonic() + 10
        while state.load.lag_s < 0.1:  # until two lag probes in a row ran late
            assert time.monotonic() < deadline, "the lag probe never ran late"
            time.sleep(0.4)  # noqa: ASYNC251 - the loop held up: the overload simulated
            await asyncio.sleep(0.02)  # the probe runs (late), and is due in the next hold
        try:
            await client.chat.completions.create(model="test-model", messages=PLAIN)
        except openai.APIStatusError as exc:
            return exc
        raise AssertionError("admitted while the loop ran late")

    error = gateway.run(scenario())
    assert error.status_code == 503


def test_the_default_bound_is_taken_from_the_hard_open_file_limit():
    """A distribution's soft limit (1,024) would cap a process at a few hundred streams:
    the default bound raises the soft limit to the hard one first."""
    import subprocess
    import sys

    script = (
        "import resource\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))\n"
        "from apps.gateway.load import default_max_in_flight\n"
        "print(default_max_in_flight() == max((hard - 256) // 2, 64))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.stdout.strip() == "True"
