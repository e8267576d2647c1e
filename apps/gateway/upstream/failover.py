"""Forwarding to deployments: ordered attempts, retries before the first byte, and the
mapping of upstream failures to gateway errors."""

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit

from django.conf import settings

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import DeploymentInfo, ModelInfo
from apps.gateway.errors import (
    GatewayError,
    NoDeployment,
    UpstreamFailed,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRefusedCallerKey,
    UpstreamRefusedGateway,
    UpstreamRefusedRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from apps.gateway.metrics import UPSTREAM_ERRORS
from apps.gateway.protocol.openai import normalise_upstream_error, scrub_upstream_text
from apps.gateway.upstream.balancing import (
    AFFINITY_STRATEGY,
    LEAST_BUSY,
    BalanceBoard,
    affinity_observe,
    in_flight,
    order,
)
from apps.gateway.upstream.client import (
    ConnectError,
    ReadTimeout,
    RemoteDisconnected,
    TransportError,
    UpstreamClient,
    UpstreamResponse,
)

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
    if status in (401, 403) and deployment.carries_caller_key:
        # The caller's own key was refused: the caller is the one to fix it, so it hears
        # the upstream's words (scrubbed of that key like any backend's credential).
        body = _upstream_message(status, raw, deployment)
        return UpstreamRefusedCallerKey(status, body, _said(status, body))
    if status in (401, 403, 404, 407):
        # Our credentials or catalog are wrong, not the client's request: what the
        # upstream says about them is for the operator, not the caller.
        return UpstreamRefusedGateway(status)
    body = _upstream_message(status, raw, deployment)
    if status >= 500:
        return UpstreamFailed(status, _said(status, body))
    # The client's request, refused: its status and the upstream's words, so the caller
    # can fix it. An Anthropic-native backend names the error type itself (413
    # request_too_large, …).
    return UpstreamRefusedRequest(status, body, deployment.adapter.error_type(body))


def exhausted_error(
    status: int | None, raw: bytes, reason: str, deployment: DeploymentInfo | None = None
) -> GatewayError:
    """Every deployment tried; ``status`` and ``raw`` are the last answer's (from
    ``deployment``), quoted in the message."""
    if reason == "timeout":
        return UpstreamTimeout()
    said = _said(status, _upstream_message(status, raw, deployment)) if status else "."
    if status == 429:
        return UpstreamRateLimited(said)
    if status in (503, 529):
        return UpstreamOverloaded(status, said)
    return UpstreamUnavailable(f" (last answer HTTP {status}){said}" if status else ".")


Opened = tuple[UpstreamResponse, DeploymentInfo]
BodyBuilder = Callable[[DeploymentInfo], bytes | tuple[str, bytes]]


def open_upstream(
    client: UpstreamClient,
    model: ModelInfo,
    path: str,
    build_body: BodyBuilder,
    *,
    stream: bool,
    on_deployment: Callable[[DeploymentInfo], None] | None = None,
    native_headers: dict[str, str] | None = None,
    session_key: int | None = None,
    board: BalanceBoard | None = None,
    available: Callable[[int], bool] | None = None,
) -> AbstractAsyncContextManager[Opened]:
    """``async with`` it: the first successful (2xx) upstream response and its deployment,
    trying the deployments in the order the model's strategy gives (balancing.order:
    ``session_key`` for affinity, ``board`` for least-busy and latency, ``available``
    the health view); see ``_attempts``."""
    deployments = order(model, session_key, available=available, board=board)
    strategy = model.strategy
    if strategy == LEAST_BUSY and board is not None:
        return _counting_in_flight(
            board,
            on_deployment,
            lambda hook: _attempts(
                client, model, deployments, path, build_body, stream, hook, native_headers
            ),
        )
    attempts = _attempts(
        client, model, deployments, path, build_body, stream, on_deployment, native_headers
    )
    if strategy == AFFINITY_STRATEGY and session_key is not None:
        return _observing_affinity(model, session_key, attempts)
    return attempts


@asynccontextmanager
async def _counting_in_flight(
    board: BalanceBoard,
    on_deployment: Callable[[DeploymentInfo], None] | None,
    attempts: Callable[[Callable[[DeploymentInfo], None]], AbstractAsyncContextManager[Opened]],
) -> AsyncIterator[Opened]:
    """The attempts, the request counted in flight at the deployment it is at."""
    with in_flight(board) as at:

        def hook(deployment: DeploymentInfo) -> None:
            at(deployment)
            if on_deployment is not None:
                on_deployment(deployment)

        async with attempts(hook) as opened:
            yield opened


@asynccontextmanager
async def _observing_affinity(
    model: ModelInfo, session_key: int, attempts: AbstractAsyncContextManager[Opened]
) -> AsyncIterator[Opened]:
    async with attempts as opened:
        affinity_observe(model, session_key, opened[1])
        yield opened


@asynccontextmanager
async def _attempts(
    client: UpstreamClient,
    model: ModelInfo,
    deployments: list[DeploymentInfo],
    path: str,
    build_body: BodyBuilder,
    stream: bool,
    on_deployment: Callable[[DeploymentInfo], None] | None,
    native_headers: dict[str, str] | None,
) -> AsyncIterator[Opened]:
    """Yield the first successful (2xx) upstream response, trying ``deployments`` in order.

    Connect errors, 429 and 5xx move on to the next deployment (at most
    GATEWAY_MAX_ATTEMPTS); nothing has reached the client yet when they do.

    ``build_body(deployment)`` returns the request body, or ``(path, body)`` when the
    deployment decides the path too (an Anthropic-native backend takes /messages where
    an OpenAI-compatible one takes /chat/completions); ``path`` is the default.
    ``native_headers`` go to Anthropic-native deployments only (the client's
    anthropic-beta).
    """
    if not deployments:
        raise NoDeployment(model.name)
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
        extra = native_headers if deployment.speaks == ANTHROPIC else None
        try:
            response = await client.post(
                deployment, target, payload, stream=stream, extra_headers=extra
            )
        except ReadTimeout:
            reason = "timeout"
            UPSTREAM_ERRORS.labels(deployment.backend, "timeout").inc()
            break  # the upstream may be working on it: do not send the work twice
        except RemoteDisconnected:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, "disconnected").inc()
            if deployment.id not in retried_stale:
                retried_stale.add(deployment.id)
                attempts.insert(position, deployment)
            continue
        except ConnectError as exc:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, exc.label).inc()
            continue
        try:
            if response.status >= 300:
                try:
                    raw = await response.read()
                except TransportError:
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
            await response.close()
    raise exhausted_error(last_status, last_raw, reason, last_deployment)
