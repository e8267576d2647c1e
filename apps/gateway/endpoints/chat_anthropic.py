"""/v1/chat/completions served by an Anthropic-native backend: the reverse translation.

``chat`` calls in here only for models with at least one deployment whose backend
speaks Anthropic's API, so its OpenAI-backend hot path is unchanged. The request is
translated once (``chat_to_messages_request``, errors → 400) and each deployment gets
the body of the protocol its backend's adapter speaks; the answer (JSON or event
stream) is translated into a chat completion (or chunks), usage metered in the
ledger's OpenAI convention.
"""

import time
from collections.abc import AsyncIterator

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import ModelInfo
from apps.gateway.call import MeteredCall
from apps.gateway.endpoints.stream import relay_stream
from apps.gateway.errors import InvalidRequest, param_named_in
from apps.gateway.filtering import blocked_chat_tail, filter_chat_completion
from apps.gateway.metering import meter, meter_stream
from apps.gateway.protocol.anthropic import (
    TranslationError,
    message_events,
    messages_sse_event,
)
from apps.gateway.protocol.openai import estimate_prompt_tokens, estimate_text_tokens
from apps.gateway.protocol.openai_to_anthropic import (
    MessagesStreamToChatStream,
    chat_to_messages_request,
    message_response_to_chat,
)
from apps.gateway.protocol.usage import from_anthropic
from apps.gateway.upstream.bodies import parse_message, read_upstream, rewrite_model
from apps.gateway.upstream.client import UpstreamResponse
from apps.gateway.upstream.failover import scrub_for


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
    meter(
        call.event,
        from_anthropic(message.get("usage")),
        lambda: estimate_prompt_tokens(body),
        lambda: estimate_text_tokens(
            "".join(str(b.get("text") or "") for b in message["content"] if isinstance(b, dict))
        ),
    )


async def answer_chat_once(
    call: MeteredCall, body: dict, model: ModelInfo, response: UpstreamResponse
) -> None:
    message = await _read_message(response)
    _settle_message_usage(call, body, message)
    completion = message_response_to_chat(message, model=model.name)
    if call.screen is not None:
        await filter_chat_completion(call, completion)
    call.reply_json(completion)


async def relay_chat_stream(
    call: MeteredCall,
    body: dict,
    model: ModelInfo,
    response: UpstreamResponse,
    client_wants_usage: bool,
) -> None:
    """Anthropic event stream → chat.completion.chunk stream (data lines, [DONE])."""
    converter = MessagesStreamToChatStream(
        model.name,
        client_wants_usage,
        "chatcmpl-" + call.exchange.request_id.removeprefix("req_"),
        int(time.time()),
        scrub=lambda said: scrub_for(call.deployment, said),
    )
    flt = call.screen.chat_filter() if call.screen is not None else None
    if "text/event-stream" in response.headers.get("Content-Type", ""):
        chunks = response.chunks()
    else:  # a whole Message for a stream request: replayed as its event stream
        message = await _read_message(response)
        chunks = _one(b"".join(messages_sse_event(n, d) for n, d in message_events(message)))
    await relay_stream(
        call,
        chunks,
        converter,
        flt=flt,
        settle=lambda: _settle_stream_usage(call, body, converter),
        blocked_tail=lambda: blocked_chat_tail(
            call, flt, model.name, client_wants_usage, converter.chat_id, converter.created
        ),
    )


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


def _settle_stream_usage(
    call: MeteredCall, body: dict, converter: MessagesStreamToChatStream
) -> None:
    meter_stream(
        call.event,
        prompt=converter.prompt_tokens,
        cached=converter.cached_tokens,
        completion=converter.completion_tokens if converter.final_usage else None,
        prompt_estimate=lambda: estimate_prompt_tokens(body),
        delivered=converter.content_deltas,
        cache_writes=converter.cache_writes(),
        service_tier=converter.service_tier,
    )
