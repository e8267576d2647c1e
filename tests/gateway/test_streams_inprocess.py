"""Stream edge cases, in process: the gateway app through httpx.ASGITransport, the official
SDKs as clients, and a scripted upstream stating chunk by chunk what the backend sends
(tests/gateway/inprocess.py). Keys, limits and the usage stream are the real Postgres and
Redis; each test asserts what the client sees and the usage event the call settled.

Routes and backends: chat on an OpenAI backend, chat over an Anthropic backend, messages
translated to an OpenAI backend and native to an Anthropic one, and responses.
"""

import anthropic
import openai
import orjson
import pytest

from apps.gateway.upstream.client import ConnectError
from tests.gateway.inprocess import BASE_URL, InProcessGateway, ScriptedAnswer

# The rows are the module's scripted seed, committed; the tests themselves write none.
pytestmark = pytest.mark.django_db

# What every scripted upstream reports (in its own protocol's words).
PROMPT_TOKENS = 11
COMPLETION_TOKENS = 3
WORDS = ("Hel", "lo ", "there")
TEXT = "".join(WORDS)

OPENAI_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
}
HI = [{"role": "user", "content": "hi"}]


# --- what the upstream sends ------------------------------------------------------------


def data(payload: dict | str) -> bytes:
    text = payload if isinstance(payload, str) else orjson.dumps(payload).decode()
    return f"data: {text}\n\n".encode()


def chat_chunk(delta: dict | None = None, finish: str | None = None, **extra) -> bytes:
    choices = (
        []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}]
    )
    return data(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": 1767225600,
            "model": "fake-upstream-model",
            "choices": choices,
            **extra,
        }
    )


def chat_stream(*, usage: bool = True) -> list[bytes]:
    """A whole OpenAI stream: role, one chunk per word, finish, usage (when asked), [DONE]."""
    chunks = [chat_chunk({"role": "assistant", "content": ""})]
    chunks += [chat_chunk({"content": word}) for word in WORDS]
    chunks.append(chat_chunk({}, "stop"))
    if usage:
        chunks.append(chat_chunk(usage=OPENAI_USAGE))
    return [*chunks, data("[DONE]")]


def chat_completion_body() -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": 1767225600,
            "model": "fake-upstream-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": TEXT},
                    "finish_reason": "stop",
                }
            ],
            "usage": OPENAI_USAGE,
        }
    )


def event(name: str, payload: dict) -> bytes:
    return f"event: {name}\ndata: {orjson.dumps({'type': name, **payload}).decode()}\n\n".encode()


def anthropic_message(content: list) -> dict:
    return {
        "id": "msg_upstream",
        "type": "message",
        "role": "assistant",
        "model": "claude-upstream",
        "content": content,
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
    }


def message_stream() -> list[bytes]:
    """A whole Anthropic stream, one content_block_delta per word, ending in message_stop."""
    return [
        event("message_start", {"message": anthropic_message([])}),
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        *(
            event(
                "content_block_delta",
                {"index": 0, "delta": {"type": "text_delta", "text": word}},
            )
            for word in WORDS
        ),
        event("content_block_stop", {"index": 0}),
        event(
            "message_delta",
            {
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
        ),
        event("message_stop", {}),
    ]


def message_body() -> bytes:
    message = anthropic_message([{"type": "text", "text": TEXT}])
    message["stop_reason"] = "end_turn"
    message["usage"] = {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS}
    return orjson.dumps(message)


def always(answer: ScriptedAnswer):
    return lambda deployment, path, body: answer


# How each route meets each backend: the model the seed routes there, the whole stream
# and the whole JSON answer its backend sends, and where a stream is cut mid-way (after
# the first word, before any end).
OPENAI_BACKEND = {
    "model": "test-model",
    "stream": chat_stream,
    "body": chat_completion_body,
    "first_word": 2,
    "in_band_error": data({"error": {"message": "the model is overloaded", "type": "server"}}),
}
ANTHROPIC_BACKEND = {
    "model": "claude-fake",
    "stream": message_stream,
    "body": message_body,
    "first_word": 3,
    "in_band_error": event(
        "error", {"error": {"type": "overloaded_error", "message": "the model is overloaded"}}
    ),
}


# --- what the client sees -------------------------------------------------------------


def openai_sdk(gateway: InProcessGateway, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url=BASE_URL + "/v1", api_key=secret, http_client=gateway.client, max_retries=0
    )


def anthropic_sdk(gateway: InProcessGateway, secret: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=BASE_URL,
        api_key=secret,
        http_client=gateway.anthropic_http_client,
        max_retries=0,
    )


class Seen:
    """A stream as the SDK gave it to the client: its items, and the error it raised."""

    def __init__(self, items: list, error: Exception | None) -> None:
        self.items = items
        self.error = error

    @property
    def text(self) -> str:
        parts = []
        for item in self.items:
            kind = getattr(item, "type", None)
            if kind == "content_block_delta" and item.delta.type == "text_delta":
                parts.append(item.delta.text)
            elif kind == "response.output_text.delta":
                parts.append(item.delta)
            elif kind is None:  # a chat.completion.chunk
                parts.extend(c.delta.content or "" for c in item.choices)
        return "".join(parts)

    @property
    def failure(self) -> str | None:
        """What the client was told went wrong: the SDK's error, or a failed response."""
        if self.error is not None:
            return str(self.error)
        for item in self.items:
            if getattr(item, "type", None) == "response.failed":
                return item.response.error.message
        return None


async def _collect(opening) -> Seen:
    """The stream ``opening`` (an SDK call) gives, read to its end or its error."""
    items = []
    try:
        async for item in await opening:
            items.append(item)
    except (openai.APIError, anthropic.APIError) as exc:
        return Seen(items, exc)
    return Seen(items, None)


def chat(gateway: InProcessGateway, secret: str, model: str, **extra) -> Seen:
    sdk = openai_sdk(gateway, secret)
    return gateway.run(
        _collect(sdk.chat.completions.create(model=model, messages=HI, stream=True, **extra))
    )


def messages(gateway: InProcessGateway, secret: str, model: str, **extra) -> Seen:
    sdk = anthropic_sdk(gateway, secret)
    return gateway.run(
        _collect(sdk.messages.create(model=model, max_tokens=64, messages=HI, stream=True, **extra))
    )


def responses(gateway: InProcessGateway, secret: str, model: str, **extra) -> Seen:
    sdk = openai_sdk(gateway, secret)
    return gateway.run(
        _collect(sdk.responses.create(model=model, input="hi", stream=True, **extra))
    )


def settled(gateway: InProcessGateway):
    """The one usage event the call appended to the Redis stream."""
    events = gateway.usage_events()
    assert len(events) == 1, events
    return events[0]


ROUTES = {
    "chat": (chat, OPENAI_BACKEND),
    "chat-over-anthropic": (chat, ANTHROPIC_BACKEND),
    "messages-translated": (messages, OPENAI_BACKEND),
    "messages-native": (messages, ANTHROPIC_BACKEND),
    "responses": (responses, OPENAI_BACKEND),
}
route = pytest.mark.parametrize("route", ROUTES)


# --- every route --------------------------------------------------------------------------


@route
def test_a_whole_stream_reaches_the_client_and_bills_the_upstreams_usage(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=backend["stream"]())))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.error is None
    assert seen.text == TEXT
    event = settled(gateway)
    assert event.outcome == "ok"
    assert event.stream is True
    assert (event.prompt_tokens, event.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert event.tokens_estimated is False


@route
def test_a_stream_split_inside_its_events_reaches_the_client_whole(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    whole = b"".join(backend["stream"]())
    pieces = [whole[i : i + 7] for i in range(0, len(whole), 7)]
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=pieces)))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.error is None
    assert seen.text == TEXT
    assert settled(gateway).completion_tokens == COMPLETION_TOKENS


def assert_billed_as_a_broken_stream(event) -> None:
    """A stream the upstream broke after one word: a 502 failure, billed the one word
    delivered, as an estimate."""
    assert event.outcome == "upstream_stream_error"
    assert event.status == 502
    assert event.completion_tokens == 1
    assert event.tokens_estimated is True


@route
def test_a_stream_the_upstream_closes_mid_way_ends_in_an_error_the_client_sees(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    cut = backend["stream"]()[: backend["first_word"]]
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=cut)))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.text == WORDS[0]
    assert seen.failure is not None
    event = settled(gateway)
    assert_billed_as_a_broken_stream(event)


@route
def test_a_stream_whose_connection_breaks_mid_way_ends_in_an_error_the_client_sees(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    answer = ScriptedAnswer(chunks=backend["stream"](), raise_after=backend["first_word"])
    gateway = scripted_gateway(always(answer))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.text == WORDS[0]
    assert seen.failure is not None
    event = settled(gateway)
    assert_billed_as_a_broken_stream(event)


@route
def test_an_in_band_error_mid_stream_reaches_the_client_as_an_error(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    chunks = [*backend["stream"]()[: backend["first_word"]], backend["in_band_error"]]
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=chunks)))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.text == WORDS[0]
    assert "the model is overloaded" in seen.failure
    event = settled(gateway)
    assert event.outcome == "upstream_stream_error"
    assert event.status == 502
    assert event.completion_tokens == 1


@route
def test_a_json_answer_to_a_stream_request_is_replayed_as_a_stream(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    gateway = scripted_gateway(always(ScriptedAnswer(body=backend["body"]())))
    seen = client(gateway, scripted_seed.secret, backend["model"])
    assert seen.error is None
    assert seen.text == TEXT
    event = settled(gateway)
    assert event.outcome == "ok"
    assert (event.prompt_tokens, event.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)


@route
def test_a_client_gone_mid_stream_closes_the_upstream_response_and_is_billed_as_disconnected(
    scripted_gateway, scripted_seed, route
):
    _client, backend = ROUTES[route]
    # The upstream has sent its first word and is still generating when the client leaves.
    answer = ScriptedAnswer(chunks=backend["stream"](), hang_after=backend["first_word"])
    gateway = scripted_gateway(always(answer))
    path, body = {
        chat: ("/v1/chat/completions", {"messages": HI}),
        messages: ("/v1/messages", {"messages": HI, "max_tokens": 64}),
        responses: ("/v1/responses", {"input": "hi"}),
    }[_client]
    left = gateway.stream_and_leave(
        path,
        body={"model": backend["model"], "stream": True, **body},
        headers={
            "authorization": f"Bearer {scripted_seed.secret}",
            "anthropic-version": "2023-06-01",
            "content-type": "application/json",
        },
        once_received=b'"Hel"',
    )
    assert left.status == 200
    assert gateway.upstream.calls[0].response.closed
    event = settled(gateway)
    assert event.outcome == "client_disconnected"
    assert event.status == 499
    assert event.completion_tokens == 1  # the one word delivered
    assert event.tokens_estimated is True


@route
def test_a_deployment_that_cannot_be_reached_fails_over_before_the_first_byte(
    scripted_gateway, scripted_seed, route
):
    client, backend = ROUTES[route]
    model, survivor = ("failover-model", "fake/fake-failover")
    if backend is ANTHROPIC_BACKEND:
        model, survivor = ("claude-failover", "fake-anthropic/claude-failover")

    def handler(deployment, path, body):
        if deployment.backend == "dead":
            raise ConnectError("connection refused")
        return ScriptedAnswer(chunks=backend["stream"]())

    gateway = scripted_gateway(handler)
    seen = client(gateway, scripted_seed.secret, model)
    assert seen.error is None
    assert seen.text == TEXT
    assert [c.deployment.label for c in gateway.upstream.calls] == ["dead/x", survivor]
    event = settled(gateway)
    assert event.outcome == "ok"
    assert event.deployment == survivor


# --- chat completions: the usage chunk and stream_options ------------------------------


@pytest.mark.parametrize(
    "backend", [OPENAI_BACKEND, ANTHROPIC_BACKEND], ids=["openai", "anthropic"]
)
def test_a_chat_stream_hides_the_usage_chunk_the_client_did_not_ask_for(
    scripted_gateway, scripted_seed, backend
):
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=backend["stream"]())))
    seen = chat(gateway, scripted_seed.secret, backend["model"])
    assert [c for c in seen.items if c.usage is not None] == []
    assert settled(gateway).completion_tokens == COMPLETION_TOKENS


@pytest.mark.parametrize(
    "backend", [OPENAI_BACKEND, ANTHROPIC_BACKEND], ids=["openai", "anthropic"]
)
def test_a_chat_stream_ends_with_the_usage_chunk_the_client_asked_for(
    scripted_gateway, scripted_seed, backend
):
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=backend["stream"]())))
    seen = chat(
        gateway, scripted_seed.secret, backend["model"], stream_options={"include_usage": True}
    )
    usage = seen.items[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert seen.items[-1].choices == []


def test_a_chat_stream_asks_the_upstream_for_usage_the_client_did_not_ask_for(
    scripted_gateway, scripted_seed
):
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=chat_stream())))
    chat(gateway, scripted_seed.secret, "test-model")
    assert gateway.upstream.calls[0].body["stream_options"] == {"include_usage": True}


STREAM_OPTIONS_REFUSED = ScriptedAnswer(
    status=400,
    body=orjson.dumps(
        {
            "error": {
                "message": "Unrecognized request argument supplied: stream_options",
                "type": "invalid_request_error",
            }
        }
    ),
)


def refuses_stream_options(deployment, path, body) -> ScriptedAnswer:
    if "stream_options" in body:
        return STREAM_OPTIONS_REFUSED
    return ScriptedAnswer(chunks=chat_stream(usage=False))


def test_a_chat_stream_refused_for_its_stream_options_is_retried_without_them(
    scripted_gateway, scripted_seed
):
    gateway = scripted_gateway(refuses_stream_options)
    seen = chat(gateway, scripted_seed.secret, "test-model")
    assert seen.error is None
    assert seen.text == TEXT
    assert ["stream_options" in c.body for c in gateway.upstream.calls] == [True, False]


def test_a_chat_stream_retried_without_stream_options_bills_an_estimate(
    scripted_gateway, scripted_seed
):
    gateway = scripted_gateway(refuses_stream_options)
    chat(gateway, scripted_seed.secret, "test-model")
    event = settled(gateway)
    assert event.outcome == "ok"
    assert event.tokens_estimated is True
    assert event.completion_tokens == len(WORDS)


def test_a_chat_stream_whose_client_set_stream_options_gets_the_refusal(
    scripted_gateway, scripted_seed
):
    gateway = scripted_gateway(refuses_stream_options)
    seen = chat(gateway, scripted_seed.secret, "test-model", stream_options={"include_usage": True})
    assert isinstance(seen.error, openai.BadRequestError)
    assert len(gateway.upstream.calls) == 1


# --- token classes ------------------------------------------------------------------------


def chat_stream_with_classes() -> list[bytes]:
    """An OpenAI stream whose usage chunk details reasoning tokens and names its tier."""
    *head, _usage, done = chat_stream()
    usage = {**OPENAI_USAGE, "completion_tokens_details": {"reasoning_tokens": 2}}
    return [*head, chat_chunk(usage=usage, service_tier="flex"), done]


def message_stream_with_classes() -> list[bytes]:
    """An Anthropic stream whose message_start writes the cache with both TTLs."""
    message = anthropic_message([])
    message["usage"] = {
        **message["usage"],
        "cache_creation_input_tokens": 5,
        "cache_creation": {"ephemeral_5m_input_tokens": 3, "ephemeral_1h_input_tokens": 2},
        "service_tier": "priority",
    }
    return [event("message_start", {"message": message}), *message_stream()[1:]]


# route → (the stream its backend sends, the classes its usage event carries)
CLASSES = {
    "chat": (chat_stream_with_classes, {"reasoning_tokens": 2, "service_tier": "flex"}),
    "messages-translated": (
        chat_stream_with_classes,
        {"reasoning_tokens": 2, "service_tier": "flex"},
    ),
    "responses": (chat_stream_with_classes, {"reasoning_tokens": 2, "service_tier": "flex"}),
    "chat-over-anthropic": (
        message_stream_with_classes,
        {"cache_write_5m_tokens": 3, "cache_write_1h_tokens": 2, "service_tier": "priority"},
    ),
    "messages-native": (
        message_stream_with_classes,
        {"cache_write_5m_tokens": 3, "cache_write_1h_tokens": 2, "service_tier": "priority"},
    ),
}


@route
def test_a_stream_bills_the_token_classes_its_usage_reports(scripted_gateway, scripted_seed, route):
    client, backend = ROUTES[route]
    stream, classes = CLASSES[route]
    gateway = scripted_gateway(always(ScriptedAnswer(chunks=stream())))
    client(gateway, scripted_seed.secret, backend["model"])
    event = settled(gateway)
    assert {name: getattr(event, name) for name in classes} == classes
