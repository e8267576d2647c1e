"""POST /v1/messages/count_tokens: the prompt's token count for an Anthropic client.

Not billed: it appends a usage event with 0 tokens and endpoint
``messages.count_tokens`` (an audit trail of calls, never a cost).
"""

import dataclasses

import orjson

from apps.gateway.caches import ModelInfo
from apps.gateway.call import MeteredCall, authenticate
from apps.gateway.endpoints.messages import native_headers, parse_messages_body
from apps.gateway.errors import GatewayError
from apps.gateway.exchange import JSON_CONTENT_TYPE, Exchange
from apps.gateway.protocol.anthropic import TranslationError, estimate_message_tokens
from apps.gateway.protocol.anthropic_to_openai import messages_to_chat_request
from apps.gateway.state import GatewayState
from apps.gateway.upstream.bodies import loads_or_none, read_upstream, rewrite_model
from apps.gateway.upstream.failover import open_upstream


async def handle_count_tokens(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    await MeteredCall(state, exchange, key, "messages.count_tokens").run(count_tokens)


async def count_tokens(call: MeteredCall) -> None:
    """``{"input_tokens": N}``: from an Anthropic-native deployment's own
    /messages/count_tokens when the model has one (its 4xx relayed; unreachable or
    5xx falls back), else from an OpenAI-compatible server's ``/tokenize`` (vLLM),
    else ``estimate_message_tokens`` (documented there: ⌈text bytes / 4⌉ +
    per-message, per-tool and per-image charges)."""
    body = parse_messages_body(call, require_max_tokens=False)
    model = await call.resolve_model(body["model"])
    native = tuple(d for d in model.deployments if d.adapter.offers("count_tokens"))
    count = None
    if native:
        try:
            answer = await _ask_json(call, model, native, "/messages/count_tokens", body)
        except GatewayError as exc:
            if exc.status < 500:
                raise
            answer = None
        if isinstance(answer, dict) and isinstance(answer.get("input_tokens"), int):
            count = answer["input_tokens"]
    if count is None:
        count = await _tokenize_count(call, model, body)
    if count is None:
        count = estimate_message_tokens(body)
    call.reply = (200, orjson.dumps({"input_tokens": count}), (JSON_CONTENT_TYPE,))


async def _tokenize_count(call: MeteredCall, model: ModelInfo, body: dict) -> int | None:
    """The exact count from an OpenAI-compatible server's ``/tokenize`` (vLLM's, at the
    server root, applies the chat template); None when none answers with one."""
    roots = tuple(
        dataclasses.replace(d, base_url=d.base_url.removesuffix("/").removesuffix("/v1"))
        for d in model.deployments
        if d.adapter.offers("tokenize")
    )
    if not roots:
        return None
    try:
        chat, _names = messages_to_chat_request(body, upstream_model="")
    except TranslationError:
        return None
    request = {"messages": chat["messages"]}
    if chat.get("tools"):
        request["tools"] = chat["tools"]
    try:
        answer = await _ask_json(call, model, roots, "/tokenize", request)
    except GatewayError:
        return None
    count = answer.get("count") if isinstance(answer, dict) else None
    return count if type(count) is int and count >= 0 else None


async def _ask_json(call: MeteredCall, model: ModelInfo, deployments, path: str, body: dict):
    """One non-stream request to ``deployments`` of ``model``; its JSON answer (None when
    unreadable). Upstream failures raise GatewayError, as open_upstream does."""
    async with open_upstream(
        call.state.upstream,
        dataclasses.replace(model, deployments=deployments),
        path,
        lambda d: rewrite_model(body, d.upstream_model),
        stream=False,
        on_deployment=call.record_deployment,
        health=call.state.health,
        native_headers=native_headers(call),
    ) as (response, _deployment):
        return loads_or_none(await read_upstream(response))
