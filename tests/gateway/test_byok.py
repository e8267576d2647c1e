"""The caller's own upstream key (BYOK), in process over the fake upstream process, which
records the headers and body of every request it receives.

A tenant and a backend both opt in (tests/gateway/conftest.py, ``byok_seed``): the key
travels in the body's ``openai_api_key`` (Telnyx's field) or the
``x-upstream-authorization`` header, reaches the upstream in place of the backend's
credential, and nowhere else: not in the forwarded body, not in any answer, log line,
usage event or ledger row.
"""

import logging
from decimal import Decimal

import orjson
import pytest
import redis
from django.conf import settings

from apps.catalog.models import Price
from apps.keys.models import ApiKey
from apps.keys.services import api_key_update
from apps.ledger.models import UsageRecord
from tests.gateway.inprocess import ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

# Dots, a tilde and a bang: no pattern of the scrubber matches it, only its exact string.
CALLER_KEY = "byok.Caller~Secret!42"
BACKEND_KEY = "upstream-secret"  # the seeded backend "fake"'s credential
ANTHROPIC_BACKEND_KEY = "anthropic-upstream-secret"

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
RESPONSES = "/v1/responses"
EMBEDDINGS = "/v1/embeddings"


def chat_body(text: str = "hi", model: str = "test-model", **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def messages_body(text: str = "hi", model: str = "claude-fake", **extra) -> dict:
    return {**chat_body(text, model), "max_tokens": 16, **extra}


def openai_headers(secret: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **extra}


def anthropic_headers(secret: str, **extra: str) -> dict[str, str]:
    return {"x-api-key": secret, "anthropic-version": "2023-06-01", **extra}


def post(gateway, path: str, body: dict, headers: dict[str, str]):
    return gateway.request("POST", path, content=orjson.dumps(body), headers=headers)


def received_header(request: dict, name: str) -> str | None:
    """A header of a request the fake upstream received (names case-insensitive)."""
    found = [v for k, v in request["headers"].items() if k.lower() == name.lower()]
    return found[0] if found else None


def only_request(upstream) -> dict:
    requests = upstream.requests()
    assert len(requests) == 1
    return requests[0]


# The upstream receives the caller's key, and the body without it ----------------------------


def test_chat_with_openai_api_key_sends_the_callers_key_upstream(byok_gateway, byok_seed, upstream):
    body = chat_body(openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 200
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_chat_with_openai_api_key_does_not_forward_the_field(byok_gateway, byok_seed, upstream):
    post(byok_gateway, CHAT, chat_body(openai_api_key=CALLER_KEY), openai_headers(byok_seed.secret))
    assert "openai_api_key" not in only_request(upstream)["body"]


def test_the_backends_own_credential_is_not_sent(byok_gateway, byok_seed, upstream):
    post(byok_gateway, CHAT, chat_body(openai_api_key=CALLER_KEY), openai_headers(byok_seed.secret))
    assert BACKEND_KEY not in orjson.dumps(only_request(upstream)).decode()


@pytest.mark.parametrize("value", [f"Bearer {CALLER_KEY}", CALLER_KEY, f"bearer  {CALLER_KEY} "])
def test_chat_with_the_header_sends_the_callers_key_upstream(
    byok_gateway, byok_seed, upstream, value
):
    headers = openai_headers(byok_seed.secret, **{"x-upstream-authorization": value})
    r = post(byok_gateway, CHAT, chat_body(), headers)
    assert r.status_code == 200
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_the_header_is_not_forwarded(byok_gateway, byok_seed, upstream):
    headers = openai_headers(byok_seed.secret, **{"x-upstream-authorization": CALLER_KEY})
    post(byok_gateway, CHAT, chat_body(), headers)
    assert received_header(only_request(upstream), "x-upstream-authorization") is None


def test_a_streamed_chat_sends_the_callers_key_upstream(byok_gateway, byok_seed, upstream):
    body = chat_body(stream=True, openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert b"data: [DONE]" in r.content
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_messages_to_an_anthropic_backend_send_the_key_as_x_api_key(
    byok_gateway, byok_seed, upstream
):
    headers = anthropic_headers(byok_seed.secret, **{"x-upstream-authorization": CALLER_KEY})
    r = post(byok_gateway, MESSAGES, messages_body(), headers)
    assert r.status_code == 200
    assert received_header(only_request(upstream), "x-api-key") == CALLER_KEY


def test_messages_with_openai_api_key_do_not_forward_the_field(byok_gateway, byok_seed, upstream):
    body = messages_body(openai_api_key=CALLER_KEY)
    post(byok_gateway, MESSAGES, body, anthropic_headers(byok_seed.secret))
    assert "openai_api_key" not in only_request(upstream)["body"]


def test_messages_translated_for_an_openai_backend_send_a_bearer_key(
    byok_gateway, byok_seed, upstream
):
    body = messages_body(model="test-model", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, MESSAGES, body, anthropic_headers(byok_seed.secret))
    assert r.status_code == 200
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_count_tokens_asks_the_upstream_with_the_callers_key(byok_gateway, byok_seed, upstream):
    body = chat_body(model="claude-fake", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, COUNT_TOKENS, body, anthropic_headers(byok_seed.secret))
    assert r.status_code == 200
    assert received_header(only_request(upstream), "x-api-key") == CALLER_KEY


def test_responses_send_the_callers_key_upstream(byok_gateway, byok_seed, upstream):
    body = {"model": "test-model", "input": "hi", "openai_api_key": CALLER_KEY}
    r = post(byok_gateway, RESPONSES, body, openai_headers(byok_seed.secret))
    assert r.status_code == 200
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_responses_do_not_forward_the_field(byok_gateway, byok_seed, upstream):
    body = {"model": "test-model", "input": "hi", "openai_api_key": CALLER_KEY}
    post(byok_gateway, RESPONSES, body, openai_headers(byok_seed.secret))
    assert "openai_api_key" not in only_request(upstream)["body"]


def test_embeddings_send_the_callers_key_upstream(byok_gateway, byok_seed, upstream):
    body = {"model": "test-model", "input": "hi", "openai_api_key": CALLER_KEY}
    r = post(byok_gateway, EMBEDDINGS, body, openai_headers(byok_seed.secret))
    assert r.status_code == 200
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {CALLER_KEY}"


def test_embeddings_do_not_forward_the_field(byok_gateway, byok_seed, upstream):
    body = {"model": "test-model", "input": "hi", "openai_api_key": CALLER_KEY}
    post(byok_gateway, EMBEDDINGS, body, openai_headers(byok_seed.secret))
    assert "openai_api_key" not in only_request(upstream)["body"]


def test_a_request_without_a_callers_key_still_uses_the_backends(byok_gateway, byok_seed, upstream):
    post(byok_gateway, CHAT, chat_body(), openai_headers(byok_seed.secret))
    assert received_header(only_request(upstream), "Authorization") == f"Bearer {BACKEND_KEY}"


# The opt-ins ---------------------------------------------------------------------------------


def test_a_tenant_without_the_opt_in_gets_a_400_naming_the_field(byok_gateway, byok_seed):
    body = chat_body(openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.closed_secret))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "openai_api_key"


def test_a_tenant_without_the_opt_in_sends_nothing_upstream(byok_gateway, byok_seed, upstream):
    body = chat_body(openai_api_key=CALLER_KEY)
    post(byok_gateway, CHAT, body, openai_headers(byok_seed.closed_secret))
    assert upstream.requests() == []


def test_a_tenant_without_the_opt_in_gets_a_400_naming_the_header(byok_gateway, byok_seed):
    headers = openai_headers(byok_seed.closed_secret, **{"x-upstream-authorization": CALLER_KEY})
    r = post(byok_gateway, CHAT, chat_body(), headers)
    assert r.json()["error"]["param"] == "x-upstream-authorization"


def test_a_tenant_without_the_opt_in_is_refused_in_anthropic_shape(
    byok_gateway, byok_seed, upstream
):
    headers = anthropic_headers(byok_seed.closed_secret, **{"x-upstream-authorization": CALLER_KEY})
    r = post(byok_gateway, MESSAGES, messages_body(), headers)
    assert r.status_code == 400
    assert r.json()["error"]["type"] == "invalid_request_error"
    assert "x-upstream-authorization" in r.json()["error"]["message"]
    assert upstream.requests() == []


def test_a_model_whose_backend_does_not_opt_in_is_a_400(byok_gateway, byok_seed, upstream):
    body = chat_body(model="llama-model", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "upstream_key_not_accepted"
    assert upstream.requests() == []


def test_the_same_model_without_a_callers_key_is_served(byok_gateway, byok_seed):
    r = post(byok_gateway, CHAT, chat_body(model="llama-model"), openai_headers(byok_seed.secret))
    assert r.status_code == 200


def test_failover_stays_among_the_deployments_that_accept_the_key(byok_gateway, byok_seed):
    # failover-model: "dead" (not opted in, weight 1000000) first, then "fake".
    body = chat_body(model="failover-model", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 200
    assert byok_gateway.usage_events()[-1].deployment == "fake/fake-failover"


# Hostile values --------------------------------------------------------------------------------

HOSTILE_FIELD_VALUES = [
    123,
    None,
    True,
    ["byok.Caller~Secret!42"],
    {"key": "byok.Caller~Secret!42"},
    "",
    "x" * 1025,
    "short",
    "byok key with spaces",
    "byok\nkey-newline",
    "byok\x00key-nul-char",
    "clé-non-ascii-é",
]


@pytest.mark.parametrize("value", HOSTILE_FIELD_VALUES)
def test_a_malformed_field_is_a_400_naming_it(byok_gateway, byok_seed, upstream, value):
    body = chat_body(openai_api_key=value)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "openai_api_key"
    assert upstream.requests() == []


@pytest.mark.parametrize("value", HOSTILE_FIELD_VALUES)
def test_a_malformed_field_on_messages_is_a_400_in_anthropic_shape(byok_gateway, byok_seed, value):
    body = messages_body(openai_api_key=value)
    r = post(byok_gateway, MESSAGES, body, anthropic_headers(byok_seed.secret))
    assert r.status_code == 400
    assert "openai_api_key" in r.json()["error"]["message"]


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer   ", "Basic dXNlcjpwYXNz", "x" * 1025])
def test_a_malformed_header_is_a_400_naming_it(byok_gateway, byok_seed, upstream, value):
    headers = openai_headers(byok_seed.secret, **{"x-upstream-authorization": value})
    r = post(byok_gateway, CHAT, chat_body(), headers)
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "x-upstream-authorization"
    assert upstream.requests() == []


def test_a_header_with_a_byte_beyond_ascii_is_a_400(byok_gateway, byok_seed):
    headers = [
        (b"authorization", f"Bearer {byok_seed.secret}".encode()),
        (b"x-upstream-authorization", "byok-clé-secrète".encode("latin-1")),
    ]
    r = byok_gateway.run(
        byok_gateway.client.post(CHAT, content=orjson.dumps(chat_body()), headers=headers)
    )
    assert r.json()["error"]["param"] == "x-upstream-authorization"


def test_a_repeated_header_is_a_400(byok_gateway, byok_seed, upstream):
    headers = [
        (b"authorization", f"Bearer {byok_seed.secret}".encode()),
        (b"x-upstream-authorization", CALLER_KEY.encode()),
        (b"x-upstream-authorization", b"another.Caller~Key!43"),
    ]
    r = byok_gateway.run(
        byok_gateway.client.post(CHAT, content=orjson.dumps(chat_body()), headers=headers)
    )
    assert r.json()["error"]["param"] == "x-upstream-authorization"
    assert upstream.requests() == []


def test_the_key_in_both_the_field_and_the_header_is_a_400(byok_gateway, byok_seed, upstream):
    headers = openai_headers(byok_seed.secret, **{"x-upstream-authorization": CALLER_KEY})
    r = post(byok_gateway, CHAT, chat_body(openai_api_key=CALLER_KEY), headers)
    assert r.status_code == 400
    assert upstream.requests() == []


def test_a_refusal_never_shows_the_value(byok_gateway, byok_seed):
    body = chat_body(openai_api_key="byok.Caller~Secret !42")
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert "Secret" not in r.text


# The secret is never echoed, logged or stored ----------------------------------------------------


def test_an_upstream_quoting_the_key_in_its_401_is_relayed_as_a_401(byok_gateway, byok_seed):
    body = chat_body("#error=key", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 401
    assert "Incorrect API key provided" in r.json()["error"]["message"]


def test_an_upstream_quoting_the_key_in_its_401_is_relayed_without_it(byok_gateway, byok_seed):
    body = chat_body("#error=key", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert CALLER_KEY not in r.text


def test_an_anthropic_upstream_quoting_the_key_is_relayed_without_it(byok_gateway, byok_seed):
    headers = anthropic_headers(byok_seed.secret, **{"x-upstream-authorization": CALLER_KEY})
    r = post(byok_gateway, MESSAGES, messages_body("#error=key"), headers)
    assert r.json()["error"]["type"] == "authentication_error"
    assert CALLER_KEY not in r.text


def test_a_streamed_refusal_quoting_the_key_is_relayed_without_it(byok_gateway, byok_seed):
    body = chat_body("#error=key", stream=True, openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 401
    assert CALLER_KEY not in r.text


def test_a_400_quoting_the_key_is_relayed_without_it(byok_gateway, byok_seed):
    body = chat_body("#error=leak", openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.status_code == 400
    assert CALLER_KEY not in r.text


def test_without_a_callers_key_a_401_is_still_the_gateways_problem(byok_gateway, byok_seed):
    r = post(byok_gateway, CHAT, chat_body("#error=key"), openai_headers(byok_seed.secret))
    assert r.status_code == 502


def requests_that_touch_the_key(gateway, seed) -> None:
    """A success, a refusal quoting the key, a stream and a malformed key, on each side."""
    openai = openai_headers(seed.secret)
    anthropic = anthropic_headers(seed.secret, **{"x-upstream-authorization": CALLER_KEY})
    post(gateway, CHAT, chat_body(openai_api_key=CALLER_KEY), openai)
    post(gateway, CHAT, chat_body("#error=key", openai_api_key=CALLER_KEY), openai)
    post(gateway, CHAT, chat_body(stream=True, openai_api_key=CALLER_KEY), openai)
    post(gateway, CHAT, chat_body(openai_api_key=CALLER_KEY + " x"), openai)
    post(gateway, MESSAGES, messages_body(), anthropic)
    post(gateway, MESSAGES, messages_body("#error=key"), anthropic)
    post(gateway, CHAT, chat_body(model="llama-model", openai_api_key=CALLER_KEY), openai)


def test_no_log_line_holds_the_key(byok_gateway, byok_seed, caplog):
    caplog.set_level(logging.DEBUG)
    requests_that_touch_the_key(byok_gateway, byok_seed)
    assert CALLER_KEY not in caplog.text


def test_no_usage_event_holds_the_key(byok_gateway, byok_seed):
    requests_that_touch_the_key(byok_gateway, byok_seed)
    client = redis.Redis.from_url(settings.REDIS_URL)
    entries = client.xrange(byok_gateway.usage_stream)
    client.close()
    raw = b"".join(fields[b"e"] for _id, fields in entries)
    assert len(entries) >= 7
    assert CALLER_KEY.encode() not in raw


def test_no_ledger_row_holds_the_key(byok_gateway, byok_seed):
    requests_that_touch_the_key(byok_gateway, byok_seed)
    ingest_usage()
    rows = list(UsageRecord.objects.values())
    assert len(rows) == 7
    assert CALLER_KEY not in orjson.dumps(rows, default=str).decode()


# The ledger -----------------------------------------------------------------------------------


def test_the_ledger_marks_a_call_with_the_callers_key_byok(byok_gateway, byok_seed):
    r = post(
        byok_gateway, CHAT, chat_body(openai_api_key=CALLER_KEY), openai_headers(byok_seed.secret)
    )
    ingest_usage()
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert record.byok is True


def test_the_ledger_marks_a_call_with_the_backends_key_not_byok(byok_gateway, byok_seed):
    r = post(byok_gateway, CHAT, chat_body(), openai_headers(byok_seed.secret))
    ingest_usage()
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert record.byok is False


PRICED = "hi #prompt_tokens=100 #completion_tokens=10"


def _byok_fee(percent: str = "5", fee: str = "0.001") -> None:
    # test-model: 1.00 in, 2.00 out per million; 100 + 10 tokens = 120 micro-units
    Price.objects.filter(model__name="test-model").update(
        byok_fee_percent=Decimal(percent), byok_request_fee=Decimal(fee)
    )


def _byok_record(gateway, secret: str) -> UsageRecord:
    r = post(gateway, CHAT, chat_body(PRICED, openai_api_key=CALLER_KEY), openai_headers(secret))
    ingest_usage()
    return UsageRecord.objects.get(request_id=r.headers["x-request-id"])


# The in-process gateway loads the catalog and keys at its first request, so the fixture
# may change them first.


def test_a_byok_call_costs_the_operator_nothing(byok_gateway, byok_seed):
    _byok_fee()
    assert _byok_record(byok_gateway, byok_seed.secret).cost == 0


def test_a_byok_call_is_priced_at_its_rule_byok_fee(byok_gateway, byok_seed):
    _byok_fee()
    # 5% of 120 micro-units = 6, plus the 1000 micro-unit fee
    assert _byok_record(byok_gateway, byok_seed.secret).price == Decimal("0.001006")


def test_a_byok_answer_shows_the_fee_as_its_cost(byok_gateway, byok_seed):
    _byok_fee()
    body = chat_body(PRICED, openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.secret))
    assert r.json()["usage"]["cost"] == "0.001006"


def test_a_byok_call_without_a_fee_is_free(byok_gateway, byok_seed):
    assert _byok_record(byok_gateway, byok_seed.secret).price == 0


def test_a_budget_counts_the_byok_fee(byok_gateway, byok_seed):
    _byok_fee(percent="0", fee="0.001")
    key = ApiKey.objects.get(tenant__name="acme", name="main")
    api_key_update(api_key=key, budget_amount=Decimal("0.0025"), budget_period="monthly")
    body = chat_body(PRICED, openai_api_key=CALLER_KEY)
    headers = openai_headers(byok_seed.secret)
    statuses = [post(byok_gateway, CHAT, body, headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]  # 0.001 each: a third would overspend 0.0025


def test_a_refused_key_is_recorded_with_its_model_and_no_cost(byok_gateway, byok_seed):
    body = chat_body(openai_api_key=CALLER_KEY)
    r = post(byok_gateway, CHAT, body, openai_headers(byok_seed.closed_secret))
    ingest_usage()
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert record.model == "test-model"
    assert record.outcome == "invalid_request"
    assert record.cost == 0
