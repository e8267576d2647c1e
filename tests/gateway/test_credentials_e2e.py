"""A request carries exactly one API key: two different ones, or a credential header
sent twice, are refused before anything is served, so a proxy that appends a header can
never switch tenants."""

import httpx
import pytest

pytestmark = pytest.mark.e2e

CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
CHAT_BODY = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
MESSAGES_BODY = {**CHAT_BODY, "max_tokens": 5}
ANTHROPIC_VERSION = ("anthropic-version", "2023-06-01")


def send(gateway: str, headers: list[tuple[str, str]], path: str = CHAT) -> httpx.Response:
    body = MESSAGES_BODY if path == MESSAGES else CHAT_BODY
    return httpx.post(gateway + path, headers=headers, json=body, timeout=30)


def both_ways(first: tuple[str, str], second: tuple[str, str]) -> list:
    return [[first, second], [second, first]]


def conflicting(seed) -> list[list[tuple[str, str]]]:
    main, other = seed.secret, seed.restricted_secret
    return [
        *both_ways(("Authorization", f"Bearer {main}"), ("x-api-key", other)),
        *both_ways(("Authorization", f"Bearer {other}"), ("x-api-key", main)),
        [("Authorization", f"Bearer {main}"), ("Authorization", f"Bearer {other}")],
        [("Authorization", f"Bearer {other}"), ("Authorization", f"Bearer {main}")],
        [("x-api-key", main), ("x-api-key", other)],
        [("x-api-key", other), ("x-api-key", main)],
        [("Authorization", f"Bearer {main}"), ("Authorization", f"Bearer {main}")],
        [("x-api-key", main), ("x-api-key", main)],
        *both_ways(("Authorization", "Basic dXNlcjpwYXNz"), ("x-api-key", main)),
    ]


def statuses(gateway: str, cases, path: str = CHAT, extra=()) -> list[int]:
    return [send(gateway, [*case, *extra], path).status_code for case in cases]


def test_conflicting_or_repeated_keys_are_refused_on_chat(gateway, seed, upstream):
    cases = conflicting(seed)
    assert statuses(gateway, cases) == [401] * len(cases)


def test_conflicting_or_repeated_keys_are_refused_on_messages(gateway, seed, upstream):
    cases = conflicting(seed)
    assert statuses(gateway, cases, MESSAGES, [ANTHROPIC_VERSION]) == [401] * len(cases)


def test_conflicting_keys_are_refused_on_models(gateway, seed):
    headers = [("Authorization", f"Bearer {seed.restricted_secret}"), ("x-api-key", seed.secret)]
    assert httpx.get(gateway + "/v1/models", headers=headers).status_code == 401


def test_no_upstream_is_called_for_a_conflicting_request(gateway, seed, upstream):
    statuses(gateway, conflicting(seed))
    assert upstream.requests() == []


def test_the_refusal_is_in_openai_shape(gateway, seed):
    r = send(gateway, [("Authorization", f"Bearer {seed.secret}"), ("x-api-key", "tg-other")])
    assert r.json()["error"]["code"] == "ambiguous_api_key"


def test_the_refusal_is_in_anthropic_shape_on_messages(gateway, seed):
    headers = [("x-api-key", seed.secret), ("x-api-key", "tg-other"), ANTHROPIC_VERSION]
    r = send(gateway, headers, MESSAGES)
    assert r.json()["error"]["type"] == "authentication_error"


def test_the_refusal_names_no_secret(gateway, seed):
    r = send(gateway, [("Authorization", f"Bearer {seed.secret}"), ("x-api-key", "tg-other")])
    assert "tg-" not in r.text


def test_the_same_key_in_both_headers_is_one_key(gateway, seed, upstream):
    headers = [("Authorization", f"Bearer {seed.secret}"), ("x-api-key", seed.secret)]
    assert send(gateway, headers).status_code == 200


def test_an_empty_x_api_key_beside_a_bearer_key_is_no_second_key(gateway, seed, upstream):
    headers = [("Authorization", f"Bearer {seed.secret}"), ("x-api-key", "")]
    assert send(gateway, headers).status_code == 200


@pytest.mark.parametrize("header", ["Authorization", "x-api-key"])
def test_one_key_in_either_header_is_served(gateway, seed, upstream, header):
    value = f"Bearer {seed.secret}" if header == "Authorization" else seed.secret
    assert send(gateway, [(header, value)]).status_code == 200
