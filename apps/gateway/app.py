"""The /v1 gateway: a bare ASGI application on the hot path, no Django request cycle.

Django's ASGI handler costs a thread hop and ~3 ms of middleware per request; the
gateway only needs the models through its caches, so it answers /v1 itself.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson
import redis
from django.conf import settings

from apps.billing.pricing import billable_tokens, cost_nanos
from apps.gateway.caches import KeyInfo, ModelInfo
from apps.gateway.http import ClientGone, Exchange, GatewayError, openai_error_bytes
from apps.gateway.limits import limit_error, limits_unavailable, rate_headers
from apps.gateway.metrics import LIMIT_REFUSALS, observe_request
from apps.gateway.protocol.bounds import output_bound
from apps.gateway.protocol.openai import RequestInvalid
from apps.gateway.state import GatewayState
from apps.keys.hashing import INFERENCE_KEY_PREFIX, secret_hash
from apps.ledger.events import UsageEvent
from apps.ledger.spool import spool_append
from apps.limits.limiter import LimitExceeded

log = logging.getLogger(__name__)

Handler = Callable[[GatewayState, Exchange], Awaitable[None]]
T = TypeVar("T")


def render_error(exchange: Exchange, error: GatewayError) -> bytes:
    if exchange.protocol == "anthropic":
        from apps.gateway.protocol.anthropic import (
            anthropic_error_body,
            anthropic_error_type_for_status,
        )

        error_type = error.anthropic_type or anthropic_error_type_for_status(error.status)
        return orjson.dumps(anthropic_error_body(error_type, error.message, exchange.request_id))
    return openai_error_bytes(error)


def http_status_for(exchange: Exchange, error: GatewayError) -> int:
    # Anthropic clients know an overloaded upstream as 529.
    if exchange.protocol == "anthropic" and error.anthropic_type == "overloaded_error":
        return 529
    return error.status


async def send_error(exchange: Exchange, error: GatewayError) -> None:
    if exchange.response_started:
        return
    exchange.extra_headers.extend(error.headers)
    await exchange.respond(http_status_for(exchange, error), render_error(exchange, error))


_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key"})


def _ambiguous_credentials() -> GatewayError:
    # Never served with one of them: a proxy appending a header must not switch tenants.
    return GatewayError(
        401,
        "The request carries more than one API key ('Authorization' and 'x-api-key' "
        "differ, or one of them is repeated). Send exactly one.",
        code="ambiguous_api_key",
        anthropic_type="authentication_error",
    )


def request_secret(exchange: Exchange) -> str | None:
    """The API key the request carries, from ``Authorization: Bearer`` or ``x-api-key``;
    a request with two different ones, or either header twice, is refused (the same key
    in both is one key, as an SDK given both may send it)."""
    if exchange.repeats_any(_CREDENTIAL_HEADERS):
        raise _ambiguous_credentials()
    authorization = exchange.headers.get(b"authorization")
    api_key = exchange.headers.get(b"x-api-key")
    bearer = None
    if authorization:
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
    if api_key:
        secret = api_key.decode("latin-1").strip()
        if secret and authorization and bearer != secret:
            raise _ambiguous_credentials()
        return secret or bearer
    return bearer


async def authenticate(state: GatewayState, exchange: Exchange) -> KeyInfo:
    secret = request_secret(exchange)
    if not secret:
        raise GatewayError(
            401,
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
            "or in the 'x-api-key' header.",
            code="invalid_api_key",
            anthropic_type="authentication_error",
        )
    info = None
    if secret.startswith(INFERENCE_KEY_PREFIX) and len(secret) <= 128:
        info = await state.keys.get(secret_hash(secret))
    if info is None:
        shown = secret[:6] + "…" if len(secret) > 10 else "…"
        raise GatewayError(
            401,
            f"Incorrect API key provided: {shown}. Check the key in your dashboard.",
            code="invalid_api_key",
            anthropic_type="authentication_error",
        )
    if info.revoked:
        raise GatewayError(
            401,
            "This API key has been revoked.",
            code="invalid_api_key",
            anthropic_type="authentication_error",
        )
    if info.expires_at is not None and info.expires_at <= time.time():
        raise GatewayError(
            401,
            "This API key has expired.",
            code="invalid_api_key",
            anthropic_type="authentication_error",
        )
    return info


async def resolve_model(state: GatewayState, key: KeyInfo, name: Any) -> ModelInfo:
    catalog = await state.catalog.get()
    model = catalog.by_name.get(name) if isinstance(name, str) else None
    if model is None and isinstance(name, str):
        model = (await state.catalog.refresh(older_than_s=1.0)).by_name.get(name)
    if model is None:
        raise GatewayError(
            404,
            f"The model '{name}' does not exist or you do not have access to it.",
            code="model_not_found",
            param="model",
        )
    if not key.may_use(model.name):
        raise GatewayError(
            403,
            f"This API key is not allowed to use the model '{model.name}'.",
            error_type="permission_error",
            code="model_not_allowed",
            param="model",
            anthropic_type="permission_error",
        )
    return model


# Deeper bodies are refused: orjson writes at most 255 levels, and a body is written
# again (model rewritten, translated, echoed) inside a few levels of our own.
MAX_JSON_DEPTH = 128


def parse_json_body(raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise GatewayError(
            400,
            "We could not parse the JSON body of your request. The body must be valid JSON.",
            outcome="invalid_request",
        ) from None
    # Nesting N levels deep takes 2N bytes at least: small bodies need no walk.
    if len(raw) > 2 * MAX_JSON_DEPTH and json_too_deep(body, MAX_JSON_DEPTH):
        raise GatewayError(
            400,
            f"The JSON body of your request is nested more than {MAX_JSON_DEPTH} levels deep.",
            outcome="invalid_request",
        )
    return body


def json_too_deep(value: Any, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest more than ``limit`` levels (no recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        inner = []
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    inner.append(item)
        level = inner
    return False


def parse_openai_request(call: "MeteredCall", validate: Callable[[Any], T]) -> tuple[dict, T]:
    """The request's JSON body (its model noted on the usage event as soon as it is
    known) and what ``validate`` returns; its RequestInvalid is an OpenAI 400."""
    body = parse_json_body(call.raw_body)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        call.event.model = body["model"]
    try:
        checked = validate(body)
    except RequestInvalid as exc:
        raise GatewayError(400, exc.message, param=exc.param, outcome="invalid_request") from None
    return body, checked


class MeteredCall:
    """Runs a metered request: everything after authentication yields one usage event,
    appended to the durable stream before the response completes."""

    def __init__(self, state: GatewayState, exchange: Exchange, key: KeyInfo, endpoint: str):
        self.state = state
        self.exchange = exchange
        self.key = key
        self.event = UsageEvent(
            request_id=exchange.request_id,
            tenant_id=key.tenant_id,
            api_key_id=key.id,
            model="",
            protocol=exchange.protocol,
            endpoint=endpoint,
            stream=False,
            created_at=exchange.created_at,
        )
        self.admission = None
        self.model: ModelInfo | None = None
        self.deployment = None  # the one last tried
        # Bytes held back until the event is durable (the last body part of the response).
        self.tail: bytes | None = None
        self.reply: tuple[int, bytes, tuple] | None = None
        self.raw_body = b""
        # Content filtering of this request (apps/gateway/filtering.py); None = off.
        self.screen = None

    async def run(self, body: Callable[["MeteredCall"], Awaitable[None]]) -> None:
        exchange = self.exchange
        task = asyncio.current_task()
        watcher: asyncio.Task | None = None
        error: GatewayError | None = None
        try:
            self.raw_body = await exchange.read_body(settings.GATEWAY_MAX_BODY_BYTES)
            # From here on the client can only tell us it left.
            watcher = asyncio.create_task(exchange.watch_disconnect(task))
            await body(self)
        except GatewayError as exc:
            error = exc
        except ClientGone:
            exchange.disconnected = True
            self._mark("client_disconnected", 499)
        except asyncio.CancelledError:
            if not exchange.disconnected:
                await asyncio.shield(self._settle("cancelled", 499))
                raise
            task.uncancel()
            self._mark("client_disconnected", 499)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("gateway request %s failed", exchange.request_id)
            error = GatewayError(
                500,
                "The gateway hit an internal error.",
                error_type="server_error",
                outcome="internal_error",
            )
        finally:
            if watcher is not None:
                watcher.cancel()
        if error is not None:
            self._mark(error.outcome, http_status_for(exchange, error))
        await self._settle()
        if exchange.disconnected:
            return
        if error is not None and not exchange.response_started:
            await send_error(exchange, error)
        elif self.reply is not None:
            await exchange.respond(*self.reply)
        elif exchange.response_started:
            await exchange.stream_end(self.tail or b"")

    async def admit(
        self,
        model: ModelInfo,
        prompt_tokens: int,
        max_output_tokens: int | None,
        *,
        prompt_bound: int,
        choices: Any = 1,
    ) -> None:
        """Check and reserve the key's and tenant's limits (one Redis round trip).

        ``prompt_tokens`` is the cheap estimate rate limits reserve; ``prompt_bound`` the
        upper bound (protocol/bounds.py) a budget reserves with the output bound, and
        the most this request can be billed for (also without a budget).
        Raises a 429 GatewayError in the caller's protocol when a limit refuses."""
        self.model = model
        protocol = self.exchange.protocol
        output = output_bound(max_output_tokens, model.bounds, choices)
        self.event.prompt_tokens_bound = prompt_bound
        self.event.completion_tokens_bound = output
        try:
            self.admission = await self.state.limiter.admit(
                request_id=self.exchange.request_id,
                key=self.key,
                model=model,
                prompt_tokens=prompt_tokens,
                max_output_tokens=max_output_tokens,
                budget_prompt_tokens=prompt_bound,
                budget_output_tokens=output,
            )
        except LimitExceeded as exc:
            LIMIT_REFUSALS.labels(exc.reason, exc.scope).inc()
            raise limit_error(exc, protocol) from None
        except (redis.RedisError, OSError):
            # Fail closed by default; fail-open may be chosen for rate limits, never budgets.
            budgets = (self.key.limits, self.key.tenant_limits)
            if not settings.LIMITS_FAIL_OPEN or any(s and s.budget_nanos for s in budgets):
                raise limits_unavailable() from None
            log.warning("limits unavailable; admitting %s without rate limits", self.key.prefix)
            return
        self.exchange.extra_headers.extend(rate_headers(self.admission.rate, protocol))

    def record_deployment(self, deployment) -> None:
        self.deployment = deployment
        self.event.deployment = deployment.label

    async def relay_out(self, data: bytes, flt) -> None:
        """Send stream bytes to the client, through the content filter when one is on."""
        if flt is not None:
            data = await flt.feed(data)
        if data:
            await self.exchange.stream_send(data)

    def _mark(self, outcome: str, status: int) -> None:
        self.event.outcome = outcome
        self.event.status = status

    async def _settle(self, outcome: str | None = None, status: int | None = None) -> None:
        if outcome is not None and status is not None:
            self._mark(outcome, status)
        event = self.event
        if event.status == 0:
            event.status = 200
            event.outcome = "ok"
        event.latency_ms = self.exchange.elapsed_ms()
        event.ttft_ms = self.exchange.ttft_ms()
        observe_request(event, model_known=self.model is not None)
        try:
            billed = billable_tokens(
                event.prompt_tokens,
                event.completion_tokens,
                event.cached_tokens,
                event.prompt_tokens_bound,
                event.completion_tokens_bound,
            )
            if billed[:2] != (event.prompt_tokens, event.completion_tokens):
                log.warning(
                    "%s: upstream reported %d+%d tokens, over the bounds %s+%s; billing the "
                    "bounds (raise the model's allowances or max_output_tokens if it is right)",
                    event.request_id,
                    event.prompt_tokens,
                    event.completion_tokens,
                    event.prompt_tokens_bound,
                    event.completion_tokens_bound,
                )
            cost = cost_nanos(*billed, self.model.price if self.model else None)
            await self.state.limiter.settle(self.admission, event, cost)
        except Exception:  # noqa: BLE001 - Redis away: keep the event on local disk
            log.exception("settling %s failed; spooling its usage event", event.request_id)
            spool_append(event.to_bytes())


async def handle_models(state: GatewayState, exchange: Exchange) -> None:
    key = await authenticate(state, exchange)
    catalog = await state.catalog.get()
    visible = [m for m in catalog.models if key.may_use(m.name)]
    path = exchange.scope["path"].rstrip("/")
    wanted = path[len("/v1/models/") :] if path.startswith("/v1/models/") else None
    if wanted is not None:
        visible = [m for m in visible if wanted in (m.name,)] or [
            m for m in visible if catalog.by_name.get(wanted) is m
        ]
        if not visible:
            raise GatewayError(
                404,
                f"The model '{wanted}' does not exist or you do not have access to it.",
                code="model_not_found",
                param="model",
            )
    if exchange.protocol == "anthropic":
        from apps.gateway.protocol.anthropic import anthropic_model, anthropic_model_list

        objects = [anthropic_model(m.name, m.display_name, m.created) for m in visible]
        payload = (
            objects[0] if wanted is not None else anthropic_model_list(objects, exchange.scope)
        )
    else:
        objects = [
            {"id": m.name, "object": "model", "created": m.created, "owned_by": "tollgate"}
            for m in visible
        ]
        payload = objects[0] if wanted is not None else {"object": "list", "data": objects}
    await exchange.respond(200, orjson.dumps(payload))


def _routes() -> dict[tuple[str, str], tuple[str, Handler]]:
    from apps.gateway.chat import handle_chat_completions
    from apps.gateway.embeddings import handle_embeddings
    from apps.gateway.responses import handle_responses

    routes: dict[tuple[str, str], tuple[str, Handler]] = {
        ("POST", "/v1/chat/completions"): ("openai", handle_chat_completions),
        ("POST", "/v1/embeddings"): ("openai", handle_embeddings),
        ("POST", "/v1/responses"): ("openai", handle_responses),
        ("GET", "/v1/models"): ("auto", handle_models),
    }
    try:
        from apps.gateway.messages import handle_count_tokens, handle_messages
    except ImportError:
        pass
    else:
        routes[("POST", "/v1/messages")] = ("anthropic", handle_messages)
        routes[("POST", "/v1/messages/count_tokens")] = ("anthropic", handle_count_tokens)
    return routes


class GatewayApp:
    def __init__(self) -> None:
        self._state: GatewayState | None = None
        self._routes = _routes()
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
                    raise GatewayError(405, f"Method {scope['method']} is not allowed here.")
                raise GatewayError(
                    404,
                    f"Unknown route: {scope['method']} {scope['path']}",
                    code="unknown_url",
                    anthropic_type="not_found_error",
                )
            await handler(state, exchange)
        except GatewayError as error:
            await send_error(exchange, error)
        except ClientGone:
            return
        except Exception:  # noqa: BLE001 - never a traceback to the client
            log.exception("gateway request %s failed", exchange.request_id)
            await send_error(
                exchange,
                GatewayError(500, "The gateway hit an internal error.", error_type="server_error"),
            )


def max_body_bytes() -> int:
    return settings.GATEWAY_MAX_BODY_BYTES
