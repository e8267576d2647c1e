"""The chat relay's pass-through: an upstream chunk that is one choice's plain delta is
rewritten as bytes, without a parse. Whatever the upstream sends, the client gets the
same events as when every chunk is parsed (a stream read in one piece takes the parsing
path throughout), and the same count of content chunks for the estimate."""

import orjson
import pytest

from apps.gateway.protocol.openai import ChatStreamRelay

BASE = {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1, "model": "up-m"}


def event(**fields) -> bytes:
    return b"data: " + orjson.dumps({**BASE, **fields}) + b"\n\n"


def delta(content=None, finish=None, index=0, **more) -> bytes:
    body = {} if content is None else {"content": content}
    body.update(more)
    choice = {"index": index, "delta": body, "logprobs": None, "finish_reason": finish}
    return event(choices=[choice])


USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
TRICKY_TEXTS = [
    'say "usage" and "role"',
    '{"model":"up-m","usage":null}',
    'a "finish_reason":null "index":1',
    "",
    "line\nbreak",
    "ünïcode ✓",
    '"content":""',
]


def stream() -> list[bytes]:
    chunks = [delta("", role="assistant")]
    chunks += [delta(text) for text in TRICKY_TEXTS]
    chunks.append(delta(reasoning_content="thinking"))
    call = {"index": 0, "id": "c1", "type": "function", "function": {"name": "f"}}
    chunks.append(delta(tool_calls=[call]))
    again = {"index": 0, "id": "c1", "type": "function", "function": {"arguments": "{}"}}
    chunks.append(delta(tool_calls=[again]))
    chunks.append(delta("more"))
    chunks.append(delta(None, "stop"))
    chunks.append(event(choices=[], usage=USAGE))
    chunks.append(b"data: [DONE]\n\n")
    return chunks


def relay_events(reads: list[bytes], wants_usage: bool) -> tuple[list, int]:
    relay = ChatStreamRelay("public-m", wants_usage)
    out = b"".join(relay.feed(read) for read in reads)
    out += relay.feed(b"") + relay.finish()
    events = [
        orjson.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]"
        for line in out.split(b"\n\n")
        if line
    ]
    return events, relay.content_chunks


@pytest.mark.parametrize("wants_usage", [True, False])
def test_chunk_by_chunk_reads_give_the_events_of_a_parsed_stream(wants_usage):
    parsed, _ = relay_events([b"".join(stream())], wants_usage)
    passed, _ = relay_events(stream(), wants_usage)
    assert passed == parsed


@pytest.mark.parametrize("wants_usage", [True, False])
def test_chunk_by_chunk_reads_count_the_content_chunks_of_a_parsed_stream(wants_usage):
    _, parsed = relay_events([b"".join(stream())], wants_usage)
    _, passed = relay_events(stream(), wants_usage)
    assert passed == parsed


def test_every_relayed_chunk_names_the_public_model():
    events, _ = relay_events(stream(), True)
    assert {e["model"] for e in events if e != "[DONE]"} == {"public-m"}


def test_a_plain_delta_asked_with_usage_carries_usage_null():
    events, _ = relay_events(stream(), True)
    assert events[2]["usage"] is None


def test_a_chunk_of_another_model_name_is_rewritten_too():
    reads = [*stream()[:3], event(model="other", choices=[{"index": 0, "delta": {"content": "x"}, "finish_reason": None}]), *stream()[3:]]  # fmt: skip
    events, _ = relay_events(reads, False)
    assert events[3]["model"] == "public-m"


def test_two_choices_in_one_chunk_take_the_parsing_path():
    two = event(
        choices=[
            {"index": 0, "delta": {"content": "a"}, "finish_reason": None},
            {"index": 1, "delta": {"content": "b"}, "finish_reason": None},
        ]
    )
    reads = [*stream()[:3], two, *stream()[3:]]
    assert relay_events(reads, False) == relay_events([b"".join(reads)], False)
