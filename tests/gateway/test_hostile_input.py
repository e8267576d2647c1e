"""Hostile input on every /v1 route, in process (tests/gateway/inprocess.py).

The generated table (tests/gateway/hostile.py) puts every kind of JSON value in place of
every field of a valid request; a hypothesis property throws random JSON at the fields
the gateway reads most. The gateway must answer each with a success or a 4xx in the
route's own error shape, never a 5xx, and record each metered request exactly once.
"""

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.ledger.models import UsageRecord
from tests.gateway.hostile import (
    CHAT_STREAM,
    COUNT_TOKENS,
    EMBEDDINGS,
    MESSAGES,
    RESPONSES,
    ROUTES,
    Route,
    encode,
    replaced,
    route_cases,
)
from tests.gateway.inprocess import ingest_usage

pytestmark = pytest.mark.django_db(transaction=True)

ROUTE = {route.name: route for route in ROUTES}


def headers_for(protocol: str, secret: str) -> dict[str, str]:
    if protocol == "anthropic":
        return {
            "x-api-key": secret,
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        }
    return {"Authorization": f"Bearer {secret}", "content-type": "application/json"}


def error_shape_problem(protocol: str, response) -> str | None:
    """What is wrong with an error response's body in ``protocol``'s shape, or None."""
    try:
        body = response.json()
    except ValueError:
        return "not JSON"
    error = body.get("error") if isinstance(body, dict) else None
    if protocol == "anthropic" and body.get("type") != "error":
        return "not {'type': 'error', 'error': {...}}"
    if not isinstance(error, dict):
        return "no 'error' object"
    if not isinstance(error.get("message"), str) or not isinstance(error.get("type"), str):
        return "error.message or error.type is not a string"
    return None


def answer_problem(protocol: str, response) -> str | None:
    """Why an answer to hostile input is wrong: a 5xx, or a 4xx not in the protocol's shape.

    (A 502 would only say that the fake upstream choked on what it was sent.)"""
    status = response.status_code
    if status >= 500 and status != 502:
        return f"{status} {response.text[:200]}"
    if 400 <= status < 500 and (problem := error_shape_problem(protocol, response)):
        return f"{status} {problem}: {response.text[:200]}"
    return None


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.name)
def test_every_field_with_every_json_type_gets_a_success_or_a_4xx_recorded_once(
    inprocess_gateway, seed, route: Route
):
    headers = headers_for(route.protocol, seed.secret)
    problems = []
    statuses: dict[str, int] = {}
    for case in route_cases(route):
        r = inprocess_gateway.request("POST", route.path, content=case.body, headers=headers)
        statuses[r.headers["x-request-id"]] = r.status_code
        if problem := answer_problem(route.protocol, r):
            problems.append(f"{case.label}: {problem}")
    assert problems == [], "\n".join(problems[:40])
    ingest_usage()
    recorded = UsageRecord.objects.filter(request_id__in=list(statuses))
    assert dict(recorded.values_list("request_id", "status")) == statuses


QUERY_VALUES = [
    "",
    "0",
    "-1",
    "1e308",
    "18446744073709551616",
    "9" * 5000,
    "null",
    "true",
    "[]",
    "{}",
    "x" * 10_000,
    "\x00",
    "ü",
    "test-model",
]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_model_list_and_lookup_with_hostile_queries_and_ids_get_a_success_or_a_4xx(
    inprocess_gateway, seed, protocol
):
    headers = headers_for(protocol, seed.secret)
    problems = []
    for name in ("limit", "after_id", "before_id"):
        for value in QUERY_VALUES:
            r = inprocess_gateway.request(
                "GET", "/v1/models", headers=headers, params={name: value}
            )
            if problem := answer_problem(protocol, r):
                problems.append(f"?{name}={value[:20]!r}: {problem}")
    for value in [*QUERY_VALUES[:-1], "test-model/x", "../chat/completions", "%2F"]:
        r = inprocess_gateway.request("GET", "/v1/models/" + quote(value), headers=headers)
        if problem := answer_problem(protocol, r):
            problems.append(f"/v1/models/{value[:20]!r}: {problem}")
    assert problems == [], "\n".join(problems)


def test_a_message_role_that_is_an_object_is_a_400_naming_the_field(inprocess_gateway, seed):
    body = {"model": "test-model", "messages": [{"role": {"a": 1}, "content": "hi"}]}
    r = inprocess_gateway.request(
        "POST",
        "/v1/chat/completions",
        content=encode(body),
        headers=headers_for("openai", seed.secret),
    )
    assert (r.status_code, r.json()["error"]["param"]) == (400, "messages.[0].role")


def test_a_refused_hostile_request_is_billed_nothing_with_outcome_invalid_request(
    inprocess_gateway, seed
):
    body = {"model": "test-model", "input": [{"role": ["user"], "content": "hi"}]}
    r = inprocess_gateway.request(
        "POST", "/v1/responses", content=encode(body), headers=headers_for("openai", seed.secret)
    )
    ingest_usage()
    record = UsageRecord.objects.get(request_id=r.headers["x-request-id"])
    assert (record.status, record.outcome, record.prompt_tokens, record.completion_tokens) == (
        400,
        "invalid_request",
        0,
        0,
    )


def test_a_body_nested_deeper_than_orjson_writes_is_a_400(inprocess_gateway, seed):
    deep: list = []
    for _ in range(300):
        deep = [deep]
    body = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "x": deep}
    r = inprocess_gateway.request(
        "POST",
        "/v1/chat/completions",
        content=encode(body),
        headers=headers_for("openai", seed.secret),
    )
    assert r.status_code == 400


# Random JSON, its object keys drawn mostly from the names the validators look for.
KEYS = st.sampled_from(
    ["role", "content", "type", "text", "name", "id", "function", "arguments", "tool_calls",
     "input", "source", "url", "image_url", "data", "media_type", "call_id", "output",
     "format", "schema", "include_usage", "budget_tokens", "tool_use_id", "parameters"]
) | st.text(max_size=4)  # fmt: skip
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["user", "assistant", "system", "tool", "function", "text", "image_url",
                       "tool_use", "tool_result", "message", "function_call", "json_schema",
                       "auto", "none", "required", "any", "enabled", "base64", "url", ""])
    | st.text(max_size=12)
)  # fmt: skip
JSON = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=16,
)
ONE_CHAT_MESSAGE = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}
ONE_MESSAGE = {**MESSAGES, "messages": [{"role": "user", "content": "hi"}]}
RANDOM_SPOTS = {
    "chat": [
        (ONE_CHAT_MESSAGE, ("messages", 0)),
        (ONE_CHAT_MESSAGE, ("messages", 0, "role")),
        (ONE_CHAT_MESSAGE, ("messages", 0, "content")),
        (ONE_CHAT_MESSAGE, ("tools",)),
        (ONE_CHAT_MESSAGE, ("tool_choice",)),
        (CHAT_STREAM, ("stream_options",)),
        (ONE_CHAT_MESSAGE, ("response_format",)),
    ],
    "messages": [
        (ONE_MESSAGE, ("messages", 0)),
        (ONE_MESSAGE, ("messages", 0, "content")),
        (ONE_MESSAGE, ("system",)),
        (ONE_MESSAGE, ("tools",)),
        (ONE_MESSAGE, ("tool_choice",)),
        (ONE_MESSAGE, ("thinking",)),
    ],
    "count_tokens": [(COUNT_TOKENS, ("messages",)), (COUNT_TOKENS, ("messages", 0, "content"))],
    "embeddings": [(EMBEDDINGS, ("input",))],
    "responses": [
        (RESPONSES, ("input",)),
        (RESPONSES, ("input", 0)),
        (RESPONSES, ("tools",)),
        (RESPONSES, ("text",)),
        (RESPONSES, ("reasoning",)),
    ],
}


@pytest.mark.parametrize("route_name", list(RANDOM_SPOTS))
@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_json_in_a_key_field_gets_a_success_or_a_4xx_in_the_routes_shape(
    inprocess_gateway, seed, route_name, data
):
    route = ROUTE[route_name]
    base, path = data.draw(st.sampled_from(RANDOM_SPOTS[route_name]), label="spot")
    content = json.dumps(replaced(base, path, data.draw(JSON, label="value"))).encode()
    r = inprocess_gateway.request(
        "POST", route.path, content=content, headers=headers_for(route.protocol, seed.secret)
    )
    assert answer_problem(route.protocol, r) is None, content[:300]
