"""The caller's own upstream key through the official SDKs against a running gateway: the
openai SDK's ``extra_body={"openai_api_key": ...}`` (Telnyx's way) and
``default_headers``, the anthropic SDK's ``x-upstream-authorization``; the fake upstream
records what it received, the Celery worker writes the ledger."""

import contextlib

import anthropic
import openai
import pytest

from tests.conftest import openai_client, usage_record

pytestmark = pytest.mark.e2e

CALLER_KEY = "byok.Caller~Secret!42"
MESSAGES = [{"role": "user", "content": "hi"}]


def received_header(request: dict, name: str) -> str | None:
    found = [v for k, v in request["headers"].items() if k.lower() == name.lower()]
    return found[0] if found else None


def claude(gateway: str, secret: str, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0, **kwargs)


def test_openai_sdk_extra_body_reaches_the_upstream_as_its_credential(gateway, byok_seed, upstream):
    openai_client(gateway, byok_seed.secret).chat.completions.create(
        model="test-model", messages=MESSAGES, extra_body={"openai_api_key": CALLER_KEY}
    )
    [request] = upstream.requests()
    assert received_header(request, "Authorization") == f"Bearer {CALLER_KEY}"


def test_openai_sdk_extra_body_field_is_not_forwarded(gateway, byok_seed, upstream):
    openai_client(gateway, byok_seed.secret).chat.completions.create(
        model="test-model", messages=MESSAGES, extra_body={"openai_api_key": CALLER_KEY}
    )
    [request] = upstream.requests()
    assert "openai_api_key" not in request["body"]


def test_openai_sdk_default_header_reaches_the_upstream_as_its_credential(
    gateway, byok_seed, upstream
):
    client = openai.OpenAI(
        base_url=gateway + "/v1",
        api_key=byok_seed.secret,
        max_retries=0,
        default_headers={"x-upstream-authorization": f"Bearer {CALLER_KEY}"},
    )
    stream = client.chat.completions.create(model="test-model", messages=MESSAGES, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    [request] = upstream.requests()
    assert received_header(request, "Authorization") == f"Bearer {CALLER_KEY}"


def test_anthropic_sdk_header_reaches_the_upstream_as_x_api_key(gateway, byok_seed, upstream):
    client = claude(
        gateway, byok_seed.secret, default_headers={"x-upstream-authorization": CALLER_KEY}
    )
    message = client.messages.create(model="claude-fake", max_tokens=16, messages=MESSAGES)
    assert message.content[0].text
    [request] = upstream.requests()
    assert received_header(request, "x-api-key") == CALLER_KEY


def test_openai_sdk_caller_without_the_opt_in_gets_a_bad_request(gateway, byok_seed, upstream):
    with pytest.raises(openai.BadRequestError) as raised:
        openai_client(gateway, byok_seed.closed_secret).chat.completions.create(
            model="test-model", messages=MESSAGES, extra_body={"openai_api_key": CALLER_KEY}
        )
    assert raised.value.body["param"] == "openai_api_key"
    assert upstream.requests() == []


def test_anthropic_sdk_caller_without_the_opt_in_gets_a_bad_request(gateway, byok_seed, upstream):
    client = claude(
        gateway, byok_seed.closed_secret, default_headers={"x-upstream-authorization": CALLER_KEY}
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="claude-fake", max_tokens=16, messages=MESSAGES)
    assert upstream.requests() == []


def test_openai_sdk_sees_the_upstreams_refusal_of_its_key_without_the_key(gateway, byok_seed):
    with pytest.raises(openai.AuthenticationError) as raised:
        openai_client(gateway, byok_seed.secret).chat.completions.create(
            model="test-model",
            messages=[{"role": "user", "content": "#error=key"}],
            extra_body={"openai_api_key": CALLER_KEY},
        )
    assert CALLER_KEY not in raised.value.response.text


def test_the_ledger_marks_the_call_byok(gateway, byok_seed, celery_worker):
    raw = openai_client(gateway, byok_seed.secret).chat.completions.with_raw_response.create(
        model="test-model", messages=MESSAGES, extra_body={"openai_api_key": CALLER_KEY}
    )
    assert usage_record(raw.headers["x-request-id"]).byok is True


def test_the_gateways_log_holds_no_trace_of_the_key(gateway_process, gateway, byok_seed):
    client = openai_client(gateway, byok_seed.secret)
    for text in ("hi", "#error=key", "#error=leak"):
        with contextlib.suppress(openai.APIStatusError):
            client.chat.completions.create(
                model="test-model",
                messages=[{"role": "user", "content": text}],
                extra_body={"openai_api_key": CALLER_KEY},
            )
    assert CALLER_KEY not in gateway_process.log_path.read_text(errors="replace")
