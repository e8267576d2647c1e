"""Bodies to and from upstreams: the request per deployment, the answer read and checked."""

import dataclasses
from typing import Any

import orjson

from apps.gateway.caches import ModelInfo
from apps.gateway.errors import (
    ModelNotSupported,
    ModelRejectsCallerKey,
    UpstreamBadResponse,
    UpstreamReadFailed,
)
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


def deployments_offering(model: ModelInfo, api: str, api_name: str) -> ModelInfo:
    """The model with only the deployments whose backend offers ``api`` (embeddings,
    responses: not every kind does); a 400 naming ``api_name`` when it has none."""
    served = tuple(d for d in model.deployments if d.adapter.offers(api))
    if not served:
        raise ModelNotSupported(model.name, api_name)
    return dataclasses.replace(model, deployments=served)


def deployments_with_caller_key(model: ModelInfo, credential: str) -> ModelInfo:
    """The model with only the deployments whose backend accepts a caller's own key,
    each carrying ``credential`` in place of the backend's (so a failover stays among
    them); a 400 when it has none."""
    eligible = tuple(d.with_caller_key(credential) for d in model.deployments if d.byok_allowed)
    if not eligible:
        raise ModelRejectsCallerKey(model.name)
    return dataclasses.replace(model, deployments=eligible)


def rewrite_model(body: dict, upstream_model: str) -> bytes:
    body["model"] = upstream_model
    return orjson.dumps(body)
