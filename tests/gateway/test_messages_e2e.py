"""The Anthropic Messages API end to end: the official `anthropic` SDK → real server →
fake upstreams (OpenAI-compatible: translation; Anthropic-native: passthrough), the
`openai` SDK → an Anthropic-native upstream (reverse translation), and the ledger
filled by a real Celery worker.

Models in the seed: "test-model" is served by the fake OpenAI-compatible upstream,
"claude-fake" by the fake Anthropic-native one (upstream name "claude-upstream").
"""

import anthropic
import httpx
import openai
import orjson
import pytest

from apps.gateway.protocol.anthropic import (
    estimate_message_tokens,
    parse_sse_events,
    stream_invariant_violations,
)
from apps.ledger.models import UsageRecord
from tests.conftest import seed_document, start_gateway, wait_until

pytestmark = pytest.mark.e2e

NATIVE = "claude-fake"
TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]


def claude(gateway: str, secret: str, **kwargs) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key=secret, max_retries=0, **kwargs)


def gpt(gateway: str, secret: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0)


def record_for(request_id: str) -> UsageRecord:
    return wait_until(lambda: UsageRecord.objects.filter(request_id=request_id).first())


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def without_id(message) -> dict:
    """The message but its id, and the gateway's price (``usage.cost``: the SDK's stream
    accumulator keeps only the usage fields it knows)."""
    dumped = message.model_dump(exclude={"id"}, exclude_none=True)
    dumped["usage"].pop("cost", None)
    return dumped


def raw_stream(gateway: str, secret: str, body: dict) -> tuple[httpx.Response, bytes]:
    with httpx.stream(
        "POST",
        gateway + "/v1/messages",
        headers={"x-api-key": secret, "anthropic-version": "2023-06-01"},
        json={**body, "stream": True},
        timeout=30,
    ) as r:
        return r, r.read()


def events_of(raw: bytes) -> list[tuple[str, dict]]:
    return [(name, orjson.loads(data)) for name, data in parse_sse_events(raw)]


# ---------------------------------------------------------------------------
# anthropic SDK → OpenAI-compatible upstream (translation)
# ---------------------------------------------------------------------------


def test_create_is_translated_and_metered(gateway, seed, upstream, celery_worker):
    raw = claude(gateway, seed.secret).messages.with_raw_response.create(
        model="test-model",
        max_tokens=100,
        messages=user("hello #chunks=4"),
        metadata={"user_id": "u-1"},
        # This SDK release no longer types the sampling parameters; the API takes them.
        extra_body={"temperature": 0.5, "top_k": 5},
    )
    message = raw.parse()
    assert message.content[0].type == "text" and message.content[0].text == "w0 w1 w2 w3"
    assert message.stop_reason == "end_turn" and message.model == "test-model"
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert raw.headers["request-id"] == raw.headers["x-request-id"]
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer upstream-secret"
    assert sent["body"]["model"] == "fake-upstream-model"
    assert sent["body"]["messages"] == [{"role": "user", "content": "hello #chunks=4"}]
    assert sent["body"]["max_tokens"] == 100 and sent["body"]["temperature"] == 0.5
    assert sent["body"]["top_k"] == 5 and sent["body"]["user"] == "u-1"
    record = record_for(raw.headers["request-id"])
    assert record.protocol == "anthropic" and record.endpoint == "messages"
    assert (record.prompt_tokens, record.completion_tokens) == (
        message.usage.input_tokens,
        message.usage.output_tokens,
    )
    assert record.completion_tokens == 4 and not record.tokens_estimated
    assert record.status == 200 and record.outcome == "ok" and not record.stream
    assert record.model == "test-model" and record.deployment == "fake/fake-upstream-model"


def test_bearer_auth_token_works(gateway, seed, upstream):
    client = anthropic.Anthropic(base_url=gateway, auth_token=seed.secret, max_retries=0)
    message = client.messages.create(model="test-model", max_tokens=10, messages=user("hi"))
    assert message.content[0].text


def test_stream_text_and_final_message_equal_the_non_stream_answer(
    gateway, seed, upstream, celery_worker
):
    client = claude(gateway, seed.secret)
    params = {"model": "test-model", "max_tokens": 50, "messages": user("hi #chunks=6")}
    once = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    assert text == "w0 w1 w2 w3 w4 w5" == once.content[0].text
    assert without_id(final) == without_id(once)
    assert upstream.requests()[-1]["body"]["stream_options"] == {"include_usage": True}
    record = record_for(request_id)
    assert record.stream and record.protocol == "anthropic" and not record.tokens_estimated
    assert (record.prompt_tokens, record.completion_tokens) == (
        final.usage.input_tokens,
        final.usage.output_tokens,
    )


def test_raw_events_follow_anthropics_sequence(gateway, seed, upstream):
    events = list(
        claude(gateway, seed.secret).messages.create(
            model="test-model", max_tokens=50, messages=user("hi #chunks=3"), stream=True
        )
    )
    types = [e.type for e in events]
    assert types[0] == "message_start" and types[-2:] == ["message_delta", "message_stop"]
    assert types.count("content_block_start") == types.count("content_block_stop") == 1
    assert events[0].message.usage.input_tokens > 0
    assert events[-2].usage.output_tokens == 3 and events[-2].delta.stop_reason == "end_turn"
    r, raw = raw_stream(
        gateway,
        seed.secret,
        {"model": "test-model", "max_tokens": 50, "messages": user("hi #chunks=3")},
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    parsed = events_of(raw)
    assert stream_invariant_violations(parsed) == []
    assert ("ping", {"type": "ping"}) in parsed
    assert all(b"event: " + name.encode() in raw for name, _ in parsed)


def test_tool_use_round_trip(gateway, seed, upstream):
    client = claude(gateway, seed.secret)
    first = client.messages.create(
        model="test-model", max_tokens=100, tools=TOOLS, messages=user("weather in Oslo?")
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "get_weather" and call.input == {"city": "Oslo"}
    sent = upstream.requests()[-1]["body"]
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": TOOLS[0]["input_schema"],
            },
        }
    ]
    second = client.messages.create(
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=[
            *user("weather in Oslo?"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12C"}],
            },
        ],
    )
    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "The tool said: 12C"
    history = upstream.requests()[-1]["body"]["messages"]
    assert history[1]["tool_calls"][0]["id"] == call.id
    assert history[2] == {"role": "tool", "tool_call_id": call.id, "content": "12C"}


def test_tool_use_round_trip_streamed(gateway, seed, upstream):
    client = claude(gateway, seed.secret)
    with client.messages.stream(
        model="test-model", max_tokens=100, tools=TOOLS, messages=user("weather?")
    ) as stream:
        first = stream.get_final_message()
    call = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and call.input == {"city": "Oslo"}
    assert call.id.startswith("call_")
    with client.messages.stream(
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=[
            *user("weather?"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12C"}],
            },
        ],
    ) as stream:
        second = stream.get_final_message()
    assert second.content[0].text == "The tool said: 12C"


def test_stop_sequences_report_the_matched_sequence(gateway, seed, upstream):
    client = claude(gateway, seed.secret)
    params = {
        "model": "test-model",
        "max_tokens": 50,
        "messages": user("hi"),
        "stop_sequences": ["w3", "zz"],
    }
    once = client.messages.create(**params)
    assert upstream.requests()[-1]["body"]["stop"] == ["w3", "zz"]
    assert (once.stop_reason, once.stop_sequence) == ("stop_sequence", "w3")
    assert once.content[0].text == "w0 w1 w2"
    with client.messages.stream(**params) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "w3")


# "llama-stop" is served by the fake in llama-cpp-python's manner: a stop string ends the
# answer with finish_reason "stop" and nothing saying which string it was.
LLAMA = "llama-stop"
STREAMED = pytest.mark.parametrize("streamed", [False, True], ids=["create", "stream"])


def answer(client: anthropic.Anthropic, streamed: bool, **params):
    if streamed:
        with client.messages.stream(**params) as stream:
            return stream.get_final_message()
    return client.messages.create(**params)


def ask_llama(gateway, secret, streamed: bool, stops: list[str], prompt: str = "hi"):
    params = {"model": LLAMA, "max_tokens": 50, "messages": user(prompt)}
    return answer(claude(gateway, secret), streamed, **params, stop_sequences=stops)


@STREAMED
def test_stop_sequence_is_reported_by_a_server_that_does_not_name_it(
    gateway, seed, upstream, streamed
):
    message = ask_llama(gateway, seed.secret, streamed, ["w3", "zz"])
    assert message.stop_reason == "stop_sequence"


@STREAMED
def test_matched_stop_sequence_is_named_by_a_server_that_does_not_name_it(
    gateway, seed, upstream, streamed
):
    message = ask_llama(gateway, seed.secret, streamed, ["zz", "w3"])
    assert message.stop_sequence == "w3"


@STREAMED
def test_text_ends_where_the_stop_sequence_began(gateway, seed, upstream, streamed):
    message = ask_llama(gateway, seed.secret, streamed, ["w3"])
    assert message.content[0].text == "w0 w1 w2 "


@STREAMED
def test_stop_sequence_spanning_stream_chunks_is_matched(gateway, seed, upstream, streamed):
    message = ask_llama(gateway, seed.secret, streamed, ["w2 w3"])
    assert (message.stop_sequence, message.content[0].text) == ("w2 w3", "w0 w1 ")


@STREAMED
def test_answer_that_meets_no_stop_sequence_ends_its_turn(gateway, seed, upstream, streamed):
    message = ask_llama(gateway, seed.secret, streamed, ["zz"])
    assert (message.stop_reason, message.content[0].text) == ("end_turn", "w0 w1 w2 w3 w4")


@STREAMED
def test_stop_sequences_are_matched_by_the_gateway_not_the_server(
    gateway, seed, upstream, streamed
):
    ask_llama(gateway, seed.secret, streamed, ["w3"])
    assert "stop" not in upstream.requests()[-1]["body"]


def test_stream_cut_at_a_stop_sequence_stops_the_server_generating(gateway, seed, upstream):
    ask_llama(gateway, seed.secret, True, ["w5"], prompt="hi #chunks=400 #delay_ms=5")
    assert wait_until(lambda: upstream.stats()["cancelled"]) == 1


def test_stream_cut_at_a_stop_sequence_is_billed_as_told(gateway, seed, upstream, celery_worker):
    client = claude(gateway, seed.secret)
    params = {"model": LLAMA, "max_tokens": 500, "messages": user("hi #chunks=400 #delay_ms=5")}
    with client.messages.stream(**params, stop_sequences=["w5"]) as stream:
        final = stream.get_final_message()
        request_id = stream.response.headers["request-id"]
    record = record_for(request_id)
    assert record.completion_tokens == final.usage.output_tokens


@STREAMED
def test_tool_arguments_with_a_raw_newline_reach_the_client_as_an_object(
    gateway, seed, upstream, streamed
):
    message = answer(
        claude(gateway, seed.secret),
        streamed,
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=user("weather? #args=newline"),
    )
    call = next(b for b in message.content if b.type == "tool_use")
    assert call.input == {"text": "line one\nline two", "city": "Oslo"}


@STREAMED
def test_truncated_tool_arguments_are_closed(gateway, seed, upstream, streamed):
    message = answer(
        claude(gateway, seed.secret),
        streamed,
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=user("weather? #args=truncated"),
    )
    call = next(b for b in message.content if b.type == "tool_use")
    assert call.input == {"city": "Oslo", "note": "bring an umbr"}


@STREAMED
def test_tool_call_cut_by_max_tokens_stops_for_max_tokens(gateway, seed, upstream, streamed):
    message = answer(
        claude(gateway, seed.secret),
        streamed,
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=user("weather? #args=truncated"),
    )
    assert message.stop_reason == "max_tokens"


@STREAMED
def test_tool_arguments_that_are_not_json_arrive_as_raw_text(gateway, seed, upstream, streamed):
    message = answer(
        claude(gateway, seed.secret),
        streamed,
        model="test-model",
        max_tokens=100,
        tools=TOOLS,
        messages=user("weather? #args=notjson"),
    )
    call = next(b for b in message.content if b.type == "tool_use")
    assert call.input == {"_raw_arguments": "city=Oslo, days=2"}


def test_tool_arguments_on_the_openai_surface_stay_as_the_server_wrote_them(
    gateway, seed, upstream
):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    completion = gpt(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=user("weather? #args=newline"), tools=tools
    )
    arguments = completion.choices[0].message.tool_calls[0].function.arguments
    assert arguments == '{"text": "line one\nline two", "city": "Oslo"}'


def test_max_tokens_stop_reason(gateway, seed, upstream):
    message = claude(gateway, seed.secret).messages.create(
        model="test-model", max_tokens=2, messages=user("hi")
    )
    assert message.stop_reason == "max_tokens" and message.content[0].text == "w0 w1"


def test_system_as_blocks(gateway, seed, upstream):
    claude(gateway, seed.secret).messages.create(
        model="test-model",
        max_tokens=10,
        system=[
            {"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Answer in English."},
        ],
        messages=user("hi"),
    )
    sent = upstream.requests()[-1]["body"]["messages"]
    assert sent[0] == {"role": "system", "content": "Be terse.\nAnswer in English."}


def test_count_tokens_is_estimated_and_not_billed(gateway, seed, upstream, celery_worker):
    body = {
        "model": "test-model",
        "system": "You are terse.",
        "messages": user("How many tokens is this?"),
        "tools": TOOLS,
    }
    raw = claude(gateway, seed.secret).messages.with_raw_response.count_tokens(**body)
    assert raw.parse().input_tokens == estimate_message_tokens(body)
    assert upstream.requests() == []
    record = record_for(raw.headers["request-id"])
    assert record.endpoint == "messages.count_tokens" and record.protocol == "anthropic"
    assert (record.prompt_tokens, record.completion_tokens, record.status) == (0, 0, 200)


def test_count_tokens_asks_an_openai_compatible_servers_tokenizer(gateway, seed, upstream):
    body = {
        "model": "test-model",
        "system": "You are terse.",
        "messages": user("How many tokens #tokenize"),
    }
    count = claude(gateway, seed.secret).messages.count_tokens(**body)
    assert count.input_tokens == (3 + 7) + (4 + 7)  # the fake's count: system + user
    sent = upstream.requests()[-1]
    assert sent["path"] == "/tokenize" and sent["body"]["model"] == "fake-upstream-model"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "You are terse."}


def test_request_id_header_on_every_answer(gateway, seed, upstream):
    r = httpx.post(gateway + "/v1/messages", json={}, headers={"x-api-key": seed.secret})
    assert r.status_code == 400 and r.headers["request-id"].startswith("req_")
    assert r.json()["request_id"] == r.headers["request-id"]


# ---------------------------------------------------------------------------
# Errors through the SDK's own exception classes
# ---------------------------------------------------------------------------


def error_of(exc_info) -> tuple[int, str]:
    exc = exc_info.value
    assert exc.response.headers["request-id"].startswith("req_")
    assert exc.body["type"] == "error"
    return exc.status_code, exc.body["error"]["type"]


def create(gateway: str, secret: str, **overrides):
    params = {"model": "test-model", "max_tokens": 10, "messages": user("hi"), **overrides}
    return claude(gateway, secret).messages.create(**params)


def test_authentication_error(gateway, seed):
    with pytest.raises(anthropic.AuthenticationError) as exc:
        create(gateway, "tg-wrong")
    assert error_of(exc) == (401, "authentication_error")
    r = httpx.post(gateway + "/v1/messages", json={}, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


def test_permission_error(gateway, seed):
    with pytest.raises(anthropic.PermissionDeniedError) as exc:
        create(gateway, seed.restricted_secret)
    assert error_of(exc) == (403, "permission_error")


def test_not_found_error(gateway, seed):
    with pytest.raises(anthropic.NotFoundError) as exc:
        create(gateway, seed.secret, model="nope")
    assert error_of(exc) == (404, "not_found_error")
    assert "nope" in exc.value.body["error"]["message"]


def test_invalid_request_errors_name_the_field(gateway, seed):
    with pytest.raises(anthropic.BadRequestError) as exc:
        create(gateway, seed.secret, max_tokens=0)
    assert error_of(exc) == (400, "invalid_request_error")
    assert exc.value.body["error"]["message"].startswith("max_tokens:")
    with pytest.raises(anthropic.BadRequestError) as exc:
        create(gateway, seed.secret, messages=[])
    assert exc.value.body["error"]["message"].startswith("messages:")


def test_request_too_large(gateway, seed):
    with pytest.raises(anthropic.RequestTooLargeError) as exc:
        create(gateway, seed.secret, messages=user("a" * (11 * 1024 * 1024)))
    assert error_of(exc) == (413, "request_too_large")


def test_rate_limit_error(gateway, seed, upstream):
    from apps.provisioning.services import config_apply

    doc = seed_document(upstream.base_url)
    doc["tenants"] = [{"name": "acme", "keys": [{"name": "limited", "models": [NATIVE], "rpm": 1}]}]
    secret = config_apply(document=doc).keys_created[0]["secret"]
    raw = claude(gateway, secret).messages.with_raw_response.create(
        model=NATIVE, max_tokens=10, messages=user("hi")
    )
    assert raw.headers["anthropic-ratelimit-requests-limit"] == "1"
    with pytest.raises(anthropic.RateLimitError) as exc:
        create(gateway, secret, model=NATIVE)
    assert error_of(exc) == (429, "rate_limit_error")
    assert int(exc.value.response.headers["retry-after"]) >= 1


def test_upstream_5xx_is_api_error(gateway, seed, upstream):
    with pytest.raises(anthropic.InternalServerError) as exc:
        create(gateway, seed.secret, messages=user("#status=500"))
    assert error_of(exc) == (502, "api_error")


@pytest.mark.parametrize("model,status", [("test-model", 503), (NATIVE, 529), (NATIVE, 503)])
def test_overloaded_upstream_is_529(gateway, seed, upstream, model, status):
    with pytest.raises(anthropic.OverloadedError) as exc:
        create(gateway, seed.secret, model=model, messages=user(f"#status={status}"))
    assert error_of(exc) == (529, "overloaded_error")
    stream = claude(gateway, seed.secret).messages.stream(
        model=model, max_tokens=10, messages=user(f"#status={status}")
    )
    with pytest.raises(anthropic.OverloadedError), stream as events:
        events.get_final_message()


def test_upstream_timeout_is_timeout_error(gateway, seed, upstream):
    with pytest.raises(anthropic.InternalServerError) as exc:
        create(gateway, seed.secret, model="slow-model", messages=user("#hang"))
    assert error_of(exc) == (504, "timeout_error")


@pytest.mark.parametrize(
    "status,error_class,error_type",
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (413, anthropic.RequestTooLargeError, "request_too_large"),
    ],
)
def test_native_upstream_4xx_is_relayed_in_anthropic_shape(
    gateway, seed, upstream, status, error_class, error_type
):
    with pytest.raises(error_class) as exc:
        create(gateway, seed.secret, model=NATIVE, messages=user(f"#status={status}"))
    assert error_of(exc) == (status, error_type)
    assert exc.value.body["error"]["message"] == f"fake failure {status}"


@pytest.mark.parametrize("model", ["test-model", NATIVE])
def test_mid_stream_failure_is_an_error_event(gateway, seed, upstream, celery_worker, model):
    stream = claude(gateway, seed.secret).messages.stream(
        model=model, max_tokens=50, messages=user("hi #chunks=10 #mid_error")
    )
    with pytest.raises(anthropic.APIStatusError) as exc, stream as events:
        events.get_final_message()
    assert exc.value.status_code == 200 and exc.value.body["type"] == "error"
    r, raw = raw_stream(
        gateway,
        seed.secret,
        {"model": model, "max_tokens": 50, "messages": user("hi #chunks=10 #cut=3")},
    )
    events = events_of(raw)
    assert events[-1][0] == "error" and stream_invariant_violations(events) == []
    record = record_for(r.headers["request-id"])
    assert record.outcome == "upstream_stream_error" and record.stream
    assert record.completion_tokens == 3 and record.tokens_estimated


# ---------------------------------------------------------------------------
# anthropic SDK → Anthropic-native upstream (passthrough)
# ---------------------------------------------------------------------------


def test_native_passthrough_untouched_but_the_model(gateway, seed, upstream, celery_worker):
    raw = claude(gateway, seed.secret).messages.with_raw_response.create(
        model=NATIVE,
        max_tokens=50,
        system=[{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        messages=user("hi #chunks=3 #cache_read=7 #cache_create=5"),
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_body={"top_k": 3},
    )
    message = raw.parse()
    assert message.model == NATIVE and message.content[0].text == "w0 w1 w2"
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/messages"
    assert sent["headers"]["x-api-key"] == "anthropic-upstream-secret"
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in sent["headers"]
    assert sent["body"] == {
        "max_tokens": 50,
        "messages": user("hi #chunks=3 #cache_read=7 #cache_create=5"),
        "model": "claude-upstream",
        "system": [{"type": "text", "text": "Be terse.", "cache_control": {"type": "ephemeral"}}],
        "top_k": 3,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    usage = message.usage
    assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (7, 5)
    record = record_for(raw.headers["request-id"])
    assert record.deployment == "fake-anthropic/claude-upstream"
    assert record.prompt_tokens == usage.input_tokens + 5 + 7 and record.cached_tokens == 7
    assert record.completion_tokens == usage.output_tokens and not record.tokens_estimated


def test_native_stream_is_relayed_byte_for_byte(gateway, seed, upstream, celery_worker):
    body = {"model": NATIVE, "max_tokens": 50, "messages": user("hi #chunks=5 #cache_read=4")}
    r, raw = raw_stream(gateway, seed.secret, body)
    direct = httpx.post(
        upstream.base_url + "/messages",
        json={**body, "model": "claude-upstream", "stream": True},
        headers={"x-api-key": "k", "anthropic-version": "2023-06-01"},
    ).content
    events = events_of(raw)
    assert stream_invariant_violations(events) == []
    assert events[0][1]["message"]["model"] == NATIVE
    # Everything after message_start is the upstream's own bytes (only its id is random)
    # up to message_delta, which gains the request's price in its usage.
    ours, theirs = raw.split(b"\n\n")[1:], direct.split(b"\n\n")[1:]
    delta_at = next(i for i, part in enumerate(theirs) if part.startswith(b"event: message_delta"))
    assert ours[:delta_at] == theirs[:delta_at]
    assert ours[delta_at + 1 :] == theirs[delta_at + 1 :]
    priced = events[-2][1]
    assert "cost" in priced["usage"]
    priced["usage"].pop("cost")
    assert priced == events_of(direct)[-2][1]
    record = record_for(r.headers["request-id"])
    start_usage = events[0][1]["message"]["usage"]
    assert record.prompt_tokens == start_usage["input_tokens"] + 4 and record.cached_tokens == 4
    assert record.completion_tokens == events[-2][1]["usage"]["output_tokens"] == 5
    assert record.stream and not record.tokens_estimated and record.outcome == "ok"


def test_native_stream_final_message_equals_non_stream(gateway, seed, upstream):
    client = claude(gateway, seed.secret)
    params = {"model": NATIVE, "max_tokens": 50, "messages": user("hi #chunks=4")}
    once = client.messages.create(**params)
    with client.messages.stream(**params) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "w0 w1 w2 w3"
    assert without_id(final) == without_id(once)


def test_native_tool_use_round_trip_streamed_and_not(gateway, seed, upstream):
    client = claude(gateway, seed.secret)
    first = client.messages.create(
        model=NATIVE, max_tokens=100, tools=TOOLS, messages=user("weather?")
    )
    with client.messages.stream(
        model=NATIVE, max_tokens=100, tools=TOOLS, messages=user("weather?")
    ) as stream:
        streamed = stream.get_final_message()
    for message in (first, streamed):
        call = message.content[1]
        assert message.stop_reason == "tool_use" and message.content[0].text == "Let me check."
        assert call.type == "tool_use" and call.input == {"city": "Oslo", "days": [1, 2]}
    second = client.messages.create(
        model=NATIVE,
        max_tokens=100,
        tools=TOOLS,
        messages=[
            *user("weather?"),
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "12C"}],
            },
        ],
    )
    assert second.content[0].text == "The tool said: 12C"


def test_native_stop_sequences(gateway, seed, upstream):
    message = create(gateway, seed.secret, model=NATIVE, stop_sequences=["w2"])
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "w2")


def test_native_count_tokens_is_forwarded(gateway, seed, upstream):
    body = {"model": NATIVE, "messages": user("count me")}
    count = claude(gateway, seed.secret).messages.count_tokens(**body)
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/messages/count_tokens"
    assert sent["body"]["model"] == "claude-upstream"
    assert count.input_tokens == 1000 + 2 + 3  # the fake's own count, marked by +1000


def test_failover_across_deployment_kinds(gateway, seed, upstream, celery_worker):
    """A model whose first deployment (OpenAI-compatible) is down fails over to an
    Anthropic-native one: path, body and answer handling follow the deployment's kind."""
    from apps.provisioning.services import config_apply

    doc = seed_document(upstream.base_url)
    doc["models"].append(
        {
            "name": "mixed-model",
            "deployments": [
                {"backend": "dead", "upstream_model": "x", "weight": 1000000},
                {"backend": "fake-anthropic", "upstream_model": "claude-upstream", "weight": 1},
            ],
        }
    )
    doc["tenants"][0]["keys"][0]["models"].append("mixed-model")
    config_apply(document=doc)
    raw = wait_until(
        lambda: (
            (
                r := httpx.post(
                    gateway + "/v1/messages",
                    headers={"x-api-key": seed.secret},
                    json={
                        "model": "mixed-model",
                        "max_tokens": 10,
                        "messages": user("hi #chunks=2"),
                    },
                )
            ).status_code
            == 200
            and r
        )
    )
    assert raw.json()["content"][0]["text"] == "w0 w1" and raw.json()["model"] == "mixed-model"
    assert record_for(raw.headers["request-id"]).deployment == "fake-anthropic/claude-upstream"
    completion = gpt(gateway, seed.secret).chat.completions.create(
        model="mixed-model", messages=user("hi #chunks=3")
    )
    assert completion.choices[0].message.content == "w0 w1 w2"
    assert [r["path"] for r in upstream.requests()] == ["/v1/messages", "/v1/messages"]


# ---------------------------------------------------------------------------
# openai SDK → Anthropic-native upstream (reverse translation)
# ---------------------------------------------------------------------------


def test_openai_sdk_against_a_native_upstream(gateway, seed, upstream, celery_worker):
    raw = gpt(gateway, seed.secret).chat.completions.with_raw_response.create(
        model=NATIVE,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "hi #chunks=3 #cache_read=6"},
        ],
        stop=["w9"],
        temperature=1.5,
    )
    completion = raw.parse()
    assert completion.model == NATIVE and completion.object == "chat.completion"
    choice = completion.choices[0]
    assert choice.message.content == "w0 w1 w2" and choice.finish_reason == "stop"
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/messages" and sent["body"]["model"] == "claude-upstream"
    assert sent["body"]["system"] == "Be terse." and sent["body"]["max_tokens"] == 4096
    assert sent["body"]["stop_sequences"] == ["w9"] and sent["body"]["temperature"] == 1.0
    usage = completion.usage
    assert usage.prompt_tokens_details.cached_tokens == 6
    record = record_for(raw.headers["x-request-id"])
    assert record.protocol == "openai" and record.endpoint == "chat.completions"
    assert (record.prompt_tokens, record.completion_tokens, record.cached_tokens) == (
        usage.prompt_tokens,
        usage.completion_tokens,
        6,
    )
    assert not record.tokens_estimated


def test_openai_sdk_stream_against_a_native_upstream(gateway, seed, upstream, celery_worker):
    stream = gpt(gateway, seed.secret).chat.completions.create(
        model=NATIVE,
        messages=user("hi #chunks=4"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "w0 w1 w2 w3"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.model == NATIVE for c in chunks)
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {seed.secret}"},
        json={"model": NATIVE, "stream": True, "messages": user("hi #chunks=2")},
    ) as r:
        raw = r.read()
        request_id = r.headers["x-request-id"]
    assert raw.endswith(b"data: [DONE]\n\n") and b"event:" not in raw
    assert b'"usage"' not in raw  # the client did not ask for it
    record = record_for(request_id)
    assert record.stream and record.completion_tokens == 2 and not record.tokens_estimated


def test_openai_sdk_stream_gets_the_whole_answer_when_a_native_upstream_sends_json(
    gateway, seed, upstream
):
    stream = gpt(gateway, seed.secret).chat.completions.create(
        model=NATIVE, messages=user("hi #chunks=3 #json_stream"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2"


def test_openai_sdk_tools_against_a_native_upstream(gateway, seed, upstream):
    api = gpt(gateway, seed.secret)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    with api.chat.completions.stream(
        model=NATIVE, messages=user("weather?"), tools=tools
    ) as stream:
        streamed = stream.get_final_completion()
    first = api.chat.completions.create(model=NATIVE, messages=user("weather?"), tools=tools)
    for completion in (streamed, first):
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather"
        assert orjson.loads(call.function.arguments) == {"city": "Oslo", "days": [1, 2]}
    assert upstream.requests()[-1]["body"]["tools"] == [
        {"name": "get_weather", "input_schema": tools[0]["function"]["parameters"]}
    ]
    second = api.chat.completions.create(
        model=NATIVE,
        tools=tools,
        messages=[
            *user("weather?"),
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12C"},
        ],
    )
    assert second.choices[0].message.content == "The tool said: 12C"


def test_openai_sdk_errors_from_a_native_upstream(gateway, seed, upstream):
    api = gpt(gateway, seed.secret)
    with pytest.raises(openai.BadRequestError) as exc:
        api.chat.completions.create(model=NATIVE, messages=user("#status=400"))
    assert exc.value.body["message"] == "fake failure 400"
    with pytest.raises(openai.InternalServerError):
        api.chat.completions.create(model=NATIVE, messages=user("#status=529"))
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=NATIVE, messages=user("hi"), n=2)
    stream = api.chat.completions.create(
        model=NATIVE, messages=user("hi #chunks=10 #mid_error"), stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)
    stream = api.chat.completions.create(
        model=NATIVE, messages=user("hi #chunks=10 #cut=2"), stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


# ---------------------------------------------------------------------------
# Ledger: a client gone mid-stream
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["test-model", NATIVE])
def test_client_gone_mid_stream_is_billed_for_what_was_delivered(
    gateway, seed, upstream, celery_worker, model
):
    with httpx.stream(
        "POST",
        gateway + "/v1/messages",
        headers={"x-api-key": seed.secret, "anthropic-version": "2023-06-01"},
        json={
            "model": model,
            "max_tokens": 1000,
            "stream": True,
            "messages": user("hi #chunks=200 #delay_ms=20"),
        },
    ) as r:
        request_id = r.headers["request-id"]
        received = 0
        for line in r.iter_lines():
            if line == "event: content_block_delta":
                received += 1
            if received == 5:
                break
    record = record_for(request_id)
    assert record.outcome == "client_disconnected" and record.stream
    assert record.protocol == "anthropic" and record.endpoint == "messages"
    assert 5 <= record.completion_tokens < 200 and record.tokens_estimated
    assert record.prompt_tokens > 0
    wait_until(lambda: upstream.stats()["cancelled"] == 1)


# ---------------------------------------------------------------------------
# GET /v1/models in Anthropic's shape
# ---------------------------------------------------------------------------


def test_models_in_anthropic_shape(gateway, seed):
    client = claude(gateway, seed.secret)
    ids = [m.id for m in client.models.list(limit=2)]  # the SDK follows has_more/last_id
    assert sorted(ids) == sorted(
        ["test-model", "slow-model", "failover-model", NATIVE, "llama-model", LLAMA]
    )
    page = client.models.list(limit=2)
    assert len(page.data) == 2 and page.has_more and page.last_id == page.data[-1].id
    model = client.models.retrieve(NATIVE)
    assert model.type == "model" and model.display_name and model.created_at
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("other-model")
    r = httpx.get(
        gateway + "/v1/models?limit=1&after_id=" + ids[0],
        headers={"x-api-key": seed.secret, "anthropic-version": "2023-06-01"},
    )
    assert r.json()["data"][0]["id"] == ids[1] and r.json()["first_id"] == ids[1]


# ---------------------------------------------------------------------------
# Malformed bodies: 400 in Anthropic's shape, never a 5xx
# ---------------------------------------------------------------------------

M = user("hi")
BAD_BODIES = [
    (b"{not json", None),
    (b"", None),
    (b"[1,2]", "Request body must be a JSON object"),
    ({"max_tokens": 10, "messages": M}, "model:"),
    ({"model": "test-model", "messages": M}, "max_tokens:"),
    ({"model": "test-model", "max_tokens": "10", "messages": M}, "max_tokens:"),
    ({"model": "test-model", "max_tokens": True, "messages": M}, "max_tokens:"),
    ({"model": "test-model", "max_tokens": 10}, "messages:"),
    ({"model": "test-model", "max_tokens": 10, "messages": []}, "messages:"),
    ({"model": "test-model", "max_tokens": 10, "messages": "hi"}, "messages:"),
    ({"model": "test-model", "max_tokens": 10, "messages": [42]}, "messages.0"),
    (
        {"model": "test-model", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]},
        "messages.0.role",
    ),
    ({"model": "test-model", "max_tokens": 10, "messages": [{"role": "user"}]}, "messages.0"),
    (
        {"model": "test-model", "max_tokens": 10, "messages": [{"role": "user", "content": 5}]},
        "messages.0.content",
    ),
    (
        {
            "model": "test-model",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "image"}]}],
        },
        "messages.0.content.0",
    ),
    (
        {
            "model": "test-model",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": [{"type": "tool_result"}]}],
        },
        "messages.0.content.0.tool_use_id",
    ),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "system": 5}, "system"),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "temperature": 2}, "temperature"),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "stop_sequences": "x"}, "stop_"),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "tools": [{"name": "x"}]}, "tools"),
    (
        {"model": "test-model", "max_tokens": 10, "messages": M, "tool_choice": {"type": "x"}},
        "tool_choice",
    ),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "stream": "yes"}, "stream"),
    ({"model": "test-model", "max_tokens": 10, "messages": M, "metadata": {"user_id": 5}}, "meta"),
    # Nothing translatable for an OpenAI backend (LiteLLM sent an empty messages array).
    (
        {
            "model": "test-model",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "thinking", "thinking": "x", "signature": ""}],
                }
            ],
        },
        "messages:",
    ),
    (
        {"model": "test-model", "max_tokens": 10, "messages": M, "tool_choice": {"type": "any"}},
        "tool_choice",
    ),
]


@pytest.mark.parametrize("body,message", BAD_BODIES)
def test_malformed_bodies_are_400_in_anthropic_shape(gateway, seed, upstream, body, message):
    r = httpx.post(
        gateway + "/v1/messages",
        content=body if isinstance(body, bytes) else orjson.dumps(body),
        headers={"x-api-key": seed.secret, "anthropic-version": "2023-06-01"},
    )
    assert r.status_code == 400, r.text
    payload = r.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    if message is not None:
        assert payload["error"]["message"].startswith(message), payload
    assert upstream.requests() == []


def test_hostile_messages_bodies_never_yield_a_5xx(gateway, seed, upstream):
    from tests.gateway.test_errors_e2e import HOSTILE_BODIES

    extra = [
        orjson.dumps({"model": NATIVE, "max_tokens": 10, "messages": M, "tools": "x"}),
        b'{"model": "claude-fake", "max_tokens": 1000000000000000000000000, "messages": []}',
        orjson.dumps({"model": NATIVE, "max_tokens": 2**62, "messages": M}),
        orjson.dumps({"model": "test-model", "max_tokens": 2**63 - 1, "messages": M}),
        orjson.dumps({"model": "test-model", "max_tokens": 10, "messages": M, "top_k": -1}),
        orjson.dumps(
            {
                "model": "test-model",
                "max_tokens": 10,
                "messages": [{"role": "user", "content": [{"type": "tool_use"}]}],
            }
        ),
        b'{"model": "test-model", "max_tokens": 1e400, "messages": []}',
    ]
    with httpx.Client(base_url=gateway, timeout=30) as http:
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            for body in HOSTILE_BODIES + extra:
                r = http.post(path, content=body, headers={"x-api-key": seed.secret})
                assert r.status_code < 500, (path, body[:80], r.text)
                if r.status_code >= 400:
                    assert r.json()["type"] == "error", r.text


def test_native_backend_gets_the_clients_betas(gateway, seed, upstream):
    api = claude(gateway, seed.secret)
    api.beta.messages.create(
        model=NATIVE,
        max_tokens=20,
        messages=user("hi #chunks=2"),
        betas=["token-efficient-tools-2025-02-19"],
    )
    sent = upstream.requests()[-1]["headers"]
    assert sent["anthropic-beta"] == "token-efficient-tools-2025-02-19"
    assert sent["anthropic-version"] == "2023-06-01"  # the backend's, not the SDK's
    assert sent["x-api-key"] == "anthropic-upstream-secret"  # never the client's key
    api.messages.count_tokens(
        model=NATIVE, messages=user("hi"), extra_headers={"anthropic-beta": "b1,b2"}
    )
    assert upstream.requests()[-1]["headers"]["anthropic-beta"] == "b1,b2"
    # an OpenAI-compatible backend is not sent Anthropic's headers
    api.beta.messages.create(model="test-model", max_tokens=20, messages=user("hi"), betas=["b3"])
    assert "anthropic-beta" not in upstream.requests()[-1]["headers"]


@pytest.fixture(scope="module")
def pinging_gateway(server_env):
    process = start_gateway(server_env, name="gateway-ping", GATEWAY_STREAM_PING_S="0.2")
    yield f"http://127.0.0.1:{process.port}"
    process.stop()


def test_a_silent_backend_stream_gets_pings(pinging_gateway, seed, upstream):
    body = {
        "model": "test-model",
        "max_tokens": 50,
        "stream": True,
        "messages": user("#chunks=3 #delay_ms=700"),
    }
    headers = {"x-api-key": seed.secret, "anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", pinging_gateway + "/v1/messages", json=body, headers=headers, timeout=30
    ) as response:
        raw = b"".join(response.iter_bytes())
    events = [(name, orjson.loads(data)) for name, data in parse_sse_events(raw)]
    assert stream_invariant_violations(events) == []
    names = [name for name, _ in events]
    assert names.count("ping") >= 4  # the first one, then at least one per silence
    assert names[-1] == "message_stop" and names.index("message_stop") > max(
        i for i, n in enumerate(names) if n == "ping"
    )
    with claude(pinging_gateway, seed.secret).messages.stream(
        model="test-model", max_tokens=50, messages=user("#chunks=3 #delay_ms=500")
    ) as stream:
        assert stream.get_final_text() == "w0 w1 w2"
