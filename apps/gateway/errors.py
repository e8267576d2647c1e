"""Every answer other than success, one class per error, rendered once per protocol.

A class carries what its error is (status, OpenAI ``type``/``code``/``param``, the
Anthropic ``error.type``, the ledger outcome, headers) as class attributes; its
constructor takes only what the message is built from. ``anthropic_type`` None means
"the type Anthropic gives the status" (docs/protocols.md §2.5), ``outcome`` None means
the OpenAI code, else its type.
"""

from typing import Any

import orjson

from apps.gateway.protocol.anthropic import anthropic_error_body, anthropic_error_type_for_status
from apps.gateway.protocol.openai import openai_error_body

Headers = list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...]


class GatewayError(Exception):
    """An answer other than success, rendered in the caller's protocol."""

    status: int = 400
    error_type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    outcome: str = "invalid_request_error"
    anthropic_type: str | None = None
    # The status on the Anthropic routes when it differs from ``status``.
    anthropic_status: int | None = None
    headers: Headers = ()
    # More fields of the OpenAI error object (e.g. innererror).
    extra: dict[str, Any] | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "outcome" not in cls.__dict__:
            cls.outcome = cls.code or cls.error_type

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def param_named_in(message: str) -> str | None:
    """The field a validation message names first ("messages[0].role: …")."""
    return message.partition(":")[0] if ":" in message else None


# ---------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------


class InvalidRequest(GatewayError):
    """A body that fails validation or translation; ``message`` says why."""

    outcome = "invalid_request"

    def __init__(self, message: str, param: str | None = None, anthropic_type: str | None = None):
        super().__init__(message)
        self.param = param
        self.anthropic_type = anthropic_type


class AttributionRefused(GatewayError):
    """An end-user id or tag the gateway does not take (protocol/attribution.py);
    ``param`` names the field or header."""

    outcome = "invalid_request"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"Invalid '{param}': {message}.")
        self.param = param


class BodyNotJson(GatewayError):
    outcome = "invalid_request"

    def __init__(self) -> None:
        super().__init__(
            "We could not parse the JSON body of your request. The body must be valid JSON."
        )


class BodyTooDeep(GatewayError):
    outcome = "invalid_request"

    def __init__(self, limit: int) -> None:
        super().__init__(f"The JSON body of your request is nested more than {limit} levels deep.")


class BodyTooLarge(GatewayError):
    status = 413
    code = "request_too_large"
    anthropic_type = "request_too_large"

    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"Request body too large: the limit is {max_bytes} bytes.")


class ContentLengthInvalid(GatewayError):
    def __init__(self) -> None:
        super().__init__("Invalid Content-Length header.")


class UnknownRoute(GatewayError):
    status = 404
    code = "unknown_url"
    anthropic_type = "not_found_error"

    def __init__(self, method: str, path: str) -> None:
        super().__init__(f"Unknown route: {method} {path}")


class MethodNotAllowed(GatewayError):
    status = 405

    def __init__(self, method: str) -> None:
        super().__init__(f"Method {method} is not allowed here.")


class InternalError(GatewayError):
    status = 500
    error_type = "server_error"
    outcome = "internal_error"

    def __init__(self) -> None:
        super().__init__("The gateway hit an internal error.")


# ---------------------------------------------------------------------------
# The key and its model
# ---------------------------------------------------------------------------


class _KeyRefused(GatewayError):
    status = 401
    code = "invalid_api_key"
    anthropic_type = "authentication_error"


class ApiKeyMissing(_KeyRefused):
    def __init__(self) -> None:
        super().__init__(
            "You didn't provide an API key. Send it as 'Authorization: Bearer <key>' "
            "or in the 'x-api-key' header."
        )


class ApiKeyInvalid(_KeyRefused):
    def __init__(self, shown: str) -> None:
        super().__init__(f"Incorrect API key provided: {shown}. Check the key in your dashboard.")


class KeyRevoked(_KeyRefused):
    def __init__(self) -> None:
        super().__init__("This API key has been revoked.")


class KeyExpired(_KeyRefused):
    def __init__(self) -> None:
        super().__init__("This API key has expired.")


class AmbiguousApiKey(_KeyRefused):
    # Never served with one of them: a proxy appending a header must not switch tenants.
    code = "ambiguous_api_key"
    outcome = "ambiguous_api_key"

    def __init__(self) -> None:
        super().__init__(
            "The request carries more than one API key ('Authorization' and 'x-api-key' "
            "differ, or one of them is repeated). Send exactly one."
        )


class ModelNotFound(GatewayError):
    status = 404
    code = "model_not_found"
    param = "model"

    def __init__(self, name: Any) -> None:
        super().__init__(f"The model '{name}' does not exist or you do not have access to it.")


class ModelNotAllowed(GatewayError):
    status = 403
    error_type = "permission_error"
    code = "model_not_allowed"
    param = "model"
    anthropic_type = "permission_error"

    def __init__(self, name: str) -> None:
        super().__init__(f"This API key is not allowed to use the model '{name}'.")


class ModelNotSupported(GatewayError):
    """The model has no deployment that offers ``api`` (Anthropic backends: no
    embeddings, no Responses)."""

    code = "model_not_supported"
    param = "model"
    outcome = "invalid_request"

    def __init__(self, name: str, api: str) -> None:
        super().__init__(f"The model '{name}' does not support the {api} API here.")


# ---------------------------------------------------------------------------
# The caller's own upstream key (BYOK)
# ---------------------------------------------------------------------------


class CallerKeyInvalid(GatewayError):
    """The caller's upstream key (``field``: the body field or header that carried it)
    is malformed; ``problem`` says how, never showing the value."""

    code = "invalid_upstream_key"
    outcome = "invalid_request"

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"'{field}' {problem}.")
        self.param = field


class CallerKeyTwice(GatewayError):
    code = "invalid_upstream_key"
    param = "openai_api_key"
    outcome = "invalid_request"

    def __init__(self) -> None:
        super().__init__(
            "Send your own upstream key once: in 'openai_api_key' or in the "
            "'x-upstream-authorization' header, not both."
        )


class CallerKeyNotAllowed(GatewayError):
    """The tenant has not opted in to callers' own upstream keys."""

    code = "upstream_key_not_allowed"
    outcome = "invalid_request"

    def __init__(self, field: str) -> None:
        super().__init__(
            f"This API key may not send its own upstream key ('{field}'): its tenant does "
            "not allow it. Remove it, or ask the operator to allow it."
        )
        self.param = field


class ModelRejectsCallerKey(GatewayError):
    """No deployment of the model has a backend that accepts a caller's key."""

    code = "upstream_key_not_accepted"
    param = "model"
    outcome = "invalid_request"

    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' does not accept a caller's own upstream key here.")


class PromptFiltered(GatewayError):
    code = "content_filter"
    param = "prompt"
    anthropic_type = "invalid_request_error"

    def __init__(self, rules: str, extra: dict[str, Any]) -> None:
        super().__init__(
            "The prompt was filtered by this API key's content policy "
            f"({rules}). Please modify your prompt and retry."
        )
        self.extra = extra


# ---------------------------------------------------------------------------
# Limits
# ---------------------------------------------------------------------------


class RateLimited(GatewayError):
    status = 429
    error_type = "requests"
    code = "rate_limit_exceeded"
    anthropic_type = "rate_limit_error"

    def __init__(self, message: str, reason: str, headers: Headers) -> None:
        super().__init__(message)
        if reason == "tokens":
            self.error_type = "tokens"
        self.outcome = f"limit_{reason}"
        self.headers = headers


class BudgetExhausted(GatewayError):
    status = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"
    outcome = "budget_exceeded"
    anthropic_type = "rate_limit_error"

    def __init__(self, message: str, headers: Headers) -> None:
        super().__init__(message)
        self.headers = headers


class BalanceExhausted(GatewayError):
    """A prepaid tenant's balance does not cover the request's worst-case price: what each
    API answers when credit runs out (OpenAI's 429 insufficient_quota, which its SDKs do
    not retry; Anthropic's 400 with its own wording)."""

    status = 429
    error_type = "insufficient_quota"
    code = "insufficient_quota"
    outcome = "balance_exhausted"
    anthropic_status = 400
    anthropic_type = "invalid_request_error"
    headers = ((b"x-should-retry", b"false"),)

    def __init__(self, protocol: str) -> None:
        if protocol == "anthropic":
            message = (
                "Your credit balance is too low to access this API. Please go to Plans & "
                "Billing to upgrade or purchase credits."
            )
        else:
            message = (
                "You exceeded your current quota: your organization's credit balance is too "
                "low for this request. Add credit to the balance and retry."
            )
        super().__init__(message)


class LimitsUnavailable(GatewayError):
    status = 503
    error_type = "server_error"
    code = "limits_unavailable"
    anthropic_type = "api_error"
    headers = ((b"retry-after", b"1"),)

    def __init__(self) -> None:
        super().__init__(
            "Limits cannot be checked right now; the request was not sent. Please retry."
        )


class GatewayOverloaded(GatewayError):
    """This process holds as many requests as it may, or its event loop runs late
    (apps/gateway/load.py): the request was not read, nothing was sent or billed."""

    status = 503
    error_type = "server_error"
    code = "gateway_overloaded"
    # Anthropic clients know overload as 529 overloaded_error (status_for); both SDKs
    # retry it after retry-after.
    anthropic_type = "overloaded_error"
    headers = ((b"retry-after", b"1"),)

    def __init__(self) -> None:
        super().__init__("The gateway is overloaded; the request was not sent. Please retry.")


# ---------------------------------------------------------------------------
# Upstreams
# ---------------------------------------------------------------------------


class _UpstreamError(GatewayError):
    status = 502
    error_type = "server_error"
    anthropic_type = "api_error"


class NoDeployment(_UpstreamError):
    status = 503
    code = "no_deployment"

    def __init__(self, name: str) -> None:
        super().__init__(f"The model '{name}' has no deployment available.")


class UpstreamTimeout(_UpstreamError):
    status = 504
    code = "upstream_timeout"
    anthropic_type = "timeout_error"

    def __init__(self) -> None:
        super().__init__("The upstream did not answer in time.")


class UpstreamResting(_UpstreamError):
    """Every deployment of the model has its breaker open (failing, or resting after a
    429): nothing was sent; ``retry_after_s`` until the soonest may be tried again."""

    # 503 on both routes (not Anthropic's 529 for an overloaded upstream): nothing was
    # tried, the gateway itself holds the request back; SDKs retry it after retry-after.
    status = 503
    code = "upstream_resting"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "Every upstream of this model is failing or resting; the request was not sent. "
            f"Retry in {retry_after_s} s."
        )
        self.headers = ((b"retry-after", str(retry_after_s).encode()),)


class UpstreamRateLimited(_UpstreamError):
    status = 429
    error_type = "requests"
    code = "upstream_rate_limited"
    outcome = "upstream_429"
    anthropic_type = "rate_limit_error"
    headers = ((b"retry-after", b"1"),)

    def __init__(self, said: str) -> None:
        super().__init__(f"The model's upstream is rate limited; retry shortly{said}")


class UpstreamOverloaded(_UpstreamError):
    # Anthropic clients know it as 529 (status_for).
    code = "upstream_overloaded"
    anthropic_type = "overloaded_error"

    def __init__(self, upstream_status: int, said: str) -> None:
        super().__init__(f"The model's upstream is overloaded{said}")
        self.outcome = f"upstream_{upstream_status}"


class UpstreamUnavailable(_UpstreamError):
    code = "upstream_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(f"The upstream for this model is unavailable{detail}")


class UpstreamFailed(_UpstreamError):
    code = "upstream_error"

    def __init__(self, upstream_status: int, said: str) -> None:
        super().__init__(f"The upstream for this model failed (HTTP {upstream_status}){said}")
        self.outcome = f"upstream_{upstream_status}"


class UpstreamRefusedGateway(_UpstreamError):
    """Our credentials or catalog are wrong, not the client's request."""

    code = "upstream_error"

    def __init__(self, upstream_status: int) -> None:
        super().__init__(
            f"The upstream for this model rejected the gateway (HTTP {upstream_status})."
        )
        self.outcome = f"upstream_{upstream_status}"


class UpstreamBadResponse(_UpstreamError):
    outcome = "upstream_bad_response"

    def __init__(self, what: str) -> None:
        super().__init__(f"The upstream sent a response that is not {what}.")


class UpstreamReadFailed(_UpstreamError):
    outcome = "upstream_error"

    def __init__(self) -> None:
        super().__init__("The upstream failed while sending the response.")


class UpstreamRefusedCallerKey(GatewayError):
    """The upstream refused the caller's own key (401/403): relayed with its status and
    its words, scrubbed of the key, since only the caller can fix it."""

    anthropic_type = None

    def __init__(self, status: int, error: dict[str, Any], said: str) -> None:
        super().__init__(f"The model's upstream refused your upstream key (HTTP {status}){said}")
        self.status = status
        self.error_type = error["type"]
        self.code = error["code"] or "upstream_key_refused"
        self.outcome = f"upstream_{status}"


class UpstreamRefusedRequest(GatewayError):
    """The upstream refused the client's request (a 4xx): relayed with its status and
    the upstream's own (normalised, scrubbed) error object, so the caller can fix it."""

    def __init__(self, status: int, error: dict[str, Any], anthropic_type: str | None) -> None:
        super().__init__(error["message"])
        self.status = status
        self.error_type = error["type"]
        self.code = error["code"]
        self.param = error["param"]
        self.outcome = f"upstream_{status}"
        self.anthropic_type = anthropic_type


class UpstreamContextExceeded(UpstreamRefusedRequest):
    """The upstream said the prompt does not fit the model's context window (in any of
    the forms protocol/context_window.py knows, a 500 included): the client's request,
    relayed as a 400 ``context_length_exceeded`` unless a context-window fallback serves
    it."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        status = status if 400 <= status < 500 else 400
        error = {
            **error,
            "type": "invalid_request_error",
            "code": error.get("code") or "context_length_exceeded",
        }
        super().__init__(status, error, "invalid_request_error")


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


def render_openai(error: GatewayError) -> bytes:
    body = openai_error_body(error.message, error.error_type, code=error.code, param=error.param)
    if error.extra:
        body["error"].update(error.extra)
    return orjson.dumps(body)


def render_anthropic(error: GatewayError, request_id: str) -> bytes:
    error_type = error.anthropic_type or anthropic_error_type_for_status(error.status)
    return orjson.dumps(anthropic_error_body(error_type, error.message, request_id))


def status_for(error: GatewayError, protocol: str) -> int:
    # Anthropic clients know an overloaded upstream as 529.
    if protocol == "anthropic" and error.anthropic_type == "overloaded_error":
        return 529
    if protocol == "anthropic" and error.anthropic_status is not None:
        return error.anthropic_status
    return error.status
