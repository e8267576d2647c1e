"""POST /v1/embeddings: relayed to the model's OpenAI-compatible deployments and metered
on the upstream's prompt tokens (an embedding has no output tokens).

Every field the client sent passes through but ``model`` and ``metadata`` (tags: OpenAI's
embeddings take no such object; apps/gateway/protocol/attribution.py) (the SDKs ask for base64
vectors unless told otherwise: the answer is relayed as the backend gives it)."""

from apps.gateway.call import MeteredCall, authenticate, parse_openai_request
from apps.gateway.errors import UpstreamBadResponse
from apps.gateway.exchange import Exchange
from apps.gateway.filtering import screen_prompt
from apps.gateway.metering import meter_embedding
from apps.gateway.protocol.openai import (
    embeddings_prompt_bound,
    estimate_text_tokens,
    validate_embeddings_request,
)
from apps.gateway.state import GatewayState
from apps.gateway.upstream.bodies import (
    deployments_offering,
    loads_or_none,
    read_upstream,
    rewrite_model,
)
from apps.gateway.upstream.failover import open_upstream


async def handle_embeddings(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    await MeteredCall(state, exchange, key, "embeddings").run(create_embeddings)


async def create_embeddings(call: MeteredCall) -> None:
    body, (texts, token_ids) = parse_openai_request(
        call, validate_embeddings_request, metadata="always"
    )
    model = await call.resolve_model(body["model"])
    model = deployments_offering(model, "embeddings", "embeddings")
    estimate = sum(estimate_text_tokens(t) for t in texts) + token_ids
    await call.admit(model, estimate, 0, prompt_bound=embeddings_prompt_bound(texts, token_ids))
    if call.key.content_policy is not None:
        await screen_prompt(call, "\n".join(texts))
    async with open_upstream(
        call.state.upstream,
        model,
        "/embeddings",
        lambda d: rewrite_model(body, d.upstream_model),
        stream=False,
        on_deployment=call.record_deployment,
        health=call.state.health,
        board=call.state.balance,
    ) as (response, _deployment):
        raw = await read_upstream(response)
    answer = loads_or_none(raw)
    if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
        raise UpstreamBadResponse("an embeddings list")
    answer["model"] = model.name
    if call.screen is not None and (results := call.screen.prompt_results()) is not None:
        answer["prompt_filter_results"] = results
    if not meter_embedding(call.event, answer.get("usage"), estimate).reported:
        answer["usage"] = {"prompt_tokens": estimate, "total_tokens": estimate}
    call.reply_json(answer)
