"""Forwarding to deployments: ordered attempts, retries before the first byte, and the
mapping of upstream failures to gateway errors."""

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import aiohttp
import orjson
from django.conf import settings

from apps.gateway.caches import DeploymentInfo, ModelInfo
from apps.gateway.http import GatewayError
from apps.gateway.metrics import UPSTREAM_ERRORS
from apps.gateway.protocol.anthropic import ANTHROPIC_ERROR_TYPES
from apps.gateway.protocol.openai import normalise_upstream_error, scrub_upstream_text
from apps.gateway.upstream import UpstreamClient

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})


_CREDENTIAL_HEADER_WORDS = ("auth", "key", "token", "secret")


def _scrub_context(deployment: DeploymentInfo | None) -> tuple[list[str], list[str]]:
    """The deployment's own credentials and hostname, which its messages must not show."""
    secrets: list[str] = []
    hosts: list[str] = []
    if deployment is not None:
        for name, value in deployment.headers.items():
            if any(word in name.lower() for word in _CREDENTIAL_HEADER_WORDS):
                secrets.append(value)
                _scheme, _, token = value.partition(" ")
                if token:
                    secrets.append(token.strip())
        host = urlsplit(deployment.base_url).hostname
        if host:
            hosts.append(host)
    return secrets, hosts


def scrub_for(deployment: DeploymentInfo | None, message: str) -> str:
    """An upstream's message (an in-band stream error), fit for the caller."""
    secrets, hosts = _scrub_context(deployment)
    return scrub_upstream_text(message, secrets=secrets, hosts=hosts)


def _upstream_message(status: int, raw: bytes, deployment: DeploymentInfo | None) -> dict:
    """The upstream's error object, its message scrubbed of the deployment's own
    credentials and hostname (and anything else that looks like one)."""
    secrets, hosts = _scrub_context(deployment)
    return normalise_upstream_error(raw, status, secrets=secrets, hosts=hosts)["error"]


def _said(status: int, body: dict) -> str:
    """What the upstream said, to end one of our messages with: ": <its words>", or "."
    when it said nothing."""
    message = body["message"]
    return "." if message == f"upstream returned HTTP {status}" else f": {message}"


def upstream_error(status: int, raw: bytes, deployment: DeploymentInfo) -> GatewayError:
    """A non-retryable upstream answer, as the client should see it."""
    if status in (401, 403, 404, 407):
        # Our credentials or catalog are wrong, not the client's request: what the
        # upstream says about them is for the operator, not the caller.
        return GatewayError(
            502,
            f"The upstream for this model rejected the gateway (HTTP {status}).",
            error_type="server_error",
            code="upstream_error",
            outcome=f"upstream_{status}",
            anthropic_type="api_error",
        )
    body = _upstream_message(status, raw, deployment)
    if status >= 500:
        return GatewayError(
            502,
            f"The upstream for this model failed (HTTP {status}){_said(status, body)}",
            error_type="server_error",
            code="upstream_error",
            outcome=f"upstream_{status}",
            anthropic_type="api_error",
        )
    # The client's request, refused: its status and the upstream's words, so the caller
    # can fix it. An Anthropic-native backend names the error type itself (413
    # request_too_large, …).
    anthropic_type = (
        body["type"]
        if deployment.kind == "anthropic" and body["type"] in ANTHROPIC_ERROR_TYPES
        else None
    )
    return GatewayError(
        status,
        body["message"],
        error_type=body["type"],
        code=body["code"],
        param=body["param"],
        outcome=f"upstream_{status}",
        anthropic_type=anthropic_type,
    )


def exhausted_error(
    status: int | None, raw: bytes, reason: str, deployment: DeploymentInfo | None = None
) -> GatewayError:
    """Every deployment tried; ``status`` and ``raw`` are the last answer's (from
    ``deployment``), quoted in the message."""
    if reason == "timeout":
        return GatewayError(
            504,
            "The upstream did not answer in time.",
            error_type="server_error",
            code="upstream_timeout",
            outcome="upstream_timeout",
            anthropic_type="timeout_error",
        )
    said = _said(status, _upstream_message(status, raw, deployment)) if status else "."
    if status == 429:
        return GatewayError(
            429,
            f"The model's upstream is rate limited; retry shortly{said}",
            error_type="requests",
            code="upstream_rate_limited",
            outcome="upstream_429",
            anthropic_type="rate_limit_error",
            headers=[(b"retry-after", b"1")],
        )
    if status in (503, 529):
        return GatewayError(
            502,
            f"The model's upstream is overloaded{said}",
            error_type="server_error",
            code="upstream_overloaded",
            outcome=f"upstream_{status}",
            anthropic_type="overloaded_error",
        )
    detail = f" (last answer HTTP {status}){said}" if status else "."
    return GatewayError(
        502,
        f"The upstream for this model is unavailable{detail}",
        error_type="server_error",
        code="upstream_unavailable",
        outcome="upstream_unavailable",
        anthropic_type="api_error",
    )


def bad_upstream_response(what: str) -> GatewayError:
    return GatewayError(
        502,
        f"The upstream sent a response that is not {what}.",
        error_type="server_error",
        outcome="upstream_bad_response",
        anthropic_type="api_error",
    )


async def read_upstream(response: aiohttp.ClientResponse) -> bytes:
    """The whole upstream body; a failure half-way is a 502."""
    try:
        return await response.read()
    except (aiohttp.ClientError, TimeoutError):
        raise GatewayError(
            502,
            "The upstream failed while sending the response.",
            error_type="server_error",
            outcome="upstream_error",
            anthropic_type="api_error",
        ) from None


def loads_or_none(raw: bytes):
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def parse_chat_completion(raw: bytes) -> dict:
    answer = loads_or_none(raw)
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise bad_upstream_response("a chat completion")
    return answer


def parse_message(raw: bytes) -> dict:
    answer = loads_or_none(raw)
    if (
        not isinstance(answer, dict)
        or answer.get("type") != "message"
        or not isinstance(answer.get("content"), list)
    ):
        raise bad_upstream_response("a message")
    return answer


def openai_compatible_only(model: ModelInfo, api: str) -> ModelInfo:
    """The model with only its OpenAI-compatible deployments, for an API that Anthropic
    backends do not offer (embeddings, responses); a 400 when it has none."""
    served = tuple(d for d in model.deployments if d.kind != "anthropic")
    if not served:
        raise GatewayError(
            400,
            f"The model '{model.name}' does not support the {api} API here.",
            param="model",
            code="model_not_supported",
            outcome="invalid_request",
        )
    return dataclasses.replace(model, deployments=served)


def rewrite_model(body: dict, upstream_model: str) -> bytes:
    body["model"] = upstream_model
    return orjson.dumps(body)


@asynccontextmanager
async def open_upstream(
    client: UpstreamClient,
    model: ModelInfo,
    path: str,
    build_body,
    *,
    stream: bool,
    on_deployment=None,
    native_headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[aiohttp.ClientResponse, DeploymentInfo]]:
    """Yield the first successful (2xx) upstream response, trying deployments in order.

    Connect errors, 429 and 5xx move on to the next deployment (at most
    GATEWAY_MAX_ATTEMPTS); nothing has reached the client yet when they do.

    ``build_body(deployment)`` returns the request body, or ``(path, body)`` when the
    deployment decides the path too (an Anthropic-native backend takes /messages where
    an OpenAI-compatible one takes /chat/completions); ``path`` is the default.
    ``native_headers`` go to Anthropic-native deployments only (the client's
    anthropic-beta).
    """
    deployments = model.deployment_order()
    if not deployments:
        raise GatewayError(
            503,
            f"The model '{model.name}' has no deployment available.",
            error_type="server_error",
            code="no_deployment",
            outcome="no_deployment",
            anthropic_type="api_error",
        )
    last_status: int | None = None
    last_raw = b""
    last_deployment: DeploymentInfo | None = None
    reason = "unavailable"
    attempts = list(deployments[: settings.GATEWAY_MAX_ATTEMPTS])
    retried_stale: set[int] = set()
    position = 0
    while position < len(attempts):
        deployment = attempts[position]
        position += 1
        if on_deployment is not None:
            on_deployment(deployment)
        payload = build_body(deployment)
        target = path
        if type(payload) is tuple:
            target, payload = payload
        try:
            extra = native_headers if deployment.kind == "anthropic" else None
            request = client.post(deployment, target, payload, stream=stream, extra_headers=extra)
            response = await request.__aenter__()
        except aiohttp.ConnectionTimeoutError:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, "connect_timeout").inc()
            continue
        except TimeoutError:
            reason = "timeout"
            UPSTREAM_ERRORS.labels(deployment.backend, "timeout").inc()
            break  # the upstream may be working on it: do not send the work twice
        except aiohttp.ClientConnectorError:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, "connect").inc()
            continue
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # Most often a pooled keep-alive connection the upstream had just closed:
            # the same deployment gets one more try on a fresh connection.
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, "disconnected").inc()
            if deployment.id not in retried_stale:
                retried_stale.add(deployment.id)
                attempts.insert(position, deployment)
            continue
        except (aiohttp.ClientError, OSError):
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, "connect").inc()
            continue
        try:
            if response.status >= 300:
                try:
                    raw = await response.read()
                except (aiohttp.ClientError, TimeoutError):
                    raw = b""
                UPSTREAM_ERRORS.labels(deployment.backend, str(response.status)).inc()
                if response.status in RETRYABLE_STATUSES:
                    last_status, last_raw, reason = response.status, raw, "status"
                    last_deployment = deployment
                    continue
                raise upstream_error(response.status, raw, deployment)
            yield response, deployment
            return
        finally:
            await request.__aexit__(None, None, None)
    raise exhausted_error(last_status, last_raw, reason, last_deployment)
