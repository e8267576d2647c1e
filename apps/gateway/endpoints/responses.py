"""POST /v1/responses: OpenAI's Responses API, served by the model's OpenAI-compatible
deployments through Chat Completions (``protocol.responses`` translates).

Metered like a chat completion (endpoint ``responses``). Under a content policy the
prompt is screened as usual; with a completion policy on, a stream is answered from a
checked non-stream completion replayed as events (nothing unchecked reaches the client).
"""

import time

from apps.gateway.caches import ModelInfo
from apps.gateway.call import MeteredCall, authenticate, parse_openai_request
from apps.gateway.endpoints.stream import estimated_usage, relay_stream
from apps.gateway.exchange import Exchange
from apps.gateway.filtering import filter_chat_completion, screen_prompt
from apps.gateway.metering import meter_chat
from apps.gateway.protocol.content_filter import chat_prompt_text
from apps.gateway.protocol.openai import (
    chat_answer_text,
    chat_prompt_bound,
    estimate_prompt_tokens,
    estimate_text_tokens,
)
from apps.gateway.protocol.responses import (
    ChatStreamToResponseEvents,
    chat_to_response,
    response_shell,
    responses_to_chat_request,
)
from apps.gateway.state import GatewayState
from apps.gateway.upstream.balancing import session_key_of
from apps.gateway.upstream.bodies import (
    deployments_offering,
    parse_chat_completion,
    read_upstream,
    rewrite_model,
)
from apps.gateway.upstream.failover import open_upstream


async def handle_responses(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    await MeteredCall(state, exchange, key, "responses").run(create_response)


async def create_response(call: MeteredCall) -> None:
    body, chat = parse_openai_request(call, responses_to_chat_request)
    model = await call.resolve_model(body["model"])
    model = deployments_offering(model, "responses", "Responses")
    stream = chat.get("stream") is True
    call.event.stream = stream
    await call.admit(
        model,
        estimate_prompt_tokens(chat),
        chat.get("max_tokens"),
        prompt_bound=chat_prompt_bound(chat, model.bounds),
    )
    if call.key.content_policy is not None:
        await screen_prompt(call, chat_prompt_text(chat))
    response_id = "resp_" + call.exchange.request_id.removeprefix("req_")
    shell = response_shell(response_id, model.name, body, int(time.time()))
    checked = call.screen is not None and call.screen.policy.completion_active
    session = session_key_of(model, body, call.exchange.headers)
    if stream and not checked:
        await _relay_stream(call, chat, model, shell, session)
        return
    chat.pop("stream", None)
    chat.pop("stream_options", None)
    async with _chat_upstream(call, model, chat, session, stream=False) as (response, _):
        raw = await read_upstream(response)
    await _answer(call, chat, shell, parse_chat_completion(raw), stream)


def _chat_upstream(
    call: MeteredCall, model: ModelInfo, chat: dict, session: int | None, *, stream: bool
):
    return open_upstream(
        call.state.upstream,
        model,
        "/chat/completions",
        lambda d: rewrite_model(chat, d.upstream_model),
        stream=stream,
        on_deployment=call.record_deployment,
        health=call.state.health,
        session_key=session,
        board=call.state.balance,
    )


def _calls_text(calls) -> str:
    """The arguments of tool calls: output tokens too, for the estimate."""
    return "".join(
        str((c.get("function") or {}).get("arguments") or "") for c in calls if isinstance(c, dict)
    )


async def _answer(call: MeteredCall, chat: dict, shell: dict, answer: dict, stream: bool) -> None:
    choice = (answer.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    calls = message.get("tool_calls") or []
    text = chat_answer_text(answer) + _calls_text(calls)
    meter_chat(
        call.event,
        chat,
        answer.get("usage"),
        estimate_text_tokens(text),
        answer.get("service_tier"),
    )
    if call.screen is not None:
        await filter_chat_completion(call, answer)
    if not stream:
        result = chat_to_response(answer, shell, estimated_usage(call.event))
        call.reply_json(result)
        return
    # the whole answer replayed as one stream
    converter = ChatStreamToResponseEvents(shell)
    delta = {"content": message.get("content")}
    delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(calls) if isinstance(c, dict)]
    chunk = {
        "choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}],
        "usage": answer.get("usage"),
    }
    await call.exchange.start_stream()
    await call.exchange.stream_send(converter.start() + converter.feed_chunk(chunk))
    call.tail = converter.finish(estimated_usage(call.event))


async def _relay_stream(
    call: MeteredCall, chat: dict, model: ModelInfo, shell: dict, session: int | None
) -> None:
    converter = ChatStreamToResponseEvents(shell)

    def settle() -> None:
        said = "".join(converter.text) + "".join(
            i["arguments"] for i in converter.items if i["type"] == "function_call"
        )
        meter_chat(
            call.event, chat, converter.usage, estimate_text_tokens(said), converter.service_tier
        )

    async with _chat_upstream(call, model, chat, session, stream=True) as (response, _):
        if "text/event-stream" not in response.headers.get("Content-Type", ""):
            # Some servers answer a stream request with a plain completion.
            answer = parse_chat_completion(await read_upstream(response))
            await _answer(call, chat, shell, answer, True)
            return
        # (no stream filter: under a completion policy a stream is answered by _answer)
        await relay_stream(
            call,
            response.chunks(),
            converter,
            flt=None,
            settle=settle,
            prologue=True,
        )
