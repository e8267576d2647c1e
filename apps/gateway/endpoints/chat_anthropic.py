"""/v1/chat/completions served by an Anthropic-native backend: the reverse translation.

``chat`` calls in here only for models with at least one deployment whose backend
speaks Anthropic's API, so its OpenAI-backend hot path is unchanged. The request is
translated once (``chat_to_messages_request``, errors → 400) and each deployment gets
the body of the protocol its backend's adapter speaks; the answer (JSON or event
stream) is translated into a chat completion (or chunks), usage metered in the
ledger's OpenAI convention.
"""

import time

import orjson

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import ModelInfo
from apps.gateway.call import MeteredCall
from apps.gateway.errors import InvalidRequest, param_named_in
from apps.gateway.exchange import JSON_CONTENT_TYPE
from apps.gateway.filtering import blocked_chat_tail, filter_chat_completion, stream_filter_done
from apps.gateway.protocol.anthropic import (
    TranslationError,
    anthropic_usage_counts,
    message_events,
)
from apps.gateway.protocol.openai import estimate_prompt_tokens, estimate_text_tokens
from apps.gateway.protocol.openai_to_anthropic import (
    MessagesStreamToChatStream,
    chat_to_messages_request,
    message_response_to_chat,
)
from apps.gateway.protocol.sse import SSEParser
from apps.gateway.upstream.bodies import parse_message, read_upstream, rewrite_model
from apps.gateway.upstream.client import ReadError, UpstreamResponse
from apps.gateway.upstream.failover import scrub_for

STREAM_ERROR_MESSAGE = "The upstream failed while streaming the response."


def has_anthropic_deployment(model: ModelInfo) -> bool:
    # A plain loop: ~4x cheaper than any() over a generator, and this runs per request.
    for deployment in model.deployments:  # noqa: SIM110
        if deployment.speaks == ANTHROPIC:
            return True
    return False


def translate_chat_request(body: dict) -> dict:
    """The Messages body for Anthropic deployments (model filled in per deployment)."""
    try:
        return chat_to_messages_request(body, upstream_model="")
    except TranslationError as exc:
        raise InvalidRequest(exc.message, param_named_in(exc.message)) from None


def chat_request_builder(body: dict, translated: dict):
    """build_body for open_upstream: the path and body follow the protocol the
    deployment's backend speaks."""

    def build(deployment):
        if deployment.speaks == ANTHROPIC:
            return "/messages", rewrite_model(translated, deployment.upstream_model)
        return rewrite_model(body, deployment.upstream_model)

    return build


async def _read_message(response: UpstreamResponse) -> dict:
    return parse_message(await read_upstream(response))


def _settle_message_usage(call: MeteredCall, body: dict, message: dict) -> None:
    counts = anthropic_usage_counts(message.get("usage"))
    event = call.event
    if counts is None:
        text = "".join(str(b.get("text") or "") for b in message["content"] if isinstance(b, dict))
        event.prompt_tokens = estimate_prompt_tokens(body)
        event.completion_tokens = estimate_text_tokens(text)
        event.tokens_estimated = True
    else:
        event.prompt_tokens, event.completion_tokens, event.cached_tokens = counts


async def answer_chat_once(
    call: MeteredCall, body: dict, model: ModelInfo, response: UpstreamResponse
) -> None:
    message = await _read_message(response)
    _settle_message_usage(call, body, message)
    completion = message_response_to_chat(message, model=model.name)
    if call.screen is not None:
        await filter_chat_completion(call, completion)
    call.reply = (200, orjson.dumps(completion), (JSON_CONTENT_TYPE,))


async def relay_chat_stream(
    call: MeteredCall,
    body: dict,
    model: ModelInfo,
    response: UpstreamResponse,
    client_wants_usage: bool,
) -> None:
    """Anthropic event stream → chat.completion.chunk stream (data lines, [DONE])."""
    exchange = call.exchange
    converter = MessagesStreamToChatStream(
        model.name,
        client_wants_usage,
        "chatcmpl-" + exchange.request_id.removeprefix("req_"),
        int(time.time()),
    )
    state = {"deltas": 0, "final_usage": False, "upstream_error": False}
    tail: list[bytes] = []

    def convert(events) -> list[bytes]:
        out = []
        for name, data in events:
            if name == "content_block_delta":
                state["deltas"] += 1
            elif name == "message_delta":
                usage = data.get("usage") if isinstance(data, dict) else None
                if isinstance(usage, dict) and isinstance(usage.get("output_tokens"), int):
                    state["final_usage"] = True
            elif name == "error":
                state["upstream_error"] = True
                error = data.get("error") if isinstance(data, dict) else None
                if isinstance(error, dict):
                    said = str(error.get("message") or "")
                    data = {**data, "error": {**error, "message": scrub_for(call.deployment, said)}}
            piece = converter.feed(name, data)
            if converter.done:
                tail.append(piece)  # held back until the usage event is durable
                break
            if piece:
                out.append(piece)
        return out

    def parsed(pairs):
        for event, payload in pairs:
            if event is None or event == b"ping":
                continue
            try:
                data = orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue
            yield event.decode("utf-8", "replace"), data

    failed = False
    flt = call.screen.chat_filter() if call.screen is not None else None
    if "text/event-stream" not in response.headers.get("Content-Type", ""):
        message = await _read_message(response)
        await exchange.start_stream()
        convert(message_events(message))
    else:
        await exchange.start_stream()
        parser = SSEParser()
        try:
            try:
                async for data in response.chunks():
                    out = convert(parsed(parser.feed(data)))
                    if out:
                        await call.relay_out(b"".join(out), flt)
                    if converter.done or (flt is not None and flt.blocked):
                        break
                else:
                    out = convert(parsed(parser.flush()))
                    if out:
                        await call.relay_out(b"".join(out), flt)
            except ReadError:
                failed = True
        finally:
            _settle_stream_usage(call, body, converter, state)
    if flt is not None and flt.blocked:
        stream_filter_done(call, flt.guard, flt.delivered_content_chunks)
        call.tail = blocked_chat_tail(call, flt, model.name, client_wants_usage)
        return
    if not converter.done or state["upstream_error"] or failed:
        call.event.outcome = "upstream_stream_error"
        call.event.status = 502
        if not converter.done:
            tail.append(converter.error(STREAM_ERROR_MESSAGE))
    else:
        _settle_stream_usage(call, body, converter, state)
    call.tail = b"".join(tail)
    if flt is not None:
        call.tail = await flt.finish(call.tail)
        if stream_filter_done(call, flt.guard, flt.delivered_content_chunks):
            call.tail += blocked_chat_tail(call, flt, model.name, client_wants_usage)


def _settle_stream_usage(
    call: MeteredCall, body: dict, converter: MessagesStreamToChatStream, state: dict
) -> None:
    event = call.event
    prompt = converter.prompt_tokens
    event.prompt_tokens = estimate_prompt_tokens(body) if prompt is None else prompt
    event.cached_tokens = converter.cached_tokens or 0
    if state["final_usage"] and converter.completion_tokens is not None:
        event.completion_tokens = converter.completion_tokens
        event.tokens_estimated = prompt is None
    else:
        # Cut short (client gone, upstream failed): the content events delivered.
        event.completion_tokens = max(state["deltas"], 0)
        event.tokens_estimated = True
