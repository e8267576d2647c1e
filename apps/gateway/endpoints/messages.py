"""POST /v1/messages: the Anthropic Messages API.

The protocol the deployment's backend speaks (its adapter's ``speaks``) decides the
upstream request (a model may mix both; a failover crosses them freely, since nothing
reached the client before):

* OpenAI's (any OpenAI-compatible server): the request is translated
  (``messages_to_chat_request``) and POSTed to ``/chat/completions``; the answer is
  translated back, streams chunk by chunk into Anthropic's event sequence.
* Anthropic's: passed through untouched but for ``model`` (the upstream name) to
  ``/messages``; streams are relayed byte for byte, parsed only for usage and to put
  the public model name in ``message_start``.

Ledger: protocol ``anthropic``, endpoint ``messages``, tokens in the OpenAI convention
(cached tokens inside ``prompt_tokens`` and again in ``cached_tokens``: see README,
"Token counts").
"""

import dataclasses

import orjson

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import ModelInfo
from apps.gateway.call import (
    MeteredCall,
    authenticate,
    parse_json_body,
    take_attribution,
    take_caller_key,
)
from apps.gateway.endpoints.stream import relay_stream
from apps.gateway.errors import InvalidRequest, param_named_in
from apps.gateway.exchange import Exchange
from apps.gateway.filtering import filter_message, screen_prompt
from apps.gateway.metering import meter, meter_stream
from apps.gateway.protocol.anthropic import (
    PING_EVENT,
    MessagesStreamRelay,
    TranslationError,
    estimate_message_tokens,
    message_events,
    messages_prompt_bound,
    messages_sse_event,
    validate_messages_request,
)
from apps.gateway.protocol.anthropic_to_openai import (
    ChatStreamToMessagesStream,
    ToolNameMap,
    chat_response_to_message,
    messages_to_chat_request,
)
from apps.gateway.protocol.content_filter import messages_prompt_text
from apps.gateway.protocol.openai import (
    estimate_text_tokens,
)
from apps.gateway.protocol.usage import from_anthropic, from_openai
from apps.gateway.state import GatewayState
from apps.gateway.upstream.balancing import session_key_of
from apps.gateway.upstream.bodies import (
    parse_chat_completion,
    parse_message,
    read_upstream,
    rewrite_model,
)
from apps.gateway.upstream.client import UpstreamResponse
from apps.gateway.upstream.fallback import open_served

MAX_MODEL_NAME = 128


async def handle_messages(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    await MeteredCall(state, exchange, key, "messages").run(create_message)


# Passed on to Anthropic-native backends as the client sent them: the beta features it
# opts into. (The API version stays the backend's own, set in its extra headers or
# 2023-06-01: an SDK's newer version may be unknown to an Anthropic-compatible server.)
_NATIVE_HEADERS = (b"anthropic-beta",)


def native_headers(call: MeteredCall) -> dict[str, str] | None:
    sent = call.exchange.headers
    found = {n.decode(): sent[n].decode("latin-1") for n in _NATIVE_HEADERS if sent.get(n)}
    return found or None


def invalid_request(message: str) -> InvalidRequest:
    return InvalidRequest(message, param_named_in(message), "invalid_request_error")


def parse_messages_body(call: MeteredCall, *, require_max_tokens: bool) -> dict:
    body = parse_json_body(call.raw_body)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        call.event.model = body["model"][:MAX_MODEL_NAME]
    take_caller_key(call, body)
    problem = validate_messages_request(body, require_max_tokens=require_max_tokens)
    if problem:
        raise invalid_request(problem)
    take_attribution(call, body, anthropic=True, metadata="user_id")
    return body


@dataclasses.dataclass(slots=True)
class _Request:
    body: dict
    model: ModelInfo
    prompt_estimate: int
    chat_body: dict | None  # the translation, when an OpenAI-compatible deployment may serve
    names: ToolNameMap | None

    def build(self, deployment) -> tuple[str, bytes]:
        if deployment.speaks == ANTHROPIC:
            return "/messages", rewrite_model(self.body, deployment.upstream_model)
        chat_body = self.chat_body
        if "stop" in chat_body and not deployment.reports_stop_sequence:
            # The server would stop without saying on which string: matched here instead.
            chat_body = {k: v for k, v in chat_body.items() if k != "stop"}
        return "/chat/completions", rewrite_model(chat_body, deployment.upstream_model)


def _matches_stops(request: _Request, deployment) -> bool:
    """Whether the gateway matches the client's stop sequences (not sent upstream)."""
    return bool(request.body.get("stop_sequences")) and not deployment.reports_stop_sequence


async def create_message(call: MeteredCall) -> None:
    body = parse_messages_body(call, require_max_tokens=True)
    model = await call.resolve_model(body["model"], fallbacks=True)
    stream = body.get("stream") is True
    call.event.stream = stream
    chat_body = names = None
    if any(d.speaks != ANTHROPIC for d in model.deployments):
        try:
            chat_body, names = messages_to_chat_request(body, upstream_model="")
        except TranslationError as exc:
            raise invalid_request(exc.message) from None
    elif call.route is not None and call.route.protocols - {ANTHROPIC}:
        try:
            chat_body, names = messages_to_chat_request(body, upstream_model="")
        except TranslationError:
            # Only fallbacks would need it: those deployments cannot serve this request.
            for protocol in call.route.protocols - {ANTHROPIC}:
                call.route = call.route.without(protocol)
    request = _Request(body, model, estimate_message_tokens(body), chat_body, names)
    await call.admit(
        model,
        request.prompt_estimate,
        body["max_tokens"],
        prompt_bound=messages_prompt_bound(body, model.bounds),
    )
    if call.key.content_policy is not None:
        await screen_prompt(call, messages_prompt_text(body))
    async with open_served(
        call.state.upstream,
        model,
        call.route,
        "/messages",
        request.build,
        on_fallback=call.served_by,
        stream=stream,
        on_deployment=call.record_deployment,
        health=call.state.health,
        native_headers=native_headers(call),
        session_key=session_key_of(model, body, call.exchange.headers),
        board=call.state.balance,
    ) as (response, deployment):
        native = deployment.speaks == ANTHROPIC
        if not stream:
            raw = await read_upstream(response)
        elif "text/event-stream" not in response.headers.get("Content-Type", ""):
            # Some servers answer a stream request with a plain body: replay it as a stream.
            raw = await read_upstream(response)
            message = _message(call, request, raw, deployment)
            if call.screen is not None:
                await filter_message(call, message)
            if isinstance(message.get("usage"), dict):
                message["usage"]["cost"] = call.cost_text()
            await call.exchange.start_stream()
            call.tail = b"".join(messages_sse_event(n, d) for n, d in message_events(message))
            return
        elif native:
            await _relay_native_stream(call, request, response)
            return
        else:
            await _relay_translated_stream(
                call, request, response, _matches_stops(request, deployment)
            )
            return
    message = _message(call, request, raw, deployment)
    if call.screen is not None:
        await filter_message(call, message)
    call.reply_json(message)


def _message(call: MeteredCall, request: _Request, raw: bytes, deployment) -> dict:
    if deployment.speaks == ANTHROPIC:
        return _native_message(call, request, raw)
    return _translated_message(call, request, raw, _matches_stops(request, deployment))


def _native_message(call: MeteredCall, request: _Request, raw: bytes) -> dict:
    """An Anthropic backend's Message, model renamed, usage metered."""
    answer = parse_message(raw)
    answer["model"] = request.model.name
    meter(
        call.event,
        from_anthropic(answer.get("usage")),
        request.prompt_estimate,
        lambda: estimate_text_tokens(_text_of(answer)),
    )
    return answer


def _translated_message(
    call: MeteredCall, request: _Request, raw: bytes, match_stops: bool
) -> dict:
    """An OpenAI backend's chat completion as an Anthropic Message, usage metered (the
    upstream's count: when the gateway cut the text at a stop sequence, the server still
    generated the rest)."""
    answer = parse_chat_completion(raw)
    message = chat_response_to_message(
        answer,
        model=request.model.name,
        names=request.names or ToolNameMap(),
        stop_sequences=request.body.get("stop_sequences"),
        match_stop_sequences=match_stops,
    )
    billed = meter(
        call.event,
        from_openai(answer.get("usage"), answer.get("service_tier")),
        request.prompt_estimate,
        lambda: estimate_text_tokens(_text_of(message)),
    )
    if not billed.reported:
        message["usage"] = {
            **message["usage"],
            "input_tokens": billed.prompt,
            "output_tokens": billed.completion,
        }
    return message


def _text_of(message: dict) -> str:
    parts = []
    for block in message.get("content") or ():
        if isinstance(block, dict):
            if block.get("type") == "text":
                parts.append(str(block.get("text") or ""))
            elif block.get("type") == "tool_use":
                parts.append(orjson.dumps(block.get("input") or {}).decode())
    return "".join(parts)


async def _relay_native_stream(
    call: MeteredCall, request: _Request, response: UpstreamResponse
) -> None:
    """Anthropic backend → Anthropic client: bytes through, usage captured."""
    relay = MessagesStreamRelay(request.model.name)
    flt = call.screen.message_filter() if call.screen is not None else None

    def settle() -> None:
        prompt, completion, cached = relay.counts()
        meter_stream(
            call.event,
            prompt=prompt,
            cached=cached,
            completion=completion if relay.finished else None,
            prompt_estimate=request.prompt_estimate,
            delivered=max(completion or 0, relay.content_deltas),
            cache_writes=relay.cache_writes(),
            service_tier=relay.service_tier,
        )

    await relay_stream(
        call,
        response.chunks(),
        relay,
        flt=flt,
        settle=settle,
        blocked_tail=lambda: flt.blocked_events(flt.delivered),
    )


async def _relay_translated_stream(
    call: MeteredCall, request: _Request, response: UpstreamResponse, match_stops: bool
) -> None:
    """OpenAI backend → Anthropic client: chunks converted to Anthropic's events.

    A stop sequence matched here ends the reading: leaving the upstream response
    unread closes its connection, so the server stops generating."""
    converter = ChatStreamToMessagesStream(
        request.model.name,
        request.names or ToolNameMap(),
        "msg_" + call.exchange.request_id.removeprefix("req_"),
        request.prompt_estimate,
        stop_sequences=request.body.get("stop_sequences"),
        match_stop_sequences=match_stops,
    )
    flt = call.screen.message_filter() if call.screen is not None else None

    def settle() -> None:
        prompt = converter.prompt_tokens
        meter_stream(
            call.event,
            prompt=prompt,
            cached=converter.cached_tokens,
            # a completion count without the prompt's is no final usage
            completion=converter.completion_tokens if prompt is not None else None,
            prompt_estimate=request.prompt_estimate,
            delivered=converter.content_chunks,
            reasoning=converter.reasoning_tokens,
            service_tier=converter.service_tier,
        )

    def bill_what_the_client_was_told() -> None:
        # Completed without usage: the output tokens message_delta showed.
        if call.event.tokens_estimated and converter.completion_tokens is None:
            call.event.completion_tokens = converter.output_tokens

    await relay_stream(
        call,
        response.chunks(),
        converter,
        flt=flt,
        settle=settle,
        blocked_tail=lambda: flt.blocked_events(flt.delivered),
        after_finish=bill_what_the_client_was_told,
        ping=PING_EVENT,
    )
