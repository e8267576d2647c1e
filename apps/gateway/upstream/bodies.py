"""Bodies to and from upstreams: the request per deployment, the answer read and checked."""

import dataclasses
from typing import Any

import orjson

from apps.gateway.caches import ModelInfo
from apps.gateway.errors import ModelNotSupported, UpstreamBadResponse, UpstreamReadFailed
from apps.gateway.upstream.client import TransportError, UpstreamResponse


async def read_upstream(response: UpstreamResponse) -> bytes:
    """The whole upstream body; a failure half-way is a 502."""
    try:
        return await response.read()
    except TransportError:
        raise UpstreamReadFailed() from None


def loads_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def parse_chat_completion(raw: bytes) -> dict:
    answer = loads_or_none(raw)
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamBadResponse("a chat completion")
    return answer


def parse_message(raw: bytes) -> dict:
    answer = loads_or_none(raw)
    if (
        not isinstance(answer, dict)
        or answer.get("type") != "message"
        or not isinstance(answer.get("content"), list)
    ):
        raise UpstreamBadResponse("a message")
    return answer


def openai_compatible_only(model: ModelInfo, api: str) -> ModelInfo:
    """The model with only its OpenAI-compatible deployments, for an API that Anthropic
    backends do not offer (embeddings, responses); a 400 when it has none."""
    served = tuple(d for d in model.deployments if d.kind != "anthropic")
    if not served:
        raise ModelNotSupported(model.name, api)
    return dataclasses.replace(model, deployments=served)


def rewrite_model(body: dict, upstream_model: str) -> bytes:
    body["model"] = upstream_model
    return orjson.dumps(body)
