"""The circuit breaker per deployment and the deadlines, through a running gateway and the
fake upstream: what reaches each deployment is counted there (its requests by upstream
model; "#for=MODEL" steers one deployment only)."""

import threading
import time

import anthropic
import httpx
import openai
import pytest
import redis
from django.conf import settings

from apps.gateway.upstream.health import KEY_PREFIX
from tests.conftest import openai_client, seed_document, start_gateway, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("fresh_breakers")]

LONG_COOLDOWN_S = 30
PROBE_COOLDOWN_S = 1


def _backend(name: str, base_url: str, **extra) -> dict:
    return {"name": name, "kind": "openai", "base_url": base_url, "timeout_s": 10, **extra}


def _deployments(*pairs: tuple[str, str]) -> list[dict]:
    """(backend, upstream model) pairs, in the order they are tried (descending weight)."""
    weights = [10**6, 10**3, 1]
    return [
        {"backend": backend, "upstream_model": upstream_model, "weight": weights[i]}
        for i, (backend, upstream_model) in enumerate(pairs)
    ]


@pytest.fixture
def secret(transactional_db, upstream) -> str:
    """A key for the seed's models and these: duo (flaky-a, then steady-b), solo (flaky-a
    alone), probe (probing-a with a 1 s cool-down, then steady-b), ttft (silent-a with a
    0.5 s first-byte deadline, then steady-b), tight (three backends whose overall
    deadline is 1.2 s, each with a 0.5 s first-byte deadline)."""
    from apps.provisioning.services import config_apply

    base = upstream.base_url
    breaker = {"failures": 3, "cooldown_s": LONG_COOLDOWN_S}
    document = seed_document(base)
    document["backends"] += [
        _backend("flaky-a", base, breaker=breaker),
        _backend("steady-b", base, breaker=breaker),
        _backend("probing-a", base, breaker={"failures": 3, "cooldown_s": PROBE_COOLDOWN_S}),
        _backend("silent-a", base, first_byte_timeout_s=0.5, breaker=breaker),
        *(
            _backend(f"tight-{n}", base, timeout_s=1.2, first_byte_timeout_s=0.5)
            for n in ("x", "y", "z")
        ),
    ]
    price = document["models"][0]["prices"]
    models = {
        "duo": _deployments(("flaky-a", "dep-a"), ("steady-b", "dep-b")),
        "solo": _deployments(("flaky-a", "solo-a")),
        "probe": _deployments(("probing-a", "probe-a"), ("steady-b", "probe-b")),
        "ttft": _deployments(("silent-a", "ttft-a"), ("steady-b", "ttft-b")),
        "tight": _deployments(("tight-x", "t-x"), ("tight-y", "t-y"), ("tight-z", "t-z")),
    }
    document["models"] += [
        {"name": name, "prices": price, "deployments": deployments}
        for name, deployments in models.items()
    ]
    document["tenants"][0]["keys"][0]["models"] += list(models)
    result = config_apply(document=document)
    return next(k["secret"] for k in result.keys_created if k["name"] == "main")


def chat(gateway: str, secret: str, model: str, text: str, **extra) -> httpx.Response:
    return httpx.post(
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "messages": [{"role": "user", "content": text}], **extra},
        timeout=30,
    )


def reached(upstream, upstream_model: str) -> int:
    """Requests the fake upstream received for ``upstream_model`` (one deployment)."""
    return sum(1 for r in upstream.requests() if r["body"].get("model") == upstream_model)


def breaker_hash(upstream_model: str) -> dict[str, str]:
    from apps.catalog.models import Deployment

    deployment = Deployment.objects.get(upstream_model=upstream_model)
    raw = redis.Redis.from_url(settings.REDIS_URL).hgetall(f"{KEY_PREFIX}{deployment.id}")
    return {k.decode(): v.decode() for k, v in raw.items()}


def open_breaker(gateway: str, secret: str, model: str, upstream_model: str) -> None:
    """Three failures (the backends' breaker.failures) of that deployment."""
    for _ in range(3):
        chat(gateway, secret, model, f"#for={upstream_model} #status=503")


def breaker_gauge(gateway: str, label: str) -> float | None:
    prefix = f'tollgate_deployment_breaker_state{{deployment="{label}"}} '
    for line in httpx.get(gateway + "/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.removeprefix(prefix))
    return None


# -- opening and skipping ---------------------------------------------------------------


def test_failures_before_the_breaker_opens_are_served_by_the_next_deployment(
    gateway, secret, upstream
):
    answers = [chat(gateway, secret, "duo", "#for=dep-a #status=503") for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 200]


def test_the_breaker_opens_after_n_consecutive_failures(gateway, secret, upstream):
    open_breaker(gateway, secret, "duo", "dep-a")
    assert breaker_hash("dep-a")["state"] == "open"


def test_an_open_deployment_is_skipped(gateway, secret, upstream):
    open_breaker(gateway, secret, "duo", "dep-a")
    for _ in range(5):
        chat(gateway, secret, "duo", "#for=dep-a #status=503")
    assert reached(upstream, "dep-a") == 3


def test_requests_skipping_an_open_deployment_are_served(gateway, secret, upstream):
    open_breaker(gateway, secret, "duo", "dep-a")
    answer = chat(gateway, secret, "duo", "#for=dep-a #status=503")
    assert answer.status_code == 200


def test_an_open_breaker_rests_the_deployment_for_its_cooldown(gateway, secret, upstream):
    open_breaker(gateway, secret, "duo", "dep-a")
    rest_s = int(breaker_hash("dep-a")["until"]) / 1000 - time.time()
    assert LONG_COOLDOWN_S - 5 < rest_s <= LONG_COOLDOWN_S


def test_a_client_4xx_never_counts(gateway, secret, upstream):
    answers = [chat(gateway, secret, "duo", "#for=dep-a #status=400") for _ in range(5)]
    assert [a.status_code for a in answers] == [400] * 5
    assert reached(upstream, "dep-a") == 5
    assert breaker_hash("dep-a") == {}


def test_a_success_resets_the_count_of_consecutive_failures(gateway, secret, upstream):
    for _ in range(2):
        chat(gateway, secret, "duo", "#for=dep-a #status=503")
    chat(gateway, secret, "duo", "hi")
    for _ in range(2):
        chat(gateway, secret, "duo", "#for=dep-a #status=503")
    assert breaker_hash("dep-a")["state"] == "closed"


def log_size(process) -> int:
    return process.log_path.stat().st_size


def logged_since(process, offset: int) -> str:
    return process.log_path.read_bytes()[offset:].decode(errors="replace")


def test_the_opening_is_logged_once(gateway_process, gateway, secret, upstream):
    offset = log_size(gateway_process)
    open_breaker(gateway, secret, "duo", "dep-a")
    for _ in range(3):
        chat(gateway, secret, "duo", "#for=dep-a #status=503")
    logged = logged_since(gateway_process, offset)
    assert logged.count("breaker of deployment flaky-a/dep-a opened") == 1


# -- a 429 ------------------------------------------------------------------------------


def test_a_429_rests_the_deployment_for_its_retry_after(gateway, secret, upstream):
    chat(gateway, secret, "duo", "#for=dep-a #status=429 #retry_after=7")
    rest_s = int(breaker_hash("dep-a")["until"]) / 1000 - time.time()
    assert 5 < rest_s <= 7


def test_a_resting_deployment_is_skipped(gateway, secret, upstream):
    chat(gateway, secret, "duo", "#for=dep-a #status=429 #retry_after=7")
    for _ in range(3):
        chat(gateway, secret, "duo", "#for=dep-a #status=429 #retry_after=7")
    assert reached(upstream, "dep-a") == 1


def test_a_429_is_served_by_the_next_deployment(gateway, secret, upstream):
    answer = chat(gateway, secret, "duo", "#for=dep-a #status=429 #retry_after=7")
    assert answer.status_code == 200


# -- every deployment open --------------------------------------------------------------


def test_all_open_is_a_503_without_an_attempt(gateway, secret, upstream):
    open_breaker(gateway, secret, "solo", "solo-a")
    answer = chat(gateway, secret, "solo", "#for=solo-a #status=503")
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "upstream_resting"
    assert reached(upstream, "solo-a") == 3


def test_all_open_says_when_to_retry(gateway, secret, upstream):
    open_breaker(gateway, secret, "solo", "solo-a")
    answer = chat(gateway, secret, "solo", "hi")
    assert 1 <= int(answer.headers["retry-after"]) <= LONG_COOLDOWN_S


def test_all_open_is_a_503_in_the_openai_sdk(gateway, secret, upstream):
    open_breaker(gateway, secret, "solo", "solo-a")
    with pytest.raises(openai.InternalServerError) as exc:
        openai_client(gateway, secret).chat.completions.create(
            model="solo", messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.status_code == 503
    assert exc.value.code == "upstream_resting"


def test_all_open_is_a_503_on_the_messages_route(gateway, secret, upstream):
    open_breaker(gateway, secret, "solo", "solo-a")
    client = anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0)
    with pytest.raises(anthropic.InternalServerError) as exc:
        client.messages.create(
            model="solo", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        )
    assert exc.value.status_code == 503
    assert exc.value.body["type"] == "error"
    assert exc.value.body["error"]["type"] == "api_error"
    assert 1 <= int(exc.value.response.headers["retry-after"]) <= LONG_COOLDOWN_S


# -- half-open --------------------------------------------------------------------------


def _parallel(gateway: str, secret: str, count: int, text: str) -> list[httpx.Response]:
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda: answers.append(chat(gateway, secret, "probe", text)))
        for _ in range(count)
    ]
    for thread in threads:
        thread.start()
    return threads, answers


def test_half_open_lets_exactly_one_request_through(gateway, secret, upstream):
    open_breaker(gateway, secret, "probe", "probe-a")
    until_s = int(breaker_hash("probe-a")["until"]) / 1000
    wait_until(lambda: time.time() > until_s, timeout=PROBE_COOLDOWN_S + 2)
    threads, answers = _parallel(gateway, secret, 6, "#for=probe-a #gate=probe")
    # Five are served by probe-b while the probe is held at probe-a.
    wait_until(lambda: len(answers) == 5, timeout=15)
    assert reached(upstream, "probe-a") == 4
    assert breaker_hash("probe-a")["state"] == "half_open"
    upstream.open_gate("probe")
    for thread in threads:
        thread.join(15)
    assert [a.status_code for a in answers] == [200] * 6


def test_a_successful_probe_closes_the_breaker(gateway, secret, upstream):
    open_breaker(gateway, secret, "probe", "probe-a")
    until_s = int(breaker_hash("probe-a")["until"]) / 1000
    wait_until(lambda: time.time() > until_s, timeout=PROBE_COOLDOWN_S + 2)
    chat(gateway, secret, "probe", "hi")
    assert breaker_hash("probe-a") == {}


def test_a_failed_probe_reopens_the_breaker(gateway, secret, upstream):
    open_breaker(gateway, secret, "probe", "probe-a")
    until_s = int(breaker_hash("probe-a")["until"]) / 1000
    wait_until(lambda: time.time() > until_s, timeout=PROBE_COOLDOWN_S + 2)
    chat(gateway, secret, "probe", "#for=probe-a #status=503")
    assert breaker_hash("probe-a")["state"] == "open"
    assert int(breaker_hash("probe-a")["until"]) / 1000 > until_s


# -- two gateway processes --------------------------------------------------------------


@pytest.fixture
def second_gateway(server_env):
    process = start_gateway(server_env, name="gateway-b")
    yield f"http://127.0.0.1:{process.port}", process
    process.stop()


def test_two_gateways_agree_on_an_open_breaker_within_a_second(
    gateway, gateway_process, second_gateway, secret, upstream
):
    other, other_process = second_gateway
    assert chat(other, secret, "duo", "hi").status_code == 200  # its state started
    offsets = log_size(gateway_process), log_size(other_process)
    open_breaker(gateway, secret, "duo", "dep-a")
    opened = time.monotonic()
    wait_until(
        lambda: breaker_gauge(other, "flaky-a/dep-a") == 1.0,
        timeout=max(1.0 - (time.monotonic() - opened), 0.0),
        interval=0.02,
    )
    before = reached(upstream, "dep-a")
    for _ in range(5):
        chat(other, secret, "duo", "#for=dep-a #status=503")
    assert reached(upstream, "dep-a") == before
    logs = logged_since(gateway_process, offsets[0]) + logged_since(other_process, offsets[1])
    assert logs.count("breaker of deployment flaky-a/dep-a opened") == 1


# -- deadlines --------------------------------------------------------------------------


def test_a_silent_stream_moves_to_the_next_deployment_as_one_clean_stream(
    gateway, secret, upstream
):
    stream = openai_client(gateway, secret).chat.completions.create(
        model="ttft", messages=[{"role": "user", "content": "#for=ttft-a #silent"}], stream=True
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3 w4"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert reached(upstream, "ttft-a") == 1


def test_a_silent_non_stream_moves_to_the_next_deployment(gateway, secret, upstream):
    answer = chat(gateway, secret, "ttft", "#for=ttft-a #hang")
    assert answer.json()["choices"][0]["message"]["content"] == "w0 w1 w2 w3 w4"
    assert reached(upstream, "ttft-b") == 1


def test_the_overall_deadline_bounds_the_retries(gateway, secret, upstream):
    started = time.monotonic()
    answer = chat(gateway, secret, "tight", "#hang")
    elapsed = time.monotonic() - started
    assert answer.status_code == 504
    assert elapsed < 1.2 + 0.6
    assert reached(upstream, "t-z") == 1
