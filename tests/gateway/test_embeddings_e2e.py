"""POST /v1/embeddings end to end: the official openai SDK → real server → fake
OpenAI-compatible upstream, metered into the ledger by a real Celery worker."""

from decimal import Decimal

import httpx
import openai
import pytest

from apps.moderation.services import content_policy_set
from apps.tenants.models import Tenant
from tests.conftest import openai_client, usage_record, wait_until

pytestmark = pytest.mark.e2e


def test_embeddings_through_the_sdk_are_metered(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).embeddings.with_raw_response.create(
        model="test-model", input=["hello big world", "second text"]
    )
    result = raw.parse()
    # the SDK asked for base64 and decoded it
    assert [d.embedding for d in result.data] == [[0.5, -0.25, 0.0], [0.5, -0.25, 1.0]]
    assert result.model == "test-model" and result.usage.prompt_tokens == 5
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/embeddings"
    assert sent["body"]["model"] == "fake-upstream-model"
    assert sent["body"]["encoding_format"] == "base64"
    record = usage_record(raw.headers["x-request-id"])
    assert record.endpoint == "embeddings" and record.status == 200
    assert (record.prompt_tokens, record.completion_tokens) == (5, 0)
    assert not record.tokens_estimated
    assert record.cost == Decimal("0.000005")  # 5 tokens at $1.00 per million


def test_embeddings_input_shapes_and_float_vectors(gateway, seed, upstream):
    api = openai_client(gateway, seed.secret)
    one = api.embeddings.create(model="tm", input="just one", encoding_format="float")
    assert one.data[0].embedding == [0.5, -0.25, 0.0] and one.usage.prompt_tokens == 2
    tokens = api.embeddings.create(model="test-model", input=[1, 2, 3])
    assert len(tokens.data) == 1 and tokens.usage.prompt_tokens == 3
    batches = api.embeddings.create(model="test-model", input=[[1, 2], [3]])
    assert len(batches.data) == 2


def test_embeddings_without_upstream_usage_are_estimated(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).embeddings.with_raw_response.create(
        model="test-model", input="twelve bytes #no_usage"
    )
    assert raw.parse().usage.prompt_tokens > 0
    record = usage_record(raw.headers["x-request-id"])
    assert record.tokens_estimated and record.prompt_tokens == raw.parse().usage.prompt_tokens


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "test-model"}, "input"),
        ({"model": "test-model", "input": ""}, "input"),
        ({"model": "test-model", "input": []}, "input"),
        ({"model": "test-model", "input": ["ok", ""]}, "input"),
        ({"model": "test-model", "input": [[]]}, "input"),
        ({"model": "test-model", "input": [{"text": "x"}]}, "input"),
        ({"model": "test-model", "input": ["x"] * 2049}, "input"),
        ({"model": "test-model", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "test-model", "input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x"}, "model"),
    ],
)
def test_bad_embeddings_requests_are_openai_400s(gateway, seed, upstream, body, param):
    response = httpx.post(
        gateway + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {seed.secret}"}
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert upstream.requests() == []


def test_embeddings_of_a_model_without_an_openai_deployment(gateway, seed, upstream):
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(gateway, seed.secret).embeddings.create(model="claude-fake", input="hi")
    assert caught.value.code == "model_not_supported"
    with pytest.raises(openai.NotFoundError):
        openai_client(gateway, seed.secret).embeddings.create(model="no-such-model", input="hi")


def test_a_blocked_prompt_is_never_embedded(gateway, seed, upstream):
    tenant = Tenant.objects.get(name="acme")
    content_policy_set(tenant=tenant, policy={"violence": {"prompt": "block"}})
    api = openai_client(gateway, seed.secret)
    wait_until(lambda: _blocked(api))
    seen = len(upstream.requests())
    assert _blocked(api) and len(upstream.requests()) == seen  # the upstream never saw it
    benign = api.embeddings.create(model="test-model", input="kill the stuck process")
    assert len(benign.data) == 1


def _blocked(api: openai.OpenAI) -> bool:
    try:
        api.embeddings.create(model="test-model", input="I am going to kill you")
    except openai.BadRequestError as exc:
        return exc.code == "content_filter"
    return False
