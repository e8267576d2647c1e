"""The pure pieces behind /v1/messages: the passthrough stream relay, usage mapping,
message replay as events, and the Anthropic model list."""

import orjson
import pytest

from apps.gateway.protocol.anthropic import (
    MessagesStreamRelay,
    anthropic_model,
    anthropic_model_list,
    anthropic_usage_counts,
    message_events,
    messages_sse_event,
    parse_sse_events,
    stream_invariant_violations,
)


def ev(name: str, **data) -> bytes:
    return messages_sse_event(name, {"type": name, **data})


START = ev(
    "message_start",
    message={
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 1,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 4,
        },
    },
)
BODY = (
    ev("ping")
    + ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
    + ev("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hi"})
    + ev("content_block_delta", index=0, delta={"type": "text_delta", "text": " there"})
    + ev("content_block_stop", index=0)
    + ev(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={"output_tokens": 9},
    )
    + ev("message_stop")
)


def relay_all(raw: bytes, size: int) -> tuple[MessagesStreamRelay, bytes]:
    relay = MessagesStreamRelay("claude-fake")
    out = b"".join(relay.feed(raw[i : i + size]) for i in range(0, len(raw), size))
    return relay, out


@pytest.mark.parametrize("size", [1, 7, 64, 100000])
def test_relay_passes_bytes_through_and_renames_the_model(size):
    relay, out = relay_all(START + BODY, size)
    assert out.endswith(BODY)  # untouched after message_start, whatever the read sizes
    first = parse_sse_events(out)[0]
    assert first[0] == "message_start"
    assert orjson.loads(first[1])["message"]["model"] == "claude-fake"
    assert relay.stopped and relay.finished and relay.content_deltas == 2
    # OpenAI convention: cache writes and reads inside prompt, reads again as cached.
    assert relay.counts() == (10 + 3 + 4, 9, 4)


def test_relay_handles_crlf_framing():
    raw = (START + BODY).replace(b"\n", b"\r\n")
    relay, out = relay_all(raw, 5)
    assert out.endswith(BODY.replace(b"\n", b"\r\n")) and relay.stopped
    assert orjson.loads(parse_sse_events(out)[0][1])["message"]["model"] == "claude-fake"


def test_relay_never_forwards_half_an_event():
    raw = START + BODY
    cut = raw.index(b"text_delta") + 3
    relay, out = relay_all(raw[:cut], 1000)
    assert out.endswith(b"\n\n") and b"text_delta" not in out
    assert not relay.finished
    prompt, completion, cached = relay.counts()
    assert (prompt, completion, cached) == (17, None, 4)  # no message_delta: unknown output


def test_relay_sees_the_upstream_error_event():
    raw = START + ev("error", error={"type": "overloaded_error", "message": "Overloaded"})
    relay, out = relay_all(raw, 3)
    assert relay.finished and not relay.stopped
    assert relay.error == {"type": "overloaded_error", "message": "Overloaded"}
    assert out.endswith(b'"message":"Overloaded"}}\n\n')


def test_message_delta_usage_overrides_message_start():
    raw = START + BODY.replace(
        b'"usage":{"output_tokens":9}',
        b'"usage":{"output_tokens":9,"input_tokens":12,"cache_read_input_tokens":0}',
    )
    relay, _ = relay_all(raw, 50)
    assert relay.counts() == (12 + 3 + 0, 9, 0)


def test_anthropic_usage_counts():
    usage = {
        "input_tokens": 5,
        "output_tokens": 2,
        "cache_creation_input_tokens": 7,
        "cache_read_input_tokens": 11,
    }
    assert anthropic_usage_counts(usage) == (23, 2, 11)
    assert anthropic_usage_counts({"input_tokens": 5, "output_tokens": 2}) == (5, 2, 0)
    assert anthropic_usage_counts({"output_tokens": 2}) is None
    assert anthropic_usage_counts(None) is None


def test_message_events_replay_a_whole_message_validly():
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "m",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "g", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 4},
    }
    events = message_events(message)
    assert stream_invariant_violations(events) == []
    assert events[-2][1]["usage"]["output_tokens"] == 4
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    deltas = [e[1]["delta"] for e in events if e[0] == "content_block_delta"]
    assert {"type": "input_json_delta", "partial_json": '{"city":"Oslo"}'} in deltas


def test_model_list_pages():
    objects = [anthropic_model(n, n.upper(), 1735689600) for n in "abcde"]
    assert objects[0] == {
        "type": "model",
        "id": "a",
        "display_name": "A",
        "created_at": "2025-01-01T00:00:00Z",
    }

    def page(query: bytes):
        listed = anthropic_model_list(objects, {"query_string": query})
        return [o["id"] for o in listed["data"]], listed["has_more"], listed["first_id"]

    assert page(b"") == (list("abcde"), False, "a")
    assert page(b"limit=2") == (["a", "b"], True, "a")
    assert page(b"limit=2&after_id=b") == (["c", "d"], True, "c")
    assert page(b"limit=2&after_id=d") == (["e"], False, "e")
    assert page(b"limit=2&before_id=d") == (["b", "c"], True, "b")
    assert page(b"limit=2&before_id=b") == (["a"], False, "a")
    assert page(b"after_id=zz") == ([], False, None)
    assert page(b"limit=abc") == (list("abcde"), False, "a")
    assert page(b"limit=0")[0] == ["a"]
