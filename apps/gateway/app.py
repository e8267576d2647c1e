"""The /v1 gateway: a bare ASGI application on the hot path, no Django request cycle.

Django's ASGI handler costs a thread hop and ~3 ms of middleware per request; the
gateway only needs the models through its caches, so it answers /v1 itself. This
module is the route table and the dispatch; what a route does is in ``endpoints/``.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apps.gateway.endpoints.chat import handle_chat_completions
from apps.gateway.endpoints.count_tokens import handle_count_tokens
from apps.gateway.endpoints.embeddings import handle_embeddings
from apps.gateway.endpoints.key import handle_key
from apps.gateway.endpoints.messages import handle_messages
from apps.gateway.endpoints.models import handle_models
from apps.gateway.endpoints.responses import handle_responses
from apps.gateway.errors import (
    GatewayError,
    GatewayOverloaded,
    InternalError,
    MethodNotAllowed,
    UnknownRoute,
)
from apps.gateway.exchange import ClientGone, Exchange
from apps.gateway.state import GatewayState

log = logging.getLogger(__name__)

Handler = Callable[[GatewayState, Exchange], Awaitable[None]]

# (method, path) → (protocol of its errors, handler); "auto": Anthropic's shape when the
# request carries an anthropic-version header.
ROUTES: dict[tuple[str, str], tuple[str, Handler]] = {
    ("POST", "/v1/chat/completions"): ("openai", handle_chat_completions),
    ("POST", "/v1/embeddings"): ("openai", handle_embeddings),
    ("POST", "/v1/responses"): ("openai", handle_responses),
    ("GET", "/v1/models"): ("auto", handle_models),
    ("GET", "/v1/key"): ("auto", handle_key),
    ("POST", "/v1/messages"): ("anthropic", handle_messages),
    ("POST", "/v1/messages/count_tokens"): ("anthropic", handle_count_tokens),
}


class GatewayApp:
    def __init__(self) -> None:
        self._state: GatewayState | None = None
        self._routes = ROUTES
        self._known_paths = {path for _method, path in self._routes}

    async def state(self) -> GatewayState:
        if self._state is None:
            self._state = GatewayState()
            self._state.start()
        return self._state

    async def startup(self) -> None:
        await self.state()

    async def shutdown(self) -> None:
        if self._state is not None:
            await self._state.close()
            self._state = None

    def _route(self, method: str, path: str) -> tuple[str, Handler | None]:
        if path.startswith("/v1/models/") and len(path) > len("/v1/models/"):
            return ("auto", handle_models) if method == "GET" else ("auto", None)
        found = self._routes.get((method, path.rstrip("/") or path))
        if found:
            return found
        return "auto", None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        state = await self.state()
        path = scope["path"]
        if path.startswith("/v1/v1") and (len(path) == 6 or path[6] == "/"):
            # The anthropic SDK appends /v1/... to its base_url, and providers' docs give
            # that base_url as ".../v1/": the same API answers there, identically.
            scope = {**scope, "path": path[3:]}
        exchange = Exchange(scope, receive, send)
        protocol, handler = self._route(scope["method"], scope["path"])
        if protocol == "auto":
            protocol = "anthropic" if b"anthropic-version" in exchange.headers else "openai"
        exchange.protocol = protocol
        try:
            if handler is None:
                if scope["path"].rstrip("/") in self._known_paths:
                    raise MethodNotAllowed(scope["method"])
                raise UnknownRoute(scope["method"], scope["path"])
            load = state.load
            if scope["method"] == "POST" and load.overloaded():
                raise GatewayOverloaded()
            load.in_flight += 1
            try:
                await handler(state, exchange)
            finally:
                load.in_flight -= 1
        except GatewayError as error:
            await exchange.respond_error(error)
        except ClientGone:
            return
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("gateway request %s failed", exchange.request_id)
            await exchange.respond_error(InternalError())
