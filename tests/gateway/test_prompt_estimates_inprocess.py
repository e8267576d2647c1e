"""The drift of prompt estimates, in process (apps/gateway/estimates.py): what the upstream
reported over what the gateway estimated goes into a per-model histogram, and once a
model has enough observations its TPM reservations scale by the observed ratio, within
[1, PROMPT_ESTIMATE_SCALE_MAX] and never past the prompt bound.

What a client sees of a reservation: ``x-ratelimit-remaining-tokens`` on the first request
of a fresh key with a TPM limit is the limit less that request's reservation (prompt +
max_tokens), and a reservation over the limit is a 429. Each gateway made here is a new
process's state: it has observed nothing.
"""

from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from django.conf import settings as django_settings
from prometheus_client import REGISTRY

from apps.gateway.protocol.bounds import DEFAULT_TOKEN_BOUNDS
from apps.gateway.protocol.openai import chat_prompt_bound, estimate_prompt_tokens
from tests.gateway.inprocess import InProcessGateway, ScriptedAnswer

# The rows are the module's scripted seed and keys, committed; the tests write none.
pytestmark = pytest.mark.django_db

MODEL = "test-model"
MAX_TOKENS = 50
TPM = 1_000_000
MIN_OBSERVATIONS = 5
SHORT = {"model": MODEL, "max_tokens": MAX_TOKENS, "messages": [{"role": "user", "content": "hi"}]}
# Code: what the 4-bytes-a-token estimate undercounts.
LONG = {
    "model": MODEL,
    "max_tokens": MAX_TOKENS,
    "messages": [{"role": "user", "content": "def f(x):\n    return {'x': [x, x]}\n" * 100}],
}
ESTIMATE = estimate_prompt_tokens(SHORT)


@pytest.fixture(autouse=True)
def _few_observations(settings) -> None:
    """Scaling starts after MIN_OBSERVATIONS here (the state reads it when it is made)."""
    settings.PROMPT_ESTIMATE_MIN_OBSERVATIONS = MIN_OBSERVATIONS


# A key per test that needs one, each with the TPM limit given: its first request's
# reservation is then all the key has used.
FITS_RAW_ONLY = 2 * ESTIMATE + MAX_TOKENS - 1
TPM_KEYS = {
    "fresh": TPM,
    "few": TPM,
    "twice": TPM,
    "capped": TPM,
    "setting": TPM,
    "under": TPM,
    "bound": TPM,
    "low-minimum": TPM,
    "high-minimum": TPM,
    "raw-fits": FITS_RAW_ONLY,
    "scaled-does-not": FITS_RAW_ONLY,
}


@pytest.fixture(scope="module")
def tpm_keys(scripted_seed, django_db_blocker) -> Iterator[dict[str, str]]:
    """``tpm_keys[name]``: the secret of a key of TPM_KEYS, of the seeded tenant, for MODEL
    (issued and committed before the tests' transactions: the gateway reads keys on a
    thread of its own). Their counters in Redis are removed at the end: key ids start
    again at 1 in the next module."""
    from apps.keys.services import api_key_issue
    from apps.tenants.models import Tenant

    secrets, ids = {}, []
    with django_db_blocker.unblock():
        tenant = Tenant.objects.get(name=scripted_seed.tenant_name)
        for name, tpm in TPM_KEYS.items():
            key, secrets[name] = api_key_issue(
                tenant=tenant, name=f"tpm-{name}", allowed_models=[MODEL], tpm=tpm
            )
            ids.append(key.id)
    yield secrets
    client = redis.Redis.from_url(django_settings.REDIS_URL)
    for key_id in ids:
        stale = list(client.scan_iter(f"tg:lim:k:{key_id}:*"))
        if stale:
            client.delete(*stale)
    client.close()


def reporting(prompt_tokens: int | None) -> Callable:
    """An upstream handler answering every chat completion with that many prompt tokens
    reported (None: no usage object)."""
    answer = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1767225600,
        "model": "fake-upstream-model",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
        ],
    }
    if prompt_tokens is not None:
        answer["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": 1,
            "total_tokens": prompt_tokens + 1,
        }
    body = orjson.dumps(answer)
    return lambda deployment, path, request: ScriptedAnswer(body=body)


def post(gateway: InProcessGateway, secret: str, body: dict):
    return gateway.request(
        "POST",
        "/v1/chat/completions",
        content=orjson.dumps(body),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )


def train(gateway: InProcessGateway, secret: str, count: int, body: dict = SHORT) -> None:
    for _ in range(count):
        assert post(gateway, secret, body).status_code == 200


def remaining_tokens(gateway: InProcessGateway, secret: str, body: dict = SHORT) -> int:
    response = post(gateway, secret, body)
    assert response.status_code == 200, response.text
    return int(response.headers["x-ratelimit-remaining-tokens"])


def ratio_sample(suffix: str, model: str = MODEL, **labels: str) -> float:
    value = REGISTRY.get_sample_value(
        f"tollgate_prompt_estimate_ratio{suffix}", {"model": model, **labels}
    )
    return value or 0.0


# --- the histogram ----------------------------------------------------------------------


def test_each_reported_prompt_is_observed_as_its_ratio_to_the_estimate(
    scripted_gateway, scripted_seed
):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    count, total = ratio_sample("_count"), ratio_sample("_sum")
    train(gateway, scripted_seed.secret, 3)
    assert ratio_sample("_count") - count == 3
    assert ratio_sample("_sum") - total == pytest.approx(6.0)


def test_a_ratio_of_two_falls_in_the_bucket_up_to_two(scripted_gateway, scripted_seed):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    below = ratio_sample("_bucket", le="1.75")
    upto = ratio_sample("_bucket", le="2.0")
    train(gateway, scripted_seed.secret, 1)
    assert ratio_sample("_bucket", le="1.75") == below
    assert ratio_sample("_bucket", le="2.0") == upto + 1


def test_an_answer_without_usage_is_not_observed(scripted_gateway, scripted_seed):
    gateway = scripted_gateway(reporting(None))
    count = ratio_sample("_count")
    train(gateway, scripted_seed.secret, 2)
    assert ratio_sample("_count") == count


def test_a_model_outside_the_catalog_gets_no_series(scripted_gateway, scripted_seed):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    response = post(gateway, scripted_seed.secret, {**SHORT, "model": "not-in-the-catalog"})
    assert response.status_code == 404
    assert (
        REGISTRY.get_sample_value(
            "tollgate_prompt_estimate_ratio_count", {"model": "not-in-the-catalog"}
        )
        is None
    )


# --- the reservation --------------------------------------------------------------------


def test_a_fresh_process_reserves_the_raw_estimate(scripted_gateway, tpm_keys):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    assert remaining_tokens(gateway, tpm_keys["fresh"]) == TPM - ESTIMATE - MAX_TOKENS


def test_fewer_observations_than_the_minimum_leave_the_estimate_raw(
    scripted_gateway, scripted_seed, tpm_keys
):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS - 1)
    assert remaining_tokens(gateway, tpm_keys["few"]) == TPM - ESTIMATE - MAX_TOKENS


def test_prompts_reported_at_twice_the_estimate_reserve_twice_the_estimate(
    scripted_gateway, scripted_seed, tpm_keys
):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    assert remaining_tokens(gateway, tpm_keys["twice"]) == TPM - 2 * ESTIMATE - MAX_TOKENS


def test_the_scale_stops_at_its_maximum(scripted_gateway, scripted_seed, tpm_keys):
    gateway = scripted_gateway(reporting(3 * ESTIMATE))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    assert remaining_tokens(gateway, tpm_keys["capped"]) == TPM - 2 * ESTIMATE - MAX_TOKENS


def test_the_maximum_is_a_setting(scripted_gateway, scripted_seed, tpm_keys, settings):
    settings.PROMPT_ESTIMATE_SCALE_MAX = "1.5"
    gateway = scripted_gateway(reporting(3 * ESTIMATE))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    reserved = -(-ESTIMATE * 3 // 2)  # rounded up
    assert remaining_tokens(gateway, tpm_keys["setting"]) == TPM - reserved - MAX_TOKENS


def test_prompts_reported_under_the_estimate_still_reserve_the_estimate(
    scripted_gateway, scripted_seed, tpm_keys
):
    gateway = scripted_gateway(reporting(ESTIMATE // 2))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    assert remaining_tokens(gateway, tpm_keys["under"]) == TPM - ESTIMATE - MAX_TOKENS


def test_a_scaled_reservation_never_passes_the_prompt_bound(
    scripted_gateway, scripted_seed, tpm_keys, settings
):
    # A short prompt reported at its bound is a ratio of about 70 (the chat template's
    # allowance); a long prompt scaled by it would pass its own bound.
    settings.PROMPT_ESTIMATE_SCALE_MAX = "100"
    short_bound = chat_prompt_bound(SHORT, DEFAULT_TOKEN_BOUNDS)
    long_bound = chat_prompt_bound(LONG, DEFAULT_TOKEN_BOUNDS)
    assert estimate_prompt_tokens(LONG) * short_bound // ESTIMATE > long_bound
    gateway = scripted_gateway(reporting(short_bound))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    assert remaining_tokens(gateway, tpm_keys["bound"], LONG) == TPM - long_bound - MAX_TOKENS


def test_a_key_admits_what_the_raw_estimate_fits_until_the_drift_is_known(
    scripted_gateway, scripted_seed, tpm_keys
):
    gateway = scripted_gateway(reporting(2 * ESTIMATE))
    assert post(gateway, tpm_keys["raw-fits"], SHORT).status_code == 200
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    refused = post(gateway, tpm_keys["scaled-does-not"], SHORT)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "tokens"


def test_a_minimum_below_one_is_held_at_one(scripted_gateway, scripted_seed, tpm_keys, settings):
    settings.PROMPT_ESTIMATE_SCALE_MIN = "0.5"
    gateway = scripted_gateway(reporting(ESTIMATE // 2))
    train(gateway, scripted_seed.secret, MIN_OBSERVATIONS)
    assert remaining_tokens(gateway, tpm_keys["low-minimum"]) == TPM - ESTIMATE - MAX_TOKENS


def test_a_minimum_above_one_scales_from_the_first_request(scripted_gateway, tpm_keys, settings):
    settings.PROMPT_ESTIMATE_SCALE_MIN = "1.25"
    gateway = scripted_gateway(reporting(ESTIMATE))
    reserved = -(-ESTIMATE * 5 // 4)  # rounded up
    assert remaining_tokens(gateway, tpm_keys["high-minimum"]) == TPM - reserved - MAX_TOKENS


def test_a_streams_reported_prompt_is_observed(scripted_gateway, scripted_seed):
    usage = {"prompt_tokens": 2 * ESTIMATE, "completion_tokens": 1, "total_tokens": 0}
    chunk = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    stream = [
        b"data: " + orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {"content": "ok"}}]}),
        b"data: " + orjson.dumps({**chunk, "choices": [], "usage": usage}),
        b"data: [DONE]",
    ]
    gateway = scripted_gateway(
        lambda deployment, path, request: ScriptedAnswer(chunks=[c + b"\n\n" for c in stream])
    )
    count, total = ratio_sample("_count"), ratio_sample("_sum")
    train(gateway, scripted_seed.secret, 1, {**SHORT, "stream": True})
    assert ratio_sample("_count") - count == 1
    assert ratio_sample("_sum") - total == pytest.approx(2.0)
