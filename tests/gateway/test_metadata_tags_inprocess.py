"""Tags from a body's ``metadata`` object, on the routes whose upstream takes no such
object of tags: OpenAI chat completions without ``store: true``, embeddings, and the
keys of Anthropic Messages' ``metadata`` besides ``user_id``. They are checked as the
header's tags, merged under the header's (the header wins for a key both name) over the
key's default tags, recorded on the ledger row, and taken off the body before it is
forwarded. Hostile values are a 400 in the protocol's shape naming ``metadata.<key>``."""

import orjson
import pytest

from apps.keys.services import api_key_issue
from apps.ledger.models import UsageRecord
from apps.tenants.models import Tenant
from tests.gateway.inprocess import InProcessGateway, ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

MODELS = ["test-model", "claude-fake"]
HOSTILE = "=cmd|' /C calc'!A0"


def issue(tenant: Tenant, **fields) -> str:
    return api_key_issue(tenant=tenant, name="k", allowed_models=MODELS, **fields)[1]


def chat(gw: InProcessGateway, secret: str, headers=None, **body):
    return gw.request(
        "POST",
        "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}", **(headers or {})},
        content=orjson.dumps(
            {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], **body}
        ),
    )


def embed(gw: InProcessGateway, secret: str, **body):
    return gw.request(
        "POST",
        "/v1/embeddings",
        headers={"Authorization": f"Bearer {secret}"},
        content=orjson.dumps({"model": "test-model", "input": "hello", **body}),
    )


def message(gw: InProcessGateway, secret: str, model: str = "claude-fake", headers=None, **body):
    return gw.request(
        "POST",
        "/v1/messages",
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01", **(headers or {})},
        content=orjson.dumps(
            {
                "model": model,
                "max_tokens": 16,
                "messages": [{"role": "user", "content": "hi"}],
                **body,
            }
        ),
    )


def record(response) -> UsageRecord:
    assert response.status_code == 200, response.content
    ingest_usage()
    return UsageRecord.objects.get(request_id=response.headers["x-request-id"])


def forwarded(upstream) -> dict:
    return upstream.requests()[-1]["body"]


# Chat completions -------------------------------------------------------------------------


def test_chat_metadata_is_recorded_as_tags(gw, acme):
    response = chat(gw, issue(acme), metadata={"team": "web", "env": "prod"})
    assert record(response).tags == {"team": "web", "env": "prod"}


def test_chat_metadata_is_not_forwarded(gw, acme, upstream):
    chat(gw, issue(acme), metadata={"team": "web"})
    assert "metadata" not in forwarded(upstream)


def test_chat_metadata_with_store_is_the_upstreams_and_forwarded_untouched(gw, acme, upstream):
    chat(gw, issue(acme), store=True, metadata={"purpose": "eval run 3"})
    assert forwarded(upstream)["metadata"] == {"purpose": "eval run 3"}


def test_chat_metadata_with_store_is_not_read_as_tags(gw, acme):
    response = chat(gw, issue(acme), store=True, metadata={"purpose": "eval run 3"})
    assert record(response).tags is None


def test_the_header_wins_over_metadata_for_a_key_both_name(gw, acme):
    response = chat(
        gw, issue(acme), headers={"x-tollgate-tags": "env:staging"}, metadata={"env": "prod"}
    )
    assert record(response).tags == {"env": "staging"}


def test_metadata_header_and_default_tags_merge(gw, acme):
    secret = issue(acme, default_tags={"team": "core", "env": "prod"})
    response = chat(
        gw, secret, headers={"x-tollgate-tags": "feature:chat"}, metadata={"team": "web"}
    )
    assert record(response).tags == {"team": "web", "env": "prod", "feature": "chat"}


def test_metadata_tags_with_the_headers_beyond_ten_are_a_400(gw, acme):
    header = ",".join(f"h{n}:v" for n in range(6))
    response = chat(
        gw,
        issue(acme),
        headers={"x-tollgate-tags": header},
        metadata={f"m{n}": "v" for n in range(5)},
    )
    assert (response.status_code, response.json()["error"]["param"]) == (400, "metadata")


@pytest.mark.parametrize(
    ("metadata", "param"),
    [
        ({"team": HOSTILE}, "metadata.team"),
        ({"team": "x" * 10_240}, "metadata.team"),
        ({"team": "a\x00b"}, "metadata.team"),
        ({"team": "a b"}, "metadata.team"),
        ({"x" * 10_240: "v"}, "metadata"),
        ({"=cmd|": "v"}, "metadata"),
        ({"\u2028": "v"}, "metadata"),
        ({f"k{n}": "v" for n in range(11)}, "metadata"),
    ],
)
def test_hostile_chat_metadata_is_a_400_naming_the_field(gw, acme, metadata, param):
    response = chat(gw, issue(acme), metadata=metadata)
    assert (response.status_code, response.json()["error"]["param"]) == (400, param)


def test_hostile_chat_metadata_is_an_openai_invalid_request_error(gw, acme):
    response = chat(gw, issue(acme), metadata={"team": HOSTILE})
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_hostile_chat_metadata_never_reaches_the_upstream(gw, acme, upstream):
    chat(gw, issue(acme), metadata={"team": HOSTILE})
    assert upstream.requests() == []


# Embeddings -------------------------------------------------------------------------------


def test_embeddings_metadata_is_recorded_as_tags(gw, acme):
    assert record(embed(gw, issue(acme), metadata={"team": "search"})).tags == {"team": "search"}


def test_embeddings_metadata_is_not_forwarded(gw, acme, upstream):
    embed(gw, issue(acme), metadata={"team": "search"})
    assert "metadata" not in forwarded(upstream)


def test_hostile_embeddings_metadata_is_a_400(gw, acme):
    response = embed(gw, issue(acme), metadata={"team": HOSTILE})
    assert (response.status_code, response.json()["error"]["param"]) == (400, "metadata.team")


# Anthropic Messages -----------------------------------------------------------------------


def test_messages_metadata_keys_besides_user_id_are_tags(gw, acme):
    response = message(gw, issue(acme), metadata={"user_id": "u-1", "team": "web"})
    assert record(response).tags == {"team": "web"}


def test_messages_metadata_user_id_stays_the_end_user(gw, acme):
    response = message(gw, issue(acme), metadata={"user_id": "u-1", "team": "web"})
    assert record(response).end_user == "u-1"


def test_messages_forwards_only_user_id_to_an_anthropic_backend(gw, acme, upstream):
    message(gw, issue(acme), metadata={"user_id": "u-1", "team": "web"})
    assert forwarded(upstream)["metadata"] == {"user_id": "u-1"}


def test_messages_with_only_tags_forwards_no_metadata(gw, acme, upstream):
    message(gw, issue(acme), metadata={"team": "web"})
    assert "metadata" not in forwarded(upstream)


def test_messages_translated_for_an_openai_backend_carry_no_tags(gw, acme, upstream):
    message(gw, issue(acme), model="test-model", metadata={"user_id": "u-1", "team": "web"})
    assert "metadata" not in forwarded(upstream)


def test_hostile_messages_metadata_is_a_400_in_anthropic_shape(gw, acme):
    response = message(gw, issue(acme), metadata={"team": HOSTILE})
    assert (response.status_code, response.json()["error"]["type"]) == (
        400,
        "invalid_request_error",
    )


def test_hostile_messages_metadata_names_the_field(gw, acme):
    response = message(gw, issue(acme), metadata={"team": HOSTILE})
    assert "metadata.team" in response.json()["error"]["message"]


def test_messages_tags_and_the_header_merge(gw, acme):
    response = message(
        gw, issue(acme), headers={"x-tollgate-tags": "env:dev"}, metadata={"team": "web"}
    )
    assert record(response).tags == {"team": "web", "env": "dev"}
