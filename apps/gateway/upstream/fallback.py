"""Fallback models: another model serves a request its own could not.

A model names ``fallbacks`` (tried in order when every deployment of it failed: the
errors ``open_upstream`` raises once its attempts are used up, FALLBACK_ERRORS) and
``context_window_fallbacks`` (tried when an upstream said the prompt is too long,
``UpstreamContextExceeded``). One level: a fallback's own fallbacks are not followed.

Never on anything else: an upstream's 400 (validation, content policy), 401/403, a
bad answer: those are the request's answer, from whichever model gave them. A fallback
the key may not use, or without a deployment this call may use (a caller's own key),
is not in the ``Route``; when no fallback serves, the client gets the first model's
error. Nothing has reached the client while a fallback is tried: each attempt is one
``open_upstream``, which yields only a 2xx answer.

The request body is built per deployment (``build_body(deployment)``: its upstream
model name, the protocol its backend speaks), so a fallback's deployments get theirs.
"""

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from apps.gateway.caches import Catalog, DeploymentInfo, KeyInfo, ModelInfo
from apps.gateway.errors import (
    ModelRejectsCallerKey,
    NoDeployment,
    UpstreamContextExceeded,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from apps.gateway.metrics import FALLBACKS
from apps.gateway.protocol.bounds import TokenBounds
from apps.gateway.upstream.bodies import deployments_with_caller_key
from apps.gateway.upstream.client import UpstreamClient, UpstreamResponse
from apps.gateway.upstream.failover import open_upstream

# What "every deployment failed" raises (failover.exhausted_error, and a model left
# without an enabled deployment).
FALLBACK_ERRORS = (
    NoDeployment,
    UpstreamUnavailable,
    UpstreamOverloaded,
    UpstreamRateLimited,
    UpstreamTimeout,
)

Opened = tuple[UpstreamResponse, DeploymentInfo]


@dataclasses.dataclass(frozen=True, slots=True)
class Route:
    """A request's model and the fallbacks this call may use, in order."""

    model: ModelInfo
    fallbacks: tuple[ModelInfo, ...]
    context_window_fallbacks: tuple[ModelInfo, ...]

    @property
    def alternatives(self) -> tuple[ModelInfo, ...]:
        """Every model but the first that may serve, once each."""
        seen: dict[str, ModelInfo] = {}
        for model in self.fallbacks + self.context_window_fallbacks:
            seen.setdefault(model.name, model)
        return tuple(seen.values())

    @property
    def protocols(self) -> frozenset[str]:
        """The protocols the alternatives' backends speak."""
        return frozenset(d.speaks for m in self.alternatives for d in m.deployments)

    def without(self, protocol: str) -> "Route":
        """The route without the alternatives' deployments speaking ``protocol`` (their
        request could not be translated), dropping a model left with none."""

        def keep(models: tuple[ModelInfo, ...]) -> tuple[ModelInfo, ...]:
            kept = []
            for model in models:
                deployments = tuple(d for d in model.deployments if d.speaks != protocol)
                if deployments:
                    kept.append(dataclasses.replace(model, deployments=deployments))
            return tuple(kept)

        return Route(self.model, keep(self.fallbacks), keep(self.context_window_fallbacks))


def _widest(models: tuple[ModelInfo, ...]) -> TokenBounds:
    """Each allowance at its largest among ``models``: a request's bounds (what a budget
    reserves and the most it is billed) hold whichever of them serves."""
    return TokenBounds(
        per_request=max(m.bounds.per_request for m in models),
        per_message=max(m.bounds.per_message for m in models),
        per_image=max(m.bounds.per_image for m in models),
        max_output=max(m.bounds.max_output for m in models),
    )


def route_for(
    catalog: Catalog, key: KeyInfo, model: ModelInfo, caller_key: str | None
) -> Route | None:
    """The route of a request for ``model`` (its deployments as this call may use them),
    None when no fallback is usable. The route's model has the bounds of the widest of
    them all."""
    if not model.fallbacks and not model.context_window_fallbacks:
        return None

    def usable(names: tuple[str, ...]) -> tuple[ModelInfo, ...]:
        found = []
        for name in names:
            other = catalog.by_name.get(name)
            if other is None or other.name == model.name or not key.may_use(other.name):
                continue
            if caller_key is not None:
                try:
                    other = deployments_with_caller_key(other, caller_key)
                except ModelRejectsCallerKey:
                    continue
            if other.deployments:
                found.append(other)
        return tuple(found)

    fallbacks = usable(model.fallbacks)
    context_window_fallbacks = usable(model.context_window_fallbacks)
    if not fallbacks and not context_window_fallbacks:
        return None
    widest = _widest((model, *fallbacks, *context_window_fallbacks))
    return Route(dataclasses.replace(model, bounds=widest), fallbacks, context_window_fallbacks)


def open_served(
    client: UpstreamClient,
    model: ModelInfo,
    route: Route | None,
    path: str,
    build_body: Callable[[DeploymentInfo], bytes | tuple[str, bytes]],
    *,
    on_fallback: Callable[[ModelInfo], None] | None = None,
    **options: Any,
) -> AbstractAsyncContextManager[Opened]:
    """``open_upstream(client, model, path, build_body, **options)``, then the route's
    fallbacks with the same options (without a route: ``open_upstream`` itself).
    ``on_fallback(model)`` is told the fallback that answered, before its answer is
    yielded."""
    if route is None:
        return open_upstream(client, model, path, build_body, **options)

    def open_one(stack: AsyncExitStack, candidate: ModelInfo) -> Awaitable[Opened]:
        return stack.enter_async_context(
            open_upstream(client, candidate, path, build_body, **options)
        )

    return _open_route(route, open_one, on_fallback)


@asynccontextmanager
async def _open_route(
    route: Route,
    open_one: Callable[[AsyncExitStack, ModelInfo], Awaitable[Opened]],
    on_fallback: Callable[[ModelInfo], None] | None,
) -> AsyncIterator[Opened]:
    async with AsyncExitStack() as stack:
        opened = await _first_answer(route, lambda model: open_one(stack, model), on_fallback)
        yield opened


async def _first_answer(
    route: Route,
    open_one: Callable[[ModelInfo], Awaitable[Opened]],
    on_fallback: Callable[[ModelInfo], None] | None,
) -> Opened:
    try:
        return await open_one(route.model)
    except FALLBACK_ERRORS as exc:
        original, reason, queue = exc, "unavailable", list(route.fallbacks)
    except UpstreamContextExceeded as exc:
        original, reason, queue = exc, "context_window", list(route.context_window_fallbacks)
    tried = {route.model.name}
    while queue:
        candidate = queue.pop(0)
        if candidate.name in tried:
            continue
        tried.add(candidate.name)
        try:
            opened = await open_one(candidate)
        except FALLBACK_ERRORS:
            continue
        except UpstreamContextExceeded:
            if reason != "context_window":
                # Too long for a fallback too: the models with a larger window next.
                reason = "context_window"
                queue[:0] = route.context_window_fallbacks
            continue
        FALLBACKS.labels(route.model.name, candidate.name, reason).inc()
        if on_fallback is not None:
            on_fallback(candidate)
        return opened
    raise original
