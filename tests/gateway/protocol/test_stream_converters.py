"""Every stream converter driven through the one loop the package header describes,
with the same upstream answers: whole, cut at every read size, truncated, failing.

The client's side is read with the official SDKs' own accumulators where they have one
(openai's ChatCompletionStreamState, anthropic's accumulate_event, openai's Response)."""

import inspect

import orjson
import pytest

from apps.gateway.protocol.anthropic import (
    MessagesStreamRelay,
    messages_sse_event,
    parse_sse_events,
    stream_invariant_violations,
)
from apps.gateway.protocol.anthropic_to_openai import ChatStreamToMessagesStream, ToolNameMap
from apps.gateway.protocol.openai import ChatStreamRelay, data_chunk
from apps.gateway.protocol.openai_to_anthropic import MessagesStreamToChatStream
from apps.gateway.protocol.responses import ChatStreamToResponseEvents, response_shell
from apps.gateway.protocol.sse import DONE_EVENT

PIECES = ["Hel", "lo", " wor", "ld"]
TEXT = "".join(PIECES)
ESTIMATE = {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


# --------------------------------------------------------------------------- upstreams


def chat_upstream(ending: str) -> bytes:
    """A chat-completions stream of PIECES; ``ending``: done | cut | error."""

    def chunk(delta: dict, finish=None) -> dict:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"id": "chatcmpl-up", "object": "chat.completion.chunk", "created": 1,
                "model": "upstream-m", "choices": [choice]}  # fmt: skip

    frames = [data_chunk(chunk({"role": "assistant", "content": ""}))]
    frames += [data_chunk(chunk({"content": piece})) for piece in PIECES]
    if ending == "cut":
        return b"".join(frames)
    if ending == "error":
        return b"".join(frames) + data_chunk({"error": {"message": "Overloaded"}})
    frames.append(data_chunk(chunk({}, "stop")))
    usage = {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    frames.append(data_chunk({**chunk({}), "choices": [], "usage": usage}))
    return b"".join(frames) + DONE_EVENT


def messages_upstream(ending: str) -> bytes:
    """An Anthropic Messages event stream of PIECES; ``ending``: done | cut | error."""

    def ev(name: str, **data) -> bytes:
        return messages_sse_event(name, {"type": name, **data})

    message = {"id": "msg_up", "type": "message", "role": "assistant", "model": "upstream-m",
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": 11, "output_tokens": 1}}  # fmt: skip
    raw = ev("message_start", message=message) + ev("ping")
    raw += ev("content_block_start", index=0, content_block={"type": "text", "text": ""})
    for piece in PIECES:
        raw += ev("content_block_delta", index=0, delta={"type": "text_delta", "text": piece})
    if ending == "cut":
        return raw
    if ending == "error":
        return raw + ev("error", error={"type": "overloaded_error", "message": "Overloaded"})
    raw += ev("content_block_stop", index=0)
    raw += ev("message_delta", delta={"stop_reason": "end_turn", "stop_sequence": None},
              usage={"output_tokens": 4})  # fmt: skip
    return raw + ev("message_stop")


# --------------------------------------------------------------------------- clients


def chat_client(raw: bytes, *, usage: bool = False):
    """(text, error message) as the openai SDK's stream accumulator sees the stream, or
    with ``usage`` the output tokens it reports."""
    streaming = pytest.importorskip("openai.lib.streaming.chat")
    types = pytest.importorskip("openai.types.chat")
    frames = [f for f in raw.split(b"\n\n") if f]
    assert frames[-1] == DONE_EVENT.strip() or b'"error"' in frames[-1]
    state = streaming.ChatCompletionStreamState()
    for frame in frames:
        data = orjson.loads(frame.removeprefix(b"data: ")) if frame != DONE_EVENT.strip() else None
        if data is None:
            break
        if "error" in data:
            return None, data["error"]["message"]
        state.handle_chunk(types.ChatCompletionChunk.model_validate(data))
    final = state.get_final_completion()
    if usage:
        return final.usage.completion_tokens
    return final.choices[0].message.content, None


def messages_client(raw: bytes, *, usage: bool = False):
    """(text, error message) as the anthropic SDK's event accumulator sees the stream, or
    with ``usage`` the output tokens it reports."""
    streaming = pytest.importorskip("anthropic.lib.streaming._messages")
    events = [(n, orjson.loads(d)) for n, d in parse_sse_events(raw)]
    assert stream_invariant_violations(events) == []
    params = inspect.signature(streaming.accumulate_event).parameters
    snapshot, json_bufs = None, {}
    for name, data in events:
        if name == "error":
            return None, data["error"]["message"]
        if name == "ping":
            continue
        kwargs = {"event": data, "current_snapshot": snapshot}
        if "json_bufs" in params:
            kwargs["json_bufs"] = json_bufs
        snapshot = streaming.accumulate_event(**kwargs)
    if usage:
        return snapshot.usage.output_tokens
    return "".join(b.text for b in snapshot.content if b.type == "text"), None


def responses_client(raw: bytes, *, usage: bool = False):
    """(text, error message) from the Response the last event carries (openai's type), or
    with ``usage`` the output tokens it reports."""
    types = pytest.importorskip("openai.types.responses")
    name, data = parse_sse_events(raw)[-1]
    response = types.Response.model_validate(orjson.loads(data)["response"])
    if name == "response.failed":
        return None, response.error.message
    if usage:
        return response.usage.output_tokens
    return response.output_text, None


# --------------------------------------------------------------------------- converters

CONVERTERS = {
    "chat relay": (
        lambda: ChatStreamRelay("public-m", client_wants_usage=True),
        chat_upstream,
        chat_client,
    ),
    "messages relay": (lambda: MessagesStreamRelay("public-m"), messages_upstream, messages_client),
    "chat to messages": (
        lambda: ChatStreamToMessagesStream("public-m", ToolNameMap(), "msg_1", 5),
        chat_upstream,
        messages_client,
    ),
    "messages to chat": (
        lambda: MessagesStreamToChatStream("public-m", True, "chatcmpl-1", 1),
        messages_upstream,
        chat_client,
    ),
    "chat to responses": (
        lambda: ChatStreamToResponseEvents(
            response_shell("resp_1", "public-m", {"input": "x"}, 1700000000)
        ),
        chat_upstream,
        responses_client,
    ),
}


def drive(converter, raw: bytes, size: int, *, transport_failed: bool = False) -> bytes:
    """The one driver loop, over reads of ``size`` bytes."""
    out = [converter.start()]
    for i in range(0, len(raw), size):
        out.append(converter.feed(raw[i : i + size]))
        if converter.done:
            break
    else:
        out.append(converter.feed(b""))
    if transport_failed or not converter.complete:
        said = (converter.error or {}).get("message") or "The upstream stream was cut."
        out.append(converter.fail(said))
    else:
        out.append(converter.finish(ESTIMATE))
    # a converter that has ended sends nothing more, whatever the driver calls
    assert converter.fail("again") + converter.finish(ESTIMATE) == b""
    return b"".join(out)


@pytest.fixture(params=sorted(CONVERTERS))
def kind(request):
    return CONVERTERS[request.param]


@pytest.mark.parametrize("size", [1, 7, 100000])
def test_a_whole_answer_reaches_the_client_whatever_the_read_sizes(kind, size):
    make, upstream, client = kind
    assert client(drive(make(), upstream("done"), size)) == (TEXT, None)


def test_a_whole_answer_is_complete(kind):
    make, upstream, _client = kind
    converter = make()
    drive(converter, upstream("done"), 5)
    assert converter.complete


def test_the_upstream_usage_is_kept(kind):
    make, upstream, _client = kind
    converter = make()
    drive(converter, upstream("done"), 5)
    assert converter.usage is not None


def test_the_client_is_shown_the_upstream_output_tokens(kind):
    make, upstream, client = kind
    assert client(drive(make(), upstream("done"), 5), usage=True) == 4


@pytest.mark.parametrize("size", [1, 7, 100000])
def test_a_truncated_stream_ends_in_an_error_the_client_sees(kind, size):
    make, upstream, client = kind
    assert client(drive(make(), upstream("cut"), size)) == (None, "The upstream stream was cut.")


def test_a_truncated_stream_is_not_complete(kind):
    make, upstream, _client = kind
    converter = make()
    drive(converter, upstream("cut"), 5)
    assert not converter.complete


@pytest.mark.parametrize("size", [1, 7, 100000])
def test_an_upstream_error_reaches_the_client_as_an_error(kind, size):
    make, upstream, client = kind
    assert client(drive(make(), upstream("error"), size)) == (None, "Overloaded")


def test_an_upstream_error_is_kept(kind):
    make, upstream, _client = kind
    converter = make()
    drive(converter, upstream("error"), 5)
    assert converter.error["message"] == "Overloaded"


@pytest.mark.parametrize("ending", ["done", "cut", "error"])
def test_nothing_goes_out_after_the_end(kind, ending):
    make, upstream, _client = kind
    converter = make()
    drive(converter, upstream(ending), 5)
    assert converter.feed(upstream("done")) == b""


def test_an_upstream_error_stops_the_reading(kind):
    make, upstream, _client = kind
    converter = make()
    converter.feed(upstream("error") + upstream("done"))
    assert converter.done


def test_a_transport_failure_after_a_whole_answer_still_ends_in_one_error(kind):
    make, upstream, client = kind
    raw = drive(make(), upstream("cut"), 5, transport_failed=True)
    assert client(raw)[1] == "The upstream stream was cut."


def test_an_event_the_upstream_left_unterminated_is_read_at_the_close(kind):
    make, upstream, client = kind
    raw = upstream("done")
    # (the pass-through relay drops it instead: it never forwards half an event)
    converter = make()
    out = drive(converter, raw.removesuffix(b"\n\n") + b"\n", 4)
    if isinstance(converter, MessagesStreamRelay):
        assert not converter.complete
    else:
        assert client(out) == (TEXT, None)
