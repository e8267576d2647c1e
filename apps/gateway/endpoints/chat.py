"""POST /v1/chat/completions.

OpenAI-compatible deployments are relayed here (the hot path); a model with an
Anthropic-native deployment also goes through ``chat_anthropic``, which
translates the request per deployment and the answer back.
"""

import time

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import ModelInfo
from apps.gateway.call import MeteredCall, authenticate, parse_openai_request
from apps.gateway.endpoints.chat_anthropic import (
    answer_chat_once,
    chat_request_builder,
    has_anthropic_deployment,
    relay_chat_stream,
    translate_chat_request,
)
from apps.gateway.endpoints.stream import end_stream, relay_stream
from apps.gateway.errors import GatewayError, InvalidRequest
from apps.gateway.exchange import Exchange
from apps.gateway.filtering import blocked_chat_tail, filter_chat_completion, screen_prompt
from apps.gateway.metering import meter_chat
from apps.gateway.protocol.content_filter import chat_prompt_text
from apps.gateway.protocol.openai import (
    ChatStreamRelay,
    chat_answer_text,
    chat_prompt_bound,
    data_chunk,
    drop_message_nulls,
    estimate_prompt_tokens,
    estimate_text_tokens,
    validate_chat_request,
)
from apps.gateway.state import GatewayState
from apps.gateway.upstream.balancing import session_key_of
from apps.gateway.upstream.bodies import parse_chat_completion, read_upstream, rewrite_model
from apps.gateway.upstream.fallback import open_served


async def handle_chat_completions(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    await MeteredCall(state, exchange, key, "chat.completions").run(chat_completion)


async def chat_completion(call: MeteredCall) -> None:
    body, _ = parse_openai_request(call, validate_chat_request, metadata="unstored")
    drop_message_nulls(body["messages"])
    model = await call.resolve_model(body["model"], fallbacks=True)
    stream = body.get("stream") is True
    call.event.stream = stream
    max_output = body.get("max_completion_tokens") or body.get("max_tokens")
    # Translated once, before admission, so an untranslatable request is a plain 400.
    translated = translate_chat_request(body) if has_anthropic_deployment(model) else None
    if translated is None and call.route is not None and ANTHROPIC in call.route.protocols:
        try:
            translated = translate_chat_request(body)
        except InvalidRequest:
            # Only fallbacks would need it: those deployments cannot serve this request.
            call.route = call.route.without(ANTHROPIC)
    await call.admit(
        model,
        estimate_prompt_tokens(body),
        max_output,
        prompt_bound=chat_prompt_bound(body, model.bounds),
        choices=body.get("n"),
    )
    if call.key.content_policy is not None:
        await screen_prompt(call, chat_prompt_text(body))
    if stream:
        await _relay_stream(call, body, model, translated)
    else:
        await _relay_once(call, body, model, translated)


def _open_upstream(
    call: MeteredCall, body: dict, model: ModelInfo, translated: dict | None, *, stream: bool
):
    return open_served(
        call.state.upstream,
        model,
        call.route,
        "/chat/completions",
        (
            (lambda d: rewrite_model(body, d.upstream_model))
            if translated is None
            else chat_request_builder(body, translated)
        ),
        on_fallback=call.served_by,
        stream=stream,
        on_deployment=call.record_deployment,
        health=call.state.health,
        session_key=session_key_of(model, body, call.exchange.headers),
        board=call.state.balance,
    )


async def _relay_once(
    call: MeteredCall, body: dict, model: ModelInfo, translated: dict | None
) -> None:
    async with _open_upstream(call, body, model, translated, stream=False) as (
        response,
        deployment,
    ):
        if deployment.speaks == ANTHROPIC:
            await answer_chat_once(call, body, model, response)
            return
        raw = await read_upstream(response)
    answer = parse_chat_completion(raw)
    answer["model"] = model.name
    meter_chat(
        call.event,
        body,
        answer.get("usage"),
        estimate_text_tokens(chat_answer_text(answer)),
        answer.get("service_tier"),
    )
    if call.screen is not None:
        await filter_chat_completion(call, answer)
    call.reply_json(answer)


async def _relay_stream(
    call: MeteredCall, body: dict, model: ModelInfo, translated: dict | None
) -> None:
    options = body.get("stream_options")
    client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True
    body["stream_options"] = {**(options or {}), "include_usage": True}
    relay = ChatStreamRelay(
        model.name, client_wants_usage, "chatcmpl-" + call.exchange.request_id.removeprefix("req_")
    )
    flt = call.screen.chat_filter() if call.screen is not None else None

    def settle() -> None:
        delivered = relay.content_chunks
        if flt is not None and flt.guard is not None:
            delivered = flt.guard.delivered_text_items
        meter_chat(call.event, body, relay.usage, delivered, relay.service_tier)

    def blocked_tail() -> bytes:
        return blocked_chat_tail(
            call, flt, relay.public_model, client_wants_usage, relay.chunk_id, relay.created
        )

    for attempt in range(2):
        try:
            async with _open_upstream(call, body, model, translated, stream=True) as (
                response,
                deployment,
            ):
                if deployment.speaks == ANTHROPIC:
                    await relay_chat_stream(call, body, model, response, client_wants_usage)
                elif "text/event-stream" not in response.headers.get("Content-Type", ""):
                    # Some servers answer a stream request with a plain completion.
                    raw = await read_upstream(response)
                    relay.cost_of = call.cost_text
                    await _replay_as_stream(call, relay, raw)
                    settle()
                    await end_stream(
                        call, relay, flt=flt, failed=False, held=b"", blocked_tail=blocked_tail
                    )
                else:
                    await relay_stream(
                        call,
                        response.chunks(),
                        relay,
                        flt=flt,
                        settle=settle,
                        blocked_tail=blocked_tail,
                    )
            return
        except GatewayError as exc:
            # Some servers refuse the stream_options we add for metering: without it.
            if attempt or options is not None or "stream_options" not in exc.message:
                raise
            body.pop("stream_options", None)


async def _replay_as_stream(call: MeteredCall, relay: ChatStreamRelay, raw: bytes) -> None:
    answer = parse_chat_completion(raw)
    if call.screen is not None:
        await filter_chat_completion(call, answer)
    await call.exchange.start_stream()
    base = {
        "id": answer.get("id") or "chatcmpl-" + call.exchange.request_id,
        "object": "chat.completion.chunk",
        "created": answer.get("created") or int(time.time()),
        "model": relay.public_model,
    }
    choices = []
    for choice in answer["choices"]:
        message = choice.get("message") or {}
        delta = {k: v for k, v in message.items() if v is not None}
        for i, tool_call in enumerate(delta.get("tool_calls") or ()):
            tool_call.setdefault("index", i)
        choices.append(
            {
                "index": choice.get("index", 0),
                "delta": delta,
                "logprobs": None,
                "finish_reason": choice.get("finish_reason") or "stop",
            }
        )
    pieces = [relay.feed(data_chunk({**base, "choices": choices}))]
    if answer.get("usage"):
        pieces.append(relay.feed(data_chunk({**base, "choices": [], "usage": answer["usage"]})))
    relay.done = True
    await call.exchange.stream_send(b"".join(pieces))
