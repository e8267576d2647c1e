"""A metered call: the key authenticated, the body parsed, the model resolved, and
``MeteredCall`` running the rest so that it yields exactly one usage event."""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
import redis
from asgiref.sync import sync_to_async
from django.conf import settings

from apps.billing.pricing import NO_TARIFF, Quote, Tariff, billed_tokens, display, nanos_of_pico
from apps.gateway.caches import KeyInfo, ModelInfo
from apps.gateway.errors import (
    AmbiguousApiKey,
    ApiKeyInvalid,
    ApiKeyMissing,
    AttributionRefused,
    BodyNotJson,
    BodyTooDeep,
    CallerKeyInvalid,
    CallerKeyNotAllowed,
    CallerKeyTwice,
    GatewayError,
    InternalError,
    InvalidRequest,
    KeyExpired,
    KeyRevoked,
    LimitsUnavailable,
    ModelNotAllowed,
    ModelNotFound,
    status_for,
)
from apps.gateway.exchange import JSON_CONTENT_TYPE, ClientGone, Exchange
from apps.gateway.limits import limit_error, rate_headers
from apps.gateway.metrics import LIMIT_REFUSALS, observe_request
from apps.gateway.protocol.attribution import (
    END_USER_HEADER,
    TAGS_HEADER,
    AttributionInvalid,
    anthropic_end_user,
    end_user_hash,
    openai_end_user,
    request_tags,
    tags_merge,
    tags_parse,
    take_metadata_tags,
)
from apps.gateway.protocol.bounds import output_bound
from apps.gateway.protocol.openai import RequestInvalid
from apps.gateway.state import GatewayState
from apps.gateway.upstream.balancing import LATENCY
from apps.gateway.upstream.bodies import deployments_with_caller_key
from apps.gateway.upstream.fallback import Route, route_for
from apps.keys.hashing import INFERENCE_KEY_PREFIX, secret_hash
from apps.ledger.events import UsageEvent
from apps.ledger.spool import spool_append
from apps.limits.balances import balance_journal_nanos
from apps.limits.limiter import LimitExceeded

log = logging.getLogger(__name__)

T = TypeVar("T")


COST_HEADER = b"x-tollgate-cost"
SERVED_MODEL_HEADER = b"x-tollgate-model"
_CREDENTIAL_HEADERS = frozenset({b"authorization", b"x-api-key"})


def request_secret(exchange: Exchange) -> str | None:
    """The API key the request carries, from ``Authorization: Bearer`` or ``x-api-key``;
    a request with two different ones, or either header twice, is refused (the same key
    in both is one key, as an SDK given both may send it)."""
    if exchange.repeats_any(_CREDENTIAL_HEADERS):
        raise AmbiguousApiKey()
    authorization = exchange.headers.get(b"authorization")
    api_key = exchange.headers.get(b"x-api-key")
    bearer = None
    if authorization:
        scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
        bearer = token.strip() if scheme.lower() == "bearer" else None
    if api_key:
        secret = api_key.decode("latin-1").strip()
        if secret and authorization and bearer != secret:
            raise AmbiguousApiKey()
        return secret or bearer
    return bearer


async def authenticate(state: GatewayState, exchange: Exchange) -> KeyInfo:
    secret = request_secret(exchange)
    if not secret:
        raise ApiKeyMissing()
    info = None
    if secret.startswith(INFERENCE_KEY_PREFIX) and len(secret) <= 128:
        info = await state.keys.get(secret_hash(secret))
    grace_end = info.secret_valid_until if info is not None else None
    if grace_end is not None and grace_end <= time.time():
        # A rotated-out secret past its grace: as unknown as the database now says.
        info = None
    if info is None:
        shown = secret[:6] + "…" if len(secret) > 10 else "…"
        raise ApiKeyInvalid(shown)
    if info.revoked:
        raise KeyRevoked()
    if info.expires_at is not None and info.expires_at <= time.time():
        raise KeyExpired()
    return info


async def resolve_model(state: GatewayState, key: KeyInfo, name: Any) -> ModelInfo:
    catalog = await state.catalog.get()
    model = catalog.by_name.get(name) if isinstance(name, str) else None
    if model is None and isinstance(name, str):
        model = (await state.catalog.refresh(older_than_s=1.0)).by_name.get(name)
    if model is None:
        raise ModelNotFound(name)
    if not key.may_use(model.name):
        raise ModelNotAllowed(model.name)
    return model


# The caller's own upstream key (BYOK): Telnyx's body field, or a header of ours.
CALLER_KEY_FIELD = "openai_api_key"
CALLER_KEY_HEADER = b"x-upstream-authorization"
_CALLER_KEY_HEADER_NAME = CALLER_KEY_HEADER.decode()
_CALLER_KEY_HEADERS = frozenset({CALLER_KEY_HEADER})
MIN_CALLER_KEY_LENGTH = 8  # shorter, it could not be told from other words to scrub it
MAX_CALLER_KEY_LENGTH = 1024


def _checked_caller_key(value: Any, field: str) -> str:
    """The key, or a 400 naming ``field`` (never showing the value)."""
    if not isinstance(value, str):
        raise CallerKeyInvalid(field, "must be a string")
    if not value:
        raise CallerKeyInvalid(field, "must not be empty")
    if len(value) > MAX_CALLER_KEY_LENGTH:
        raise CallerKeyInvalid(field, f"is longer than {MAX_CALLER_KEY_LENGTH} characters")
    # Visible ASCII only: it goes into a header, and an exception about a value a header
    # cannot carry would quote it.
    if not all("!" <= c <= "~" for c in value):
        raise CallerKeyInvalid(
            field, "must be printable ASCII without spaces or control characters"
        )
    if len(value) < MIN_CALLER_KEY_LENGTH:
        raise CallerKeyInvalid(field, f"is shorter than {MIN_CALLER_KEY_LENGTH} characters")
    return value


def _header_caller_key(exchange: Exchange) -> str | None:
    raw = exchange.headers.get(CALLER_KEY_HEADER)
    if raw is None:
        return None
    if exchange.repeats_any(_CALLER_KEY_HEADERS):
        raise CallerKeyInvalid(_CALLER_KEY_HEADER_NAME, "is sent more than once")
    value = raw.decode("latin-1").strip()
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else value


def take_caller_key(call: "MeteredCall", body: Any) -> None:
    """Take the caller's own upstream key off the request: ``openai_api_key`` is removed
    from ``body`` (so it is never forwarded) and ``x-upstream-authorization`` is never
    forwarded either. A tenant that does not allow it gets a 400 naming the field; a
    malformed key a 400 too. The key is kept on the call only (``caller_key``), the
    usage event says ``byok``."""
    field = None
    value: Any = None
    if isinstance(body, dict) and CALLER_KEY_FIELD in body:
        field, value = CALLER_KEY_FIELD, body.pop(CALLER_KEY_FIELD)
        call.raw_body = b""  # it held the key: nothing reads it after the parse
    if CALLER_KEY_HEADER in call.exchange.headers:
        if field is not None:
            raise CallerKeyTwice()
        field, value = _CALLER_KEY_HEADER_NAME, _header_caller_key(call.exchange)
    if field is None:
        return
    if not call.key.byok_allowed:
        raise CallerKeyNotAllowed(field)
    call.caller_key = _checked_caller_key(value, field)
    call.event.byok = True


_END_USER_HEADER = END_USER_HEADER.encode()
_END_USER_HEADERS = frozenset({_END_USER_HEADER})
_TAGS_HEADER = TAGS_HEADER.encode()
_TAGS_HEADERS = frozenset({_TAGS_HEADER})


def take_attribution(
    call: "MeteredCall", body: Any, *, anthropic: bool = False, metadata: str = "never"
) -> None:
    """The request's end user (the header, else the body's ``user`` or Anthropic's
    ``metadata.user_id``) and tags (the header over the body's ``metadata`` where the route
    reads it as tags — ``metadata``: one of ``METADATA_TAGS``, the tags then taken off the
    body — over the key's default tags) onto the call's usage event; anything malformed or
    hostile is a 400 naming where it was."""
    headers = call.exchange.headers
    try:
        header = headers.get(_END_USER_HEADER)
        if header is not None and call.exchange.repeats_any(_END_USER_HEADERS):
            raise AttributionInvalid(END_USER_HEADER, "is sent more than once")
        end_user = (anthropic_end_user if anthropic else openai_end_user)(body, header)
        from_body = take_metadata_tags(body, metadata)
        sent = headers.get(_TAGS_HEADER)
        if sent is not None:
            if call.exchange.repeats_any(_TAGS_HEADERS):
                raise AttributionInvalid(TAGS_HEADER, "is sent more than once")
            call.event.tags = tags_merge(
                call.key.default_tags, request_tags(from_body, tags_parse(sent))
            )
        elif from_body:
            call.event.tags = tags_merge(call.key.default_tags, from_body)
        elif call.key.default_tags:
            call.event.tags = call.key.default_tags
    except AttributionInvalid as exc:
        raise AttributionRefused(exc.param, exc.message) from None
    if end_user is not None:
        call.event.end_user = end_user


# Deeper bodies are refused: orjson writes at most 255 levels, and a body is written
# again (model rewritten, translated, echoed) inside a few levels of our own.
MAX_JSON_DEPTH = 128


def parse_json_body(raw: bytes) -> Any:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise BodyNotJson() from None
    # Nesting N levels deep takes 2N bytes at least: small bodies need no walk.
    if len(raw) > 2 * MAX_JSON_DEPTH and json_too_deep(body, MAX_JSON_DEPTH):
        raise BodyTooDeep(MAX_JSON_DEPTH)
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


def parse_openai_request(
    call: "MeteredCall", validate: Callable[[Any], T], *, metadata: str = "never"
) -> tuple[dict, T]:
    """The request's JSON body (its model noted on the usage event as soon as it is
    known) and what ``validate`` returns; its RequestInvalid is an OpenAI 400.
    ``metadata``: whether the body's ``metadata`` holds tags (``take_attribution``)."""
    body = parse_json_body(call.raw_body)
    if isinstance(body, dict) and isinstance(body.get("model"), str):
        call.event.model = body["model"]
    take_caller_key(call, body)
    try:
        checked = validate(body)
    except RequestInvalid as exc:
        raise InvalidRequest(exc.message, exc.param) from None
    take_attribution(call, body, metadata=metadata)
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
            prepaid=key.prepaid,
            project_id=key.project_id or None,
        )
        self.admission = None
        self.model: ModelInfo | None = None
        # What the tenant pays for the model (and the operator), chosen at admission.
        self.tariff: Tariff = NO_TARIFF
        # The protocol's prompt estimate admission was given (0: not admitted).
        self.prompt_estimate = 0
        self.deployment = None  # the one last tried
        # Bytes held back until the event is durable (the last body part of the response).
        self.tail: bytes | None = None
        self.reply: tuple[int, bytes, tuple] | None = None
        self.raw_body = b""
        # Content filtering of this request (filtering.Screen); None = off.
        self.screen = None
        # The caller's own upstream key (take_caller_key); never logged, stored or echoed.
        self.caller_key: str | None = None
        # The fallback models that may serve it (resolve_model(fallbacks=True)); None: none.
        self.route: Route | None = None

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
            error = InternalError()
        finally:
            if watcher is not None:
                watcher.cancel()
        if error is not None:
            self._mark(error.outcome, status_for(error, exchange.protocol))
        await self._settle()
        if exchange.disconnected:
            return
        if error is not None and not exchange.response_started:
            await exchange.respond_error(error)
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

        ``prompt_tokens`` is the cheap estimate rate limits reserve, scaled by the
        model's observed drift (estimates.py); ``prompt_bound`` the upper bound
        (protocol/bounds.py) a budget reserves with the output bound, and the most this
        request can be billed for (also without a budget).
        Raises a 429 (RateLimited, BudgetExhausted) when a limit refuses."""
        self.model = model
        self.prompt_estimate = prompt_tokens
        protocol = self.exchange.protocol
        output = output_bound(max_output_tokens, model.bounds, choices)
        self.event.prompt_tokens_bound = prompt_bound
        self.event.completion_tokens_bound = output
        when = datetime.fromtimestamp(self.event.created_at, UTC)
        self.tariff = model.prices.tariff(self.key.tenant_id, model.name, when)
        byok = self.event.byok
        worst = self.tariff.worst_nanos(prompt_bound, output, byok)
        if self.route is not None:
            # A fallback may serve it: the reservation holds the priciest of them.
            for other in self.route.alternatives:
                tariff = model.prices.tariff(self.key.tenant_id, other.name, when)
                worst = max(worst, tariff.worst_nanos(prompt_bound, output, byok))
        admit = functools.partial(
            self.state.limiter.admit,
            request_id=self.exchange.request_id,
            key=self.key,
            prompt_tokens=self.state.estimates.reservation(model.name, prompt_tokens, prompt_bound),
            max_output_tokens=max_output_tokens,
            worst_price_nanos=worst,
            model=model.name,
            end_user_hash=(
                end_user_hash(self.key.tenant_id, self.event.end_user)
                if self.event.end_user and self.key.end_user_limits is not None
                else None
            ),
        )
        try:
            try:
                self.admission = await admit()
            except LimitExceeded as exc:
                if exc.reason != "nobalance":
                    raise
                # The tenant's first request since its balance was (re)loaded: off the
                # warm path, once (apps/limits/balances.py).
                await self._load_balance()
                self.admission = await admit()
        except LimitExceeded as exc:
            LIMIT_REFUSALS.labels(exc.reason, exc.scope).inc()
            self._not_admitted()
            raise limit_error(exc, protocol) from None
        except (redis.RedisError, OSError):
            # Fail closed by default; fail-open may be chosen for rate limits, never budgets
            # or balances.
            if not settings.LIMITS_FAIL_OPEN or self.key.prepaid or self.key.budgets:
                self._not_admitted()
                raise LimitsUnavailable() from None
            log.warning("limits unavailable; admitting %s without rate limits", self.key.prefix)
            return
        self.exchange.extra_headers.extend(rate_headers(self.admission.rate, protocol))

    async def _load_balance(self) -> None:
        """Load the tenant's balance from the journal, once per process at a time: the
        other requests of a cold burst wait for that load."""
        tenant_id = self.key.tenant_id
        loads = self.state.balance_loads
        load = loads.get(tenant_id)
        if load is None:
            load = loads[tenant_id] = asyncio.ensure_future(self._balance_read_and_set(tenant_id))
            load.add_done_callback(lambda _done: loads.pop(tenant_id, None))
        await asyncio.shield(load)

    async def _balance_read_and_set(self, tenant_id: int) -> None:
        journal = await sync_to_async(balance_journal_nanos)(tenant_id=tenant_id)
        await self.state.limiter.balance_load(tenant_id=tenant_id, nanos=journal)

    def _not_admitted(self) -> None:
        """A prepaid request refused at admission is recorded without a debit: its balance
        never reserved anything, so nothing (not even a request fee) is charged."""
        if self.key.prepaid:
            self.tariff = NO_TARIFF

    def quote(self) -> Quote:
        """The request's cost and price from the usage event's counts as they stand,
        noted on the event (settlement and the answer's ``usage.cost`` both ask: the
        same counts give the same amounts)."""
        event = self.event
        # A call made with the caller's own key (byok) is priced at the rule's BYOK fee.
        quote = self.tariff.quote(billed_tokens(event), event.service_tier, event.byok)
        event.cost, event.price = str(quote.cost), str(quote.price)
        event.cost_rule_id, event.rate_card_id, event.price_rule_id = quote[2:]
        return quote

    def cost_text(self) -> str:
        """The request's price as answers show it (``usage.cost``, ``x-tollgate-cost``)."""
        return display(self.quote().price)

    def reply_json(self, answer: dict) -> None:
        """A complete answer, its price shown in ``usage.cost`` (when it has a usage
        object: OpenRouter's field, a decimal string) and the ``x-tollgate-cost`` header."""
        cost = self.cost_text()
        usage = answer.get("usage")
        if isinstance(usage, dict):
            usage["cost"] = cost
        self.exchange.extra_headers.append((COST_HEADER, cost.encode()))
        self.reply = (200, orjson.dumps(answer), (JSON_CONTENT_TYPE,))

    async def resolve_model(self, name: Any, *, fallbacks: bool = False) -> ModelInfo:
        """The model ``name`` as this call may use it: allowed to the key, and with the
        caller's own key only the deployments whose backend accepts one (carrying it).
        ``fallbacks``: the call may be served by the model's fallbacks (``self.route``);
        the model returned then has the widest bounds among them."""
        model = await resolve_model(self.state, self.key, name)
        self.event.model = self.event.requested_model = model.name
        if self.caller_key is not None:
            model = deployments_with_caller_key(model, self.caller_key)
        if fallbacks and (model.fallbacks or model.context_window_fallbacks):
            catalog = await self.state.catalog.get()
            self.route = route_for(catalog, self.key, model, self.caller_key)
            if self.route is not None:
                model = self.route.model
        return model

    def served_by(self, model: ModelInfo) -> None:
        """A fallback serves the call: the ledger names it, its price applies (the
        reservation covered it), and the answer's ``x-tollgate-model`` header names it."""
        self.event.model = model.name
        when = datetime.fromtimestamp(self.event.created_at, UTC)
        self.tariff = model.prices.tariff(self.key.tenant_id, model.name, when)
        self.exchange.extra_headers.append((SERVED_MODEL_HEADER, model.name.encode()))

    def record_deployment(self, deployment) -> None:
        self.deployment = deployment
        self.event.deployment = deployment.label

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
        if (
            self.model is not None
            and self.model.strategy == LATENCY
            and event.status == 200
            and self.deployment is not None
        ):
            # A whole answer is a non-stream's first token.
            ttft = event.ttft_ms if event.ttft_ms is not None else event.latency_ms
            self.state.balance.observe_ttft(self.deployment.id, ttft)
        if self.prompt_estimate > 0 and event.prompt_tokens > 0 and not event.tokens_estimated:
            # Only counts the upstream reported; one over the bound counts as the bound,
            # as it is billed below.
            reported = min(event.prompt_tokens, event.prompt_tokens_bound)
            # The model that served (a fallback's tokenizer counted these).
            self.state.estimates.observe(event.model, reported, self.prompt_estimate)
        try:
            billed = billed_tokens(event)
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
            quote = self.quote()
            await self.state.limiter.settle(self.admission, event, nanos_of_pico(quote.price))
        except Exception:  # noqa: BLE001 - Redis away: keep the event on local disk
            log.exception("settling %s failed; spooling its usage event", event.request_id)
            spool_append(event.to_bytes())
