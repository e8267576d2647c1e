"""The OpenAI-compatible gateway end to end: official SDK → real server → fake upstream,
with the ledger filled by a real Celery worker."""

import httpx
import openai
import orjson
import pytest

from apps.ledger.models import UsageRecord
from tests.conftest import wait_until

pytestmark = pytest.mark.e2e


def client(gateway: str, secret: str, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway + "/v1", api_key=secret, max_retries=0, **kwargs)


def record_for(request_id: str) -> UsageRecord:
    return wait_until(lambda: UsageRecord.objects.filter(request_id=request_id).first())


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def sse_events(raw: bytes) -> list[bytes]:
    return [line[6:] for line in raw.split(b"\n") if line.startswith(b"data: ")]


def streamed(gateway: str, secret: str, model: str, text: str) -> tuple[list[bytes], str]:
    """A chat stream read to its end: its SSE events and the request id."""
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {secret}"},
        json={"model": model, "stream": True, "messages": user(text)},
        timeout=4,
    ) as r:
        return sse_events(r.read()), r.headers["x-request-id"]


def test_non_stream_completion_is_relayed_and_metered(gateway, seed, upstream, celery_worker):
    raw = client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="test-model",
        messages=user("hello #chunks=4"),
        temperature=0.2,
        seed=7,
        extra_body={"guided_choice": ["a", "b"], "min_p": 0.1},
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == "w0 w1 w2 w3"
    assert completion.model == "test-model"
    sent = upstream.requests()[-1]
    assert sent["body"]["model"] == "fake-upstream-model"
    assert sent["body"]["guided_choice"] == ["a", "b"] and sent["body"]["min_p"] == 0.1
    assert sent["body"]["seed"] == 7
    assert sent["headers"]["Authorization"] == "Bearer upstream-secret"
    record = record_for(raw.headers["x-request-id"])
    assert (record.prompt_tokens, record.completion_tokens) == (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
    )
    assert record.outcome == "ok" and record.status == 200 and not record.stream
    assert record.model == "test-model" and record.deployment == "fake/fake-upstream-model"
    assert not record.tokens_estimated and record.protocol == "openai"


def test_alias_resolves_to_the_model(gateway, seed, upstream):
    completion = client(gateway, seed.secret).chat.completions.create(
        model="tm", messages=user("hi")
    )
    assert completion.model == "test-model"


def test_stream_without_include_usage_hides_the_usage_chunk(gateway, seed, upstream, celery_worker):
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {seed.secret}"},
        json={"model": "test-model", "stream": True, "messages": user("hi #chunks=20")},
    ) as r:
        request_id = r.headers["x-request-id"]
        events = sse_events(r.read())
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"] for c in chunks)
    assert all(c["model"] == "test-model" for c in chunks)
    assert upstream.requests()[-1]["body"]["stream_options"] == {"include_usage": True}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == " ".join(f"w{i}" for i in range(20))
    record = record_for(request_id)
    assert record.stream and record.completion_tokens == 20 and not record.tokens_estimated


def test_stream_with_include_usage_through_the_sdk(gateway, seed, upstream, celery_worker):
    stream = client(gateway, seed.secret).chat.completions.create(
        model="test-model",
        messages=user("hi #chunks=3"),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2"


def test_tools_round_trip(gateway, seed, upstream):
    api = client(gateway, seed.secret)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    first = api.chat.completions.create(
        model="test-model", messages=user("weather?"), tools=tools, tool_choice="auto"
    )
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and orjson.loads(call.function.arguments) == {
        "city": "Oslo"
    }
    second = api.chat.completions.create(
        model="test-model",
        tools=tools,
        messages=[
            {"role": "user", "content": "weather?"},
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "12C"},
        ],
    )
    assert second.choices[0].message.content == "The tool said: 12C"
    assert upstream.requests()[-1]["body"]["tools"] == tools


def test_streamed_tool_call_accumulates_in_the_sdk(gateway, seed, upstream):
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    ]
    with client(gateway, seed.secret).chat.completions.stream(
        model="test-model", messages=user("weather?"), tools=tools
    ) as stream:
        final = stream.get_final_completion()
    call = final.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert orjson.loads(call.function.arguments) == {"city": "Oslo"}


def test_n_and_stop_pass_through(gateway, seed, upstream):
    completion = client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=user("hi"), n=2, stop=["w3", "zz"]
    )
    assert [c.index for c in completion.choices] == [0, 1]
    assert completion.choices[1].message.content == "w0 w1 w2"
    assert upstream.requests()[-1]["body"]["stop"] == ["w3", "zz"]
    assert upstream.requests()[-1]["body"]["n"] == 2


def test_x_api_key_header_authenticates(gateway, seed, upstream):
    r = httpx.post(
        gateway + "/v1/chat/completions",
        headers={"x-api-key": seed.secret},
        json={"model": "test-model", "messages": user("hi")},
    )
    assert r.status_code == 200 and r.headers["x-request-id"].startswith("req_")


def test_models_lists_only_what_the_key_may_use(gateway, seed):
    assert [m.id for m in client(gateway, seed.restricted_secret).models.list()] == ["other-model"]
    assert client(gateway, seed.secret).models.retrieve("test-model").id == "test-model"
    with pytest.raises(openai.NotFoundError):
        client(gateway, seed.restricted_secret).models.retrieve("test-model")
    r = httpx.get(gateway + "/v1/models", headers={"x-api-key": seed.secret})
    assert {m["id"] for m in r.json()["data"]} == {
        "test-model",
        "slow-model",
        "failover-model",
        "claude-fake",
        "llama-model",
        "llama-stop",
    }


def test_failover_to_the_next_deployment_before_any_byte(gateway, seed, upstream, celery_worker):
    raw = client(gateway, seed.secret).chat.completions.with_raw_response.create(
        model="failover-model", messages=user("hi")
    )
    assert raw.parse().choices[0].message.content
    assert record_for(raw.headers["x-request-id"]).deployment == "fake/fake-failover"


def test_client_disconnect_mid_stream_is_billed_for_what_was_delivered(
    gateway, seed, upstream, celery_worker
):
    with httpx.stream(
        "POST",
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {seed.secret}"},
        json={
            "model": "test-model",
            "stream": True,
            "messages": user("hi #chunks=200 #delay_ms=20"),
        },
    ) as r:
        request_id = r.headers["x-request-id"]
        received = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content":"' in line and '"content":""' not in line:
                received += 1
            if received == 5:
                break
    record = record_for(request_id)
    assert record.outcome == "client_disconnected" and record.stream
    assert 5 <= record.completion_tokens < 200 and record.tokens_estimated
    assert record.prompt_tokens > 0
    wait_until(lambda: upstream.stats()["cancelled"] == 1)


def test_mid_stream_upstream_failure_ends_with_an_error_event(
    gateway, seed, upstream, celery_worker
):
    stream = client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=user("hi #chunks=10 #mid_error"), stream=True
    )
    with pytest.raises(openai.APIError):
        list(stream)


def test_upstream_cut_mid_stream_is_reported_not_silent(gateway, seed, upstream, celery_worker):
    events, request_id = streamed(gateway, seed.secret, "test-model", "hi #chunks=10 #cut=3")
    assert b'"error"' in events[-1]
    record = record_for(request_id)
    assert record.outcome == "upstream_stream_error" and record.completion_tokens == 3


def test_a_stream_paused_past_its_timeout_ends_with_an_error_event(
    gateway, seed, upstream, celery_worker
):
    # slow-model's backend: timeout_s 0.5; the upstream pauses 5 s after its first word.
    events, request_id = streamed(gateway, seed.secret, "slow-model", "#chunks=3 #delay_ms=5000")
    assert b'"error"' in events[-1]
    record = record_for(request_id)
    assert (record.outcome, record.completion_tokens) == ("upstream_stream_error", 1)


def test_a_stream_longer_than_its_timeout_with_short_pauses_completes(
    gateway, seed, upstream, celery_worker
):
    # timeout_s 0.5 bounds each pause (0.2 s), not the stream (about 1.2 s).
    stream = client(gateway, seed.secret).chat.completions.create(
        model="slow-model", messages=user("#chunks=6 #delay_ms=200"), stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "w0 w1 w2 w3 w4 w5"


def test_a_stream_silent_after_its_headers_is_a_504(gateway, seed, upstream):
    r = httpx.post(
        gateway + "/v1/chat/completions",
        headers={"Authorization": f"Bearer {seed.secret}"},
        json={"model": "slow-model", "stream": True, "messages": user("#silent")},
        timeout=4,
    )
    assert r.status_code == 504


def test_stream_to_a_server_that_refuses_stream_options(gateway, seed, upstream, celery_worker):
    stream = client(gateway, seed.secret).chat.completions.create(
        model="test-model", messages=user("hi #chunks=4 #reject_stream_options"), stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "w0 w1 w2 w3"
    sent = [r["body"] for r in upstream.requests()]
    assert "stream_options" in sent[0] and "stream_options" not in sent[1]
    record = record_for(stream.response.headers["x-request-id"])
    assert record.completion_tokens == 4 and record.tokens_estimated
