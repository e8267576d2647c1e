"""Forwarding to deployments: ordered attempts, retries before the first byte, and the
mapping of upstream failures to gateway errors."""

import asyncio
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from urllib.parse import urlsplit

from django.conf import settings

from apps.gateway.backends import ANTHROPIC
from apps.gateway.caches import DeploymentInfo, ModelInfo
from apps.gateway.errors import (
    GatewayError,
    NoDeployment,
    UpstreamContextExceeded,
    UpstreamFailed,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamRefusedCallerKey,
    UpstreamRefusedGateway,
    UpstreamRefusedRequest,
    UpstreamResting,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from apps.gateway.metrics import UPSTREAM_ERRORS
from apps.gateway.protocol.context_window import CONTEXT_WINDOW_STATUSES, is_context_window_error
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
    FirstByteTimeout,
    ReadError,
    ReadTimeout,
    RemoteDisconnected,
    TransportError,
    UpstreamClient,
    UpstreamResponse,
)
from apps.gateway.upstream.health import DeploymentHealth, rest_seconds

RETRYABLE_STATUSES = frozenset({429, 500, 502, 503, 504, 529})
# Jittered backoff before a retry (full jitter: uniform up to min(cap, base × 2^n)),
# always inside the request's deadline.
BACKOFF_BASE_S = 0.02
BACKOFF_CAP_S = 0.5


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


def _backoff_s(retry: int, deadline: float) -> float:
    """The pause before retry number ``retry`` (1, 2, …), never past the deadline."""
    pause = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (retry - 1)))
    return min(pause, max(deadline - time.monotonic(), 0.0))


def _usable(
    health: DeploymentHealth | None, deployments: list[DeploymentInfo]
) -> list[DeploymentInfo]:
    """``deployments`` without those whose breaker is open (or being probed by another
    request); one whose cool-down is over stays, for the attempt loop to claim its probe.
    None usable: UpstreamResting, retry-after the soonest reopening."""
    if health is None or health.quiet():
        return deployments
    now = time.time()
    usable = [d for d in deployments if health.skips(d, now) is not True]
    if not usable:
        reopens = health.reopens_at(deployments) or now
        raise UpstreamResting(max(1, math.ceil(reopens - now)))
    return usable


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
    health: DeploymentHealth | None = None,
    session_key: int | None = None,
    board: BalanceBoard | None = None,
    available: Callable[[int], bool] | None = None,
) -> AbstractAsyncContextManager[Opened]:
    """``async with`` it: the first successful (2xx) upstream response and its deployment,
    trying the deployments in the order the model's strategy gives (balancing.order:
    ``session_key`` for affinity, ``board`` for least-busy and latency, ``available``
    a filter of deployments; ``health`` the breakers); see ``_attempts``."""
    deployments = order(model, session_key, available=available, board=board)
    strategy = model.strategy
    if strategy == LEAST_BUSY and board is not None:
        return _counting_in_flight(
            board,
            on_deployment,
            lambda hook: _attempts(
                client, model, deployments, path, build_body, stream, hook, native_headers, health
            ),
        )
    attempts = _attempts(
        client, model, deployments, path, build_body, stream, on_deployment, native_headers, health
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
    health: DeploymentHealth | None,
) -> AsyncIterator[Opened]:
    """Yield the first successful (2xx) upstream response, trying ``deployments`` in order.

    Connect errors, first-byte timeouts, 429 and 5xx move on to the next deployment (at
    most GATEWAY_MAX_ATTEMPTS, with jittered backoff, all inside the overall deadline:
    the longest ``timeout_s`` of the deployments); nothing has reached the client yet
    when they do. A timeout once the upstream may be working on it does not.

    ``health`` (the breakers): deployments whose breaker is open are skipped, all open is
    UpstreamResting; failures and successes are recorded there.

    ``build_body(deployment)`` returns the request body, or ``(path, body)`` when the
    deployment decides the path too (an Anthropic-native backend takes /messages where
    an OpenAI-compatible one takes /chat/completions); ``path`` is the default.
    ``native_headers`` go to Anthropic-native deployments only (the client's
    anthropic-beta).
    """
    if not deployments:
        raise NoDeployment(model.name)
    deployments = _usable(health, deployments)
    last_status: int | None = None
    last_raw = b""
    last_deployment: DeploymentInfo | None = None
    reason = "unavailable"
    attempts = list(deployments[: settings.GATEWAY_MAX_ATTEMPTS])
    longest = attempts[0].timeout_s if len(attempts) == 1 else max(d.timeout_s for d in attempts)
    deadline = time.monotonic() + longest
    retried_stale: set[int] = set()
    position = 0
    retries = 0
    tried = False
    while position < len(attempts):
        deployment = attempts[position]
        stale_retry = position > 0 and attempts[position - 1] is deployment
        position += 1
        if health is not None and not stale_retry and not health.quiet():
            verdict = health.skips(deployment, time.time())
            if verdict or (verdict is None and not await health.claim(deployment)):
                continue  # resting, or another request probes it
        if tried and not stale_retry:
            retries += 1
            if (pause := _backoff_s(retries, deadline)) > 0:
                await asyncio.sleep(pause)
        tried = True
        if time.monotonic() >= deadline:
            reason = "timeout"
            break
        if on_deployment is not None:
            on_deployment(deployment)
        payload = build_body(deployment)
        target = path
        if type(payload) is tuple:
            target, payload = payload
        extra = native_headers if deployment.speaks == ANTHROPIC else None
        try:
            response = await client.post(
                deployment, target, payload, stream=stream, extra_headers=extra, deadline=deadline
            )
        except ReadTimeout:
            reason = "timeout"
            UPSTREAM_ERRORS.labels(deployment.backend, "timeout").inc()
            if health is not None:
                await health.failed(deployment, "timeout")
            break  # the upstream may be working on it: do not send the work twice
        except FirstByteTimeout:
            # Nothing came back, nothing reached the client: the next deployment.
            reason = "timeout"
            UPSTREAM_ERRORS.labels(deployment.backend, "first_byte_timeout").inc()
            if health is not None:
                await health.failed(deployment, "first_byte_timeout")
            continue
        except (RemoteDisconnected, ReadError) as exc:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, exc.label).inc()
            if deployment.id not in retried_stale:
                # Most often a pooled connection the upstream had just closed: once more,
                # on a fresh one, before it counts.
                retried_stale.add(deployment.id)
                attempts.insert(position, deployment)
            elif health is not None:
                await health.failed(deployment, exc.label)
            continue
        except ConnectError as exc:
            reason = "unavailable"
            UPSTREAM_ERRORS.labels(deployment.backend, exc.label).inc()
            if health is not None:
                await health.failed(deployment, exc.label)
            continue
        try:
            if response.status >= 300:
                try:
                    raw = await response.read()
                except TransportError:
                    raw = b""
                UPSTREAM_ERRORS.labels(deployment.backend, str(response.status)).inc()
                if response.status in CONTEXT_WINDOW_STATUSES:
                    # Too long for this model: as long on every deployment of it.
                    body = _upstream_message(response.status, raw, deployment)
                    if is_context_window_error(response.status, body):
                        raise UpstreamContextExceeded(response.status, body)
                if response.status in RETRYABLE_STATUSES:
                    last_status, last_raw, reason = response.status, raw, "status"
                    last_deployment = deployment
                    if health is not None:
                        if response.status == 429:
                            rest = rest_seconds(response.headers)
                            await health.failed(deployment, "429", rest_s=rest)
                        else:
                            await health.failed(deployment, str(response.status))
                    continue
                if health is not None and health.tracks(deployment):
                    await health.succeeded(deployment)  # it answers: the client's error
                raise upstream_error(response.status, raw, deployment)
            if health is not None:
                health.observe_first_byte(deployment, response.first_byte_s)
                if health.tracks(deployment):
                    await health.succeeded(deployment)
            yield response, deployment
            return
        finally:
            await response.close()
    if not tried:
        raise UpstreamResting(1)  # every one left was being probed by another request
    raise exhausted_error(last_status, last_raw, reason, last_deployment)
