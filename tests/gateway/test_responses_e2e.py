"""POST /v1/responses end to end: the official openai SDK's Responses API → real server
→ fake OpenAI-compatible upstream (Chat Completions), metered into the ledger."""

import httpx
import pytest

from apps.gateway.protocol.anthropic import parse_sse_events
from apps.moderation.services import content_policy_set
from apps.tenants.models import Tenant
from tests.conftest import openai_client, usage_record, wait_until

pytestmark = pytest.mark.e2e

TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    }
]


def test_the_docs_first_example(gateway, seed, upstream, celery_worker):
    raw = openai_client(gateway, seed.secret).responses.with_raw_response.create(
        model="test-model",
        instructions="You are terse.",
        input="Write a one-sentence bedtime story about a unicorn. #chunks=4",
    )
    response = raw.parse()
    assert response.output_text == "w0 w1 w2 w3"
    assert response.status == "completed" and response.model == "test-model"
    assert response.id.startswith("resp_")
    sent = upstream.requests()[-1]
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["messages"][0] == {"role": "system", "content": "You are terse."}
    assert sent["body"]["model"] == "fake-upstream-model"
    record = usage_record(raw.headers["x-request-id"])
    assert record.endpoint == "responses"
    assert record.prompt_tokens == response.usage.input_tokens
    assert record.completion_tokens == response.usage.output_tokens == 4


def test_stream_accumulates_in_the_sdk(gateway, seed, upstream, celery_worker):
    api = openai_client(gateway, seed.secret)
    with api.responses.stream(model="test-model", input="hi #chunks=5") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "w0 w1 w2 w3 w4"
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds.count("response.output_text.delta") == 5
    assert kinds[-1] == "response.completed" and final.usage.output_tokens == 5
    events = list(api.responses.create(model="test-model", input="hi #chunks=2", stream=True))
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_function_calls_round_trip_streamed_and_not(gateway, seed, upstream):
    api = openai_client(gateway, seed.secret)
    first = api.responses.create(model="test-model", input="weather in Oslo?", tools=TOOLS)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and call.arguments == '{"city": "Oslo"}'
    with api.responses.stream(model="test-model", input="weather?", tools=TOOLS) as stream:
        streamed = stream.get_final_response()
    assert [i.type for i in streamed.output] == ["function_call"]
    assert streamed.output[0].arguments == '{"city": "Oslo"}'
    second = api.responses.create(
        model="test-model",
        tools=TOOLS,
        input=[
            {"role": "user", "content": "weather in Oslo?"},
            {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments},
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )  # fmt: skip
    assert second.output_text == "The tool said: sunny"
    sent = upstream.requests()[-1]["body"]
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


def test_max_output_tokens_makes_an_incomplete_response(gateway, seed, upstream):
    response = openai_client(gateway, seed.secret).responses.create(
        model="test-model", input="#chunks=9", max_output_tokens=3
    )
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "w0 w1 w2"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "test-model"}, "input"),
        ({"model": "test-model", "input": []}, "input"),
        ({"model": "test-model", "input": [{"role": "wizard", "content": "x"}]}, "input"),
        ({"model": "test-model", "input": "x", "previous_response_id": "resp_1"},
         "previous_response_id"),
        ({"model": "test-model", "input": "x", "tools": [{"type": "web_search"}]}, "tools"),
        ({"model": "test-model", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x"}, "model"),
    ],
)  # fmt: skip
def test_bad_requests_are_openai_400s(gateway, seed, upstream, body, param):
    response = httpx.post(
        gateway + "/v1/responses", json=body, headers={"Authorization": f"Bearer {seed.secret}"}
    )
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param
    assert upstream.requests() == []


def test_a_completion_policy_holds_on_responses_too(gateway, seed, upstream):
    tenant = Tenant.objects.get(name="acme")
    content_policy_set(tenant=tenant, policy={"violence": {"completion": "block"}})
    api = openai_client(gateway, seed.secret)
    harmful = "#sayrev=" + "i_am_going_to_kill_you"[::-1]

    def blocked() -> bool:
        return api.responses.create(model="test-model", input=harmful).status == "incomplete"

    wait_until(blocked)
    response = api.responses.create(model="test-model", input=harmful)
    assert response.incomplete_details.reason == "content_filter"
    assert "kill" not in (response.output_text or "")
    with httpx.stream(
        "POST",
        gateway + "/v1/responses",
        json={"model": "test-model", "input": harmful, "stream": True},
        headers={"Authorization": f"Bearer {seed.secret}"},
    ) as streamed:
        raw = b"".join(streamed.iter_bytes())
    names = [name for name, _ in parse_sse_events(raw)]
    assert b"kill" not in raw and names[-1] == "response.incomplete"


def test_a_failure_mid_stream_ends_with_response_failed(gateway, seed, upstream, celery_worker):
    with httpx.stream(
        "POST",
        gateway + "/v1/responses",
        json={"model": "test-model", "input": "#chunks=5 #mid_error", "stream": True},
        headers={"Authorization": f"Bearer {seed.secret}"},
    ) as streamed:
        request_id = streamed.headers["x-request-id"]
        raw = b"".join(streamed.iter_bytes())
    events = parse_sse_events(raw)
    assert events[0][0] == "response.created" and events[-1][0] == "response.failed"
    record = usage_record(request_id)
    assert record.outcome == "upstream_stream_error" and record.completion_tokens > 0


def test_a_stream_whose_last_event_is_unterminated_still_completes(gateway, seed, upstream):
    events = openai_client(gateway, seed.secret).responses.create(
        model="test-model", input="hi #chunks=3 #unterminated_end", stream=True
    )
    assert [event.type for event in events][-1] == "response.completed"
