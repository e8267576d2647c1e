"""Every documented error with its status and OpenAI shape, and no 5xx for hostile input."""

from datetime import timedelta

import httpx
import openai
import pytest
from django.utils import timezone

from apps.keys.models import ApiKey
from apps.keys.services import api_key_revoke, api_key_update
from apps.ledger.models import UsageRecord
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e


def post(gateway: str, body, headers=None, path="/v1/chat/completions") -> httpx.Response:
    data = body if isinstance(body, bytes) else None
    return httpx.post(
        gateway + path,
        headers=headers or {},
        content=data,
        json=None if data is not None else body,
        timeout=30,
    )


def auth(secret: str) -> dict:
    return {"Authorization": f"Bearer {secret}"}


def assert_openai_error(r: httpx.Response, status: int, code=None, param=None, error_type=None):
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    if error_type is not None:
        assert error["type"] == error_type
    assert "Traceback" not in r.text
    assert r.headers["x-request-id"]
    return error


VALID = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}


def test_missing_and_invalid_keys_are_401(gateway, seed):
    assert_openai_error(post(gateway, VALID), 401, code="invalid_api_key")
    r = post(gateway, VALID, auth("tg-not-a-real-key-at-all-xxxxxxxxxxxxxxx"))
    error = assert_openai_error(r, 401, code="invalid_api_key")
    assert "not-a-real-key" not in error["message"]
    assert_openai_error(post(gateway, VALID, {"Authorization": "Basic abc"}), 401)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway + "/v1", api_key="tg-wrong", max_retries=0).models.list()


def test_revocation_takes_effect_within_a_second(gateway, seed, upstream):
    assert post(gateway, VALID, auth(seed.secret)).status_code == 200
    api_key_revoke(api_key=ApiKey.objects.get(name="main"))
    r = wait_until(
        lambda: (resp := post(gateway, VALID, auth(seed.secret))).status_code == 401 and resp,
        timeout=1.0,
    )
    assert "revoked" in r.json()["error"]["message"]


def test_expired_key_is_401(gateway, seed):
    key = ApiKey.objects.get(name="main")
    api_key_update(api_key=key, expires_at=timezone.now() - timedelta(seconds=1))
    r = wait_until(
        lambda: (resp := post(gateway, VALID, auth(seed.secret))).status_code == 401 and resp,
        timeout=1.0,
    )
    assert "expired" in r.json()["error"]["message"]


def test_allowlist_edit_takes_effect_within_a_second(gateway, seed, upstream):
    key = ApiKey.objects.get(name="restricted")
    assert post(gateway, VALID, auth(seed.restricted_secret)).status_code == 403
    api_key_update(api_key=key, allowed_models=["test-model"])
    wait_until(
        lambda: post(gateway, VALID, auth(seed.restricted_secret)).status_code == 200, timeout=1.0
    )


def test_model_not_on_allowlist_is_403_naming_it(gateway, seed):
    r = post(gateway, VALID, auth(seed.restricted_secret))
    error = assert_openai_error(r, 403, param="model")
    assert "test-model" in error["message"]


def test_key_with_empty_allowlist_may_use_nothing(gateway, seed):
    api_key_update(api_key=ApiKey.objects.get(name="restricted"), allowed_models=[])
    wait_until(
        lambda: (
            post(
                gateway, {**VALID, "model": "other-model"}, auth(seed.restricted_secret)
            ).status_code
            == 403
        ),
        timeout=1.0,
    )


def test_unknown_model_is_404(gateway, seed):
    r = post(gateway, {**VALID, "model": "nope"}, auth(seed.secret))
    assert_openai_error(r, 404, code="model_not_found")
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(
            base_url=gateway + "/v1", api_key=seed.secret, max_retries=0
        ).chat.completions.create(model="nope", messages=VALID["messages"])


@pytest.mark.parametrize(
    "body,param",
    [
        (b"{not json", None),
        (b"", None),
        (b"[1,2]", None),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({"model": "test-model"}, "messages"),
        ({"model": "test-model", "messages": []}, "messages"),
        ({"model": "test-model", "messages": "hi"}, "messages"),
        ({"model": 5, "messages": [{"role": "user", "content": "hi"}]}, "model"),
        ({**VALID, "stream": "yes"}, "stream"),
        ({**VALID, "n": "2"}, "n"),
        ({**VALID, "max_tokens": -1}, "max_tokens"),
        ({**VALID, "temperature": "hot"}, "temperature"),
        ({**VALID, "stream_options": {"include_usage": True}}, "stream_options"),
        (
            {"model": "test-model", "messages": [{"role": "wizard", "content": "hi"}]},
            "messages.[0].role",
        ),
        ({"model": "test-model", "messages": [42]}, "messages.[0]"),
    ],
)
def test_malformed_bodies_are_400(gateway, seed, body, param):
    assert_openai_error(
        post(gateway, body, auth(seed.secret)), 400, param=param, error_type="invalid_request_error"
    )


def test_body_over_the_limit_is_413(gateway, seed):
    huge = (
        b'{"model":"test-model","messages":[{"role":"user","content":"'
        + b"a" * (11 * 1024 * 1024)
        + b'"}]}'
    )
    assert_openai_error(post(gateway, huge, auth(seed.secret)), 413)


def test_upstream_timeout_is_504(gateway, seed, upstream):
    r = post(
        gateway,
        {"model": "slow-model", "messages": [{"role": "user", "content": "#hang"}]},
        auth(seed.secret),
    )
    assert_openai_error(r, 504, error_type="server_error")


def test_upstream_5xx_after_retries_is_502(gateway, seed, upstream):
    r = post(
        gateway,
        {"model": "test-model", "messages": [{"role": "user", "content": "#status=500"}]},
        auth(seed.secret),
    )
    assert_openai_error(r, 502, error_type="server_error")
    with pytest.raises(openai.InternalServerError):
        openai.OpenAI(
            base_url=gateway + "/v1", api_key=seed.secret, max_retries=0
        ).chat.completions.create(
            model="test-model", messages=[{"role": "user", "content": "#status=503"}], stream=True
        )


def test_upstream_4xx_is_relayed_in_openai_shape(gateway, seed, upstream):
    r = post(
        gateway,
        {"model": "test-model", "messages": [{"role": "user", "content": "#status=400"}]},
        auth(seed.secret),
    )
    error = assert_openai_error(r, 400)
    assert error["message"] == "fake failure 400" and error["code"] == "400"


def test_unknown_route_and_method(gateway, seed):
    assert_openai_error(httpx.get(gateway + "/v1/nothing-here", headers=auth(seed.secret)), 404)
    assert_openai_error(httpx.get(gateway + "/v1/chat/completions", headers=auth(seed.secret)), 405)


def test_errors_after_authentication_are_in_the_ledger(gateway, seed, celery_worker):
    r = post(gateway, b"{broken", auth(seed.secret))
    record = wait_until(
        lambda: UsageRecord.objects.filter(request_id=r.headers["x-request-id"]).first()
    )
    assert record.status == 400 and record.prompt_tokens == 0 and record.completion_tokens == 0


HOSTILE_BODIES = [
    b"\x00\xff\xfe",
    b"null",
    b"true",
    b"1e309",
    b'"string"',
    b"{}",
    b'{"model": null}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": {"a": 1}}]}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": [1, 2, 3]}]}',
    b'{"model": "test-model", "messages": [{}]}',
    b'{"model": "' + b"x" * 100000 + b'", "messages": [{"role": "user", "content": "hi"}]}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "n": 1e100}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "stream": null}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "tools": "x"}',
    b"[" * 10000 + b"]" * 10000,
    b'{"model": "test-model", "input": [1, [2], "x"]}',
    b'{"model": "test-model", "input": [true, false]}',
    b'{"model": "test-model", "input": "x", "dimensions": 1e400}',
    b'{"model": "test-model", "input": [{"type": "function_call_output", "output": {"a": 1}}]}',
    b'{"model": "test-model", "input": [{"role": "user", "content": [{"type": "x"}]}]}',
    b'{"model": "test-model", "input": "x", "text": {"format": {"type": "json_schema"}}}',
    b'{"model": "test-model", "input": "x", "tools": [{"type": "function"}], "tool_choice": 1}',
]
HOSTILE_HEADERS = [
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer " + "x" * 10000},
    {"x-api-key": ""},
    {"Authorization": "Bearer tg-\u00e9"},
    {"Content-Length": "abc"},
    {"anthropic-version": "nope"},
]
ROUTES = [
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/test-model"),
    ("GET", "/v1/models/%00"),
    ("GET", "/v1/key"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("POST", "/v1/embeddings"),
    ("POST", "/v1/responses"),
    ("DELETE", "/v1/models"),
    ("POST", "/v1/"),
]


def test_hostile_corpus_never_yields_a_5xx(gateway, seed, upstream):
    with httpx.Client(base_url=gateway, timeout=30) as http:
        for method, path in ROUTES:
            for body in HOSTILE_BODIES:
                r = http.request(method, path, content=body, headers=auth(seed.secret))
                assert r.status_code < 500, (method, path, body[:80], r.text)
            for headers in HOSTILE_HEADERS:
                try:
                    r = http.request(method, path, content=b"{}", headers=headers)
                except (httpx.LocalProtocolError, UnicodeEncodeError):
                    continue  # the client itself refuses to send it
                assert r.status_code < 500, (method, path, headers, r.text)
