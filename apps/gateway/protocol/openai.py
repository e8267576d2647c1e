"""OpenAI Chat Completions shapes: errors, light request validation, token estimates."""

import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson

from .bounds import TokenBounds, json_bytes, text_bytes
from .sse import DONE_EVENT, SSEParser


def openai_error_body(
    message: str, error_type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


# ---------------------------------------------------------------------------
# Upstream errors: what a backend said, fit to relay to the caller
# ---------------------------------------------------------------------------

MAX_UPSTREAM_MESSAGE = 1000
# Scrubbing is regex work: bounded so a huge error page costs no more than a small one.
_SCRUB_INPUT_LIMIT = 8000
_REDACTED = "[redacted]"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
_SPACES = re.compile(r"\s{2,}")
_HTML_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")
_HTML_TAG = re.compile(r"(?s)<[^>]{0,2000}>")
# Credentials in the forms servers echo them: a scheme and its token, key=value pairs,
# and API keys by their well-known prefixes (ours is "tg-", admin keys "tga-").
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s,;'\"]+")
_KEY_VALUE = re.compile(
    r"(?i)\b((?:x-)?api[-_ ]?key|access[-_ ]?token|auth[-_ ]?token|secret|password|"
    r"authorization|credential)s?([\"']?\s*[:=]\s*[\"']?)[^\s\"',;]+"
)
_PREFIXED_KEY = re.compile(
    r"\b(?:sk|pk|rk|tga?|sess|xai|gsk|hf|ghp|gho|ghs|glpat|AIza)[-_][A-Za-z0-9._\-]{6,}"
    r"|\bAKIA[0-9A-Z]{12,}"
)
# An opaque token: long, letters and digits mixed (a key without a known prefix).
_OPAQUE_TOKEN = re.compile(r"(?<![\w-])(?=[\w-]*\d)(?=[\w-]*[A-Za-z])[\w-]{32,}")
_URL = re.compile(r"(?i)\b[a-z][a-z0-9+.-]{1,15}://[^\s'\"<>]+")
_IPV4 = re.compile(r"(?<![\w.])\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.])")
_IPV6 = re.compile(r"\[?(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])\]?(?::\d+)?")
_INTERNAL_HOST = re.compile(
    r"(?i)\b(?:[a-z0-9-]+\.)+(?:internal|local|localdomain|lan|svc|cluster|corp|intranet|"
    r"home|private)\b(?::\d{1,5})?|\blocalhost(?::\d{1,5})?\b|"
    r"\b[a-z][a-z0-9-]*(?:\.[a-z0-9-]+)*:\d{4,5}\b"
)


def _ipv6_or_keep(match: re.Match) -> str:
    text = match.group(0)
    # Clock times ("12:30:45") have colons too: an address has "::" or 7 groups.
    return "[address]" if "::" in text or text.count(":") >= 7 else text


def scrub_upstream_text(
    text: str, *, secrets: Iterable[str] = (), hosts: Iterable[str] = ()
) -> str:
    """``text`` without credentials, internal hosts, URLs or IP addresses, one line, at
    most MAX_UPSTREAM_MESSAGE characters: safe to show the caller.

    ``secrets`` (the backend's own credentials) and ``hosts`` (its hostname) are removed
    wherever they appear; the patterns catch what a server may echo besides."""
    if len(text) > _SCRUB_INPUT_LIMIT:
        # Drop the last, possibly cut, word: half a secret would not match its pattern.
        text = text[:_SCRUB_INPUT_LIMIT].rsplit(None, 1)[0]
    text = _CONTROL.sub(" ", text)
    for secret in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(secret, _REDACTED)
    text = _AUTH_SCHEME.sub(r"\1\2" + _REDACTED, text)
    text = _KEY_VALUE.sub(r"\1\2" + _REDACTED, text)
    text = _PREFIXED_KEY.sub(_REDACTED, text)
    text = _URL.sub("[url]", text)
    for host in sorted((h for h in hosts if h), key=len, reverse=True):
        text = re.sub(re.escape(host) + r"(?::\d{1,5})?", "[host]", text, flags=re.IGNORECASE)
    text = _IPV4.sub("[address]", text)
    text = _IPV6.sub(_ipv6_or_keep, text)
    text = _INTERNAL_HOST.sub("[host]", text)
    text = _OPAQUE_TOKEN.sub(_REDACTED, text)
    text = _SPACES.sub(" ", text).strip()
    if len(text) > MAX_UPSTREAM_MESSAGE:
        text = text[: MAX_UPSTREAM_MESSAGE - 1].rstrip() + "…"
    return text


def _detail_message(detail: Any) -> str | None:
    """FastAPI's validation detail (vLLM, llama-cpp-python): a string, or a list of
    ``{"loc": [...], "msg": "..."}`` (its ``input`` echoes the request: left out)."""
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list):
        return None
    parts = []
    for item in detail[:20]:
        if isinstance(item, dict) and isinstance(item.get("msg"), str):
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
            parts.append(f"{where}: {item['msg']}" if where else item["msg"])
        elif isinstance(item, str):
            parts.append(item)
    return "; ".join(parts) or None


def _text_message(raw: bytes) -> str:
    """A text or HTML error body as one line (a traceback as its last line)."""
    text = raw[: _SCRUB_INPUT_LIMIT * 2].decode("utf-8", "replace").strip()
    if text[:1] == "<":
        title = _HTML_TITLE.search(text)
        text = title.group(1) if title else _HTML_TAG.sub(" ", text)
    if "Traceback (most recent call last)" in text:
        lines = [line for line in text.splitlines() if line.strip()]
        text = lines[-1] if lines else ""
    return text


def upstream_error_fields(raw: bytes) -> dict[str, Any]:
    """The error object of an upstream's error body, whatever its shape: OpenAI and new
    vLLM ``{"error": {...}}``, old vLLM ``{"object": "error", "message", ...}``,
    Anthropic ``{"type": "error", "error": {...}}``, Ollama ``{"error": "text"}``,
    FastAPI ``{"detail": ...}``, or plain text/HTML. ``message`` is raw (unscrubbed)
    and may be empty."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return {"message": _text_message(raw)}
    if not isinstance(body, dict):
        return {"message": body if isinstance(body, str) else ""}
    inner = body.get("error", body)
    if isinstance(inner, str):
        return {"message": inner}
    if not isinstance(inner, dict):
        inner = body
    message = inner.get("message")
    if not isinstance(message, str):
        message = _detail_message(inner.get("detail")) or _detail_message(body.get("detail"))
    if message is None and isinstance(inner.get("message"), dict | list):
        message = orjson.dumps(inner["message"]).decode()
    return {**inner, "message": message or ""}


def normalise_upstream_error(
    raw: bytes, status: int, *, secrets: Iterable[str] = (), hosts: Iterable[str] = ()
) -> dict[str, Any]:
    """Re-wrap the error shapes real servers send as {"error": {...}} with a string code
    and a message fit for the caller (see ``scrub_upstream_text``)."""
    inner = upstream_error_fields(raw)
    message = scrub_upstream_text(inner["message"], secrets=secrets, hosts=hosts)
    code = inner.get("code")
    error_type = inner.get("type")
    return openai_error_body(
        message=message or f"upstream returned HTTP {status}",
        error_type=error_type
        if isinstance(error_type, str) and error_type and error_type != "error"
        else ("invalid_request_error" if status < 500 else "server_error"),
        code=None if code is None or isinstance(code, bool | dict | list) else str(code),
        param=inner.get("param") if isinstance(inner.get("param"), str) else None,
    )


class RequestInvalid(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


# Top-level fields the gateway reads, translates or echoes, and the JSON types they take.
# Fields not listed are relayed to OpenAI-compatible backends unread.
_OPTIONAL_TYPES: dict[str, tuple[type, ...]] = {
    "stream": (bool,),
    "n": (int,),
    "max_tokens": (int,),
    "max_completion_tokens": (int,),
    "temperature": (int, float),
    "top_p": (int, float),
    "top_k": (int,),
    "presence_penalty": (int, float),
    "frequency_penalty": (int, float),
    "logprobs": (bool,),
    "top_logprobs": (int,),
    "seed": (int,),
    "user": (str,),
    "safety_identifier": (str,),
    "reasoning_effort": (str,),
    "tools": (list,),
    "functions": (list,),
    "stop": (str, list),
    "response_format": (dict,),
    "stream_options": (dict,),
    "tool_choice": (str, dict),
    "function_call": (str, dict),
    "parallel_tool_calls": (bool,),
    "logit_bias": (dict,),
    "metadata": (dict,),
    "store": (bool,),
}
# OpenAI's documented ranges (inclusive).
_RANGES: dict[str, tuple[int, int]] = {
    "temperature": (0, 2),
    "top_p": (0, 1),
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "top_logprobs": (0, 20),
    "n": (1, 128),
}
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_TOOL_CHOICES = frozenset({"none", "auto", "required"})


def _type_ok(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python but not a number in JSON Schema.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _require_model(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestInvalid("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestInvalid("'model' is required and must be a string.", "model")


def check_fields(
    body: dict,
    types: dict[str, tuple[type, ...]],
    ranges: dict[str, tuple[int, int]],
) -> None:
    """Each optional field of ``body`` (null = absent) of its JSON type, numbers in range."""
    for field, allowed in types.items():
        value = body.get(field)
        if value is not None and not _type_ok(value, allowed):
            raise RequestInvalid(f"'{field}' has the wrong type.", field)
    for field, (low, high) in ranges.items():
        value = body.get(field)
        if value is not None and not low <= value <= high:
            raise RequestInvalid(f"'{field}' must be between {low} and {high}.", field)


def _require_str(holder: dict, field: str, where: str, *, required: bool = True) -> None:
    value = holder.get(field)
    if isinstance(value, str) or (value is None and not required):
        return
    raise RequestInvalid(f"'{where}.{field}' must be a string.", f"{where}.{field}")


def _require_object(value: Any, where: str) -> dict:
    if not isinstance(value, dict):
        raise RequestInvalid(f"'{where}' must be an object.", where)
    return value


def _check_content_parts(parts: list, where: str) -> None:
    for j, part in enumerate(parts):
        at = f"{where}.[{j}]"
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise RequestInvalid(f"'{at}' must be an object with a string 'type'.", at)
        kind = part["type"]
        if kind == "text":
            _require_str(part, "text", at)
        elif kind == "refusal":
            _require_str(part, "refusal", at)
        elif kind == "image_url":
            image = _require_object(part.get("image_url"), f"{at}.image_url")
            _require_str(image, "url", f"{at}.image_url")
            _require_str(image, "detail", f"{at}.image_url", required=False)
        elif kind == "input_audio":
            audio = _require_object(part.get("input_audio"), f"{at}.input_audio")
            _require_str(audio, "data", f"{at}.input_audio")
            _require_str(audio, "format", f"{at}.input_audio")
        elif kind == "file":
            file = _require_object(part.get("file"), f"{at}.file")
            for field in ("file_data", "file_id", "filename"):
                _require_str(file, field, f"{at}.file", required=False)
        # Other part types are the backend's to accept or refuse.


def _check_function_call(call: Any, where: str) -> None:
    """A tool call's (or the legacy function_call's) ``function``: name and JSON string."""
    function = _require_object(call, where)
    _require_str(function, "name", where)
    _require_str(function, "arguments", where, required=False)


def _check_message(message: Any, where: str) -> None:
    if not isinstance(message, dict):
        raise RequestInvalid(f"{where} must be an object.", where)
    role = message.get("role")
    if not isinstance(role, str) or role not in _ROLES:
        raise RequestInvalid(f"{where}.role must be one of {sorted(_ROLES)}.", f"{where}.role")
    content = message.get("content")
    if isinstance(content, list):
        _check_content_parts(content, f"{where}.content")
    elif content is None:
        if role != "assistant":
            raise RequestInvalid(f"{where}.content is required.", f"{where}.content")
    elif not isinstance(content, str):
        raise RequestInvalid(
            f"{where}.content must be a string or an array of parts.", f"{where}.content"
        )
    _require_str(message, "name", where, required=False)
    _require_str(message, "tool_call_id", where, required=role == "tool")
    tool_calls = message.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise RequestInvalid(f"{where}.tool_calls must be an array.", f"{where}.tool_calls")
        for k, call in enumerate(tool_calls):
            at = f"{where}.tool_calls.[{k}]"
            _require_object(call, at)
            _require_str(call, "id", at)
            _require_str(call, "type", at, required=False)
            _check_function_call(call.get("function"), f"{at}.function")
    if message.get("function_call") is not None:
        _check_function_call(message["function_call"], f"{where}.function_call")


def _check_function(function: Any, where: str) -> None:
    """A function tool's definition."""
    _require_object(function, where)
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise RequestInvalid(f"'{where}.name' must be a non-empty string.", f"{where}.name")
    _require_str(function, "description", where, required=False)
    if function.get("parameters") is not None:
        _require_object(function["parameters"], f"{where}.parameters")
    strict = function.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise RequestInvalid(f"'{where}.strict' must be a boolean.", f"{where}.strict")


def _check_tools(body: dict) -> None:
    for j, tool in enumerate(body.get("tools") or ()):
        at = f"tools.[{j}]"
        _require_object(tool, at)
        kind = tool.get("type", "function")
        if not isinstance(kind, str):
            raise RequestInvalid(f"'{at}.type' must be a string.", f"{at}.type")
        if kind == "function":
            _check_function(tool.get("function"), f"{at}.function")
    for j, function in enumerate(body.get("functions") or ()):
        _check_function(function, f"functions.[{j}]")
    for field in ("tool_choice", "function_call"):
        choice = body.get(field)
        if choice is not None and not _tool_choice_ok(field, choice):
            raise RequestInvalid(
                f"'{field}' must be 'none', 'auto', 'required' or name a function.", field
            )


def _tool_choice_ok(field: str, choice: str | dict) -> bool:
    if isinstance(choice, str):
        return choice in _TOOL_CHOICES
    if field == "function_call":  # legacy: {"name": "f"}
        return isinstance(choice.get("name"), str)
    if choice.get("type") == "function":
        function = choice.get("function")
        return isinstance(function, dict) and isinstance(function.get("name"), str)
    return isinstance(choice.get("type"), str)  # newer kinds (allowed_tools, custom): relayed


def _check_options(body: dict) -> None:
    stop = body.get("stop")
    if isinstance(stop, list) and not all(isinstance(s, str) for s in stop):
        raise RequestInvalid("'stop' must be a string or an array of strings.", "stop")
    options = body.get("stream_options")
    if options is not None:
        if body.get("stream") is not True:
            raise RequestInvalid(
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                "stream_options",
            )
        if not isinstance(options.get("include_usage", False), bool):
            raise RequestInvalid(
                "'stream_options.include_usage' must be a boolean.", "stream_options.include_usage"
            )
    response_format = body.get("response_format")
    if response_format is not None:
        _require_str(response_format, "type", "response_format")
        if response_format["type"] == "json_schema":
            schema = _require_object(
                response_format.get("json_schema"), "response_format.json_schema"
            )
            _require_str(schema, "name", "response_format.json_schema")
    for field in ("metadata", "logit_bias"):
        mapping = body.get(field)
        if mapping is None:
            continue
        kinds = (str,) if field == "metadata" else (int, float)
        if not all(_type_ok(v, kinds) for v in mapping.values()):
            what = "strings" if field == "metadata" else "numbers"
            raise RequestInvalid(f"The values of '{field}' must be {what}.", field)


def validate_chat_request(body: Any) -> None:
    """Reject what every backend would reject anyway, with OpenAI's `param` naming the field.

    Every field the gateway reads (to estimate, translate, meter or echo) is type-checked
    here, nested ones included, so nothing after this sees a value of the wrong JSON type;
    everything else is passed through untouched: backends differ in what they accept.
    """
    _require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestInvalid("'messages' must be a non-empty array.", "messages")
    for i, message in enumerate(messages):
        _check_message(message, f"messages.[{i}]")
    check_fields(body, _OPTIONAL_TYPES, _RANGES)
    # (no upper bound: an absurd max_tokens is the limits' to refuse, as a 429)
    for field in ("max_tokens", "max_completion_tokens"):
        value = body.get(field)
        if value is not None and value < (1 if field != "max_tokens" else 0):
            raise RequestInvalid(f"'{field}' must be positive.", field)
    _check_tools(body)
    _check_options(body)


def drop_message_nulls(messages: list[Any]) -> None:
    """Null message fields made portable, in place: an absent field instead of a null
    one, and "" for null content. The SDKs send back the assistant message they got
    (``content: null`` beside tool_calls, ``tool_calls: null``), which llama-cpp-python's
    server refuses and Ollama refuses without tool calls."""
    for message in messages:
        if isinstance(message, dict) and None in message.values():
            for key in [k for k, v in message.items() if v is None]:
                if key == "content":
                    message[key] = ""
                else:
                    del message[key]


def _text_bytes(content: Any) -> int:
    if isinstance(content, str):
        return len(content.encode())
    if isinstance(content, list):
        total = 0
        for part in content:
            if isinstance(part, dict):
                if isinstance(part.get("text"), str):
                    total += len(part["text"].encode())
                elif part.get("type") in ("image_url", "input_audio", "file"):
                    total += 85 * 4  # a low-detail image costs ~85 tokens
        return total
    return 0


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """Documented estimator used when an upstream reports no usage:
    ceil(UTF-8 bytes of text / 4) + 4 tokens per message + tool schema bytes / 4."""
    total_bytes = 0
    messages = body.get("messages") or []
    for message in messages:
        if isinstance(message, dict):
            total_bytes += _text_bytes(message.get("content"))
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict):
                    total_bytes += len(orjson.dumps(call))
    if body.get("tools"):
        total_bytes += len(orjson.dumps(body["tools"]))
    return -(-total_bytes // 4) + 4 * len(messages) + 3


# Request fields a server may render into the prompt besides the messages.
_PROMPT_FIELDS = ("tools", "functions", "tool_choice", "response_format")


def _part_bound(part: Any, bounds: TokenBounds) -> int:
    if not isinstance(part, dict):
        return json_bytes(part)
    kind = part.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        return text_bytes(part["text"])
    if kind in ("image_url", "input_image", "image"):
        return bounds.per_image
    # Audio, files and unknown parts: every byte they carry, plus a media allowance.
    return json_bytes(part) + bounds.per_image


def chat_prompt_bound(body: dict[str, Any], bounds: TokenBounds) -> int:
    """An upper bound of a chat completion's prompt tokens (see protocol/bounds.py): the
    UTF-8 bytes of every message field but the role, images at ``per_image``, tool and
    format definitions by their JSON bytes, plus the template allowances."""
    total = bounds.per_request
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        total += bounds.per_message
        if not isinstance(message, dict):
            total += json_bytes(message)
            continue
        for name, value in message.items():
            if name == "role":
                continue
            if name == "content" and isinstance(value, list):
                total += sum(_part_bound(part, bounds) for part in value)
            else:
                total += json_bytes(value)
    for name in _PROMPT_FIELDS:
        total += json_bytes(body.get(name))
    return total


def embeddings_prompt_bound(texts: list[str], token_ids: int) -> int:
    """An upper bound of an embeddings request's tokens: each text's UTF-8 bytes plus two
    special tokens (BERT's [CLS]/[SEP], a BOS/EOS pair), and the pre-tokenised ids as
    given (servers embed them as they are)."""
    return sum(text_bytes(t) + 2 for t in texts) + token_ids


def chat_answer_text(answer: dict[str, Any]) -> str:
    """The text content of a chat completion's choices (for a completion estimate)."""
    parts = []
    for choice in answer.get("choices") or ():
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


def estimate_text_tokens(text: str) -> int:
    return -(-len(text.encode()) // 4)


MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on the items of one request


def validate_embeddings_request(body: Any) -> tuple[list[str], int]:
    """The texts of an embeddings request and its count of pre-tokenised tokens.

    ``input`` is a string, an array of strings, an array of token ids or an array of such
    arrays, none of them empty (OpenAI's rules)."""
    _require_model(body)
    value = body.get("input")
    shape = (
        "'input' must be a non-empty string, an array of strings, an array of token ids "
        "or an array of arrays of token ids."
    )
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise RequestInvalid(shape, "input")
    if len(items) > MAX_EMBEDDING_INPUTS:
        raise RequestInvalid(f"'input' may have at most {MAX_EMBEDDING_INPUTS} items.", "input")
    texts: list[str] = []
    tokens = 0
    if _token_ids(items):
        tokens = len(items)
    else:
        for item in items:
            if isinstance(item, str) and item:
                texts.append(item)
            elif isinstance(item, list) and item and _token_ids(item):
                tokens += len(item)
            else:
                raise RequestInvalid(shape, "input")
    encoding = body.get("encoding_format")
    if encoding is not None and encoding not in ("float", "base64"):
        raise RequestInvalid("'encoding_format' must be 'float' or 'base64'.", "encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (type(dimensions) is not int or not 1 <= dimensions < 2**31):
        raise RequestInvalid("'dimensions' must be a positive integer.", "dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise RequestInvalid("'user' must be a string.", "user")
    return texts, tokens


def _token_ids(items: list) -> bool:
    # (a token id is an index into a vocabulary: never negative, never near 2**32)
    return all(type(t) is int and 0 <= t < 2**32 for t in items)


def chat_stream_payload(payload: bytes) -> dict[str, Any] | None:
    """One upstream chat-completions SSE payload as a chunk, or None for the keep-alives
    and junk some servers emit. ``[DONE]`` is the caller's to check first."""
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    return chunk if isinstance(chunk, dict) else None


def chat_stream_error(chunk: dict[str, Any]) -> dict[str, Any] | None:
    """The upstream's in-band error object, when ``chunk`` is one (``{"error": …}``)."""
    if "error" in chunk and "choices" not in chunk:
        found = chunk["error"]
        return found if isinstance(found, dict) else {"message": str(found)}
    return None


class UpstreamChatChunks:
    """The chunks of an upstream chat-completions stream, read from raw bytes (b"" once
    it closed): keep-alives and junk are skipped; ``[DONE]`` or an in-band error ends it
    (``ended``, ``error``), and nothing is read after that. The translating converters
    read their upstream through one of these."""

    __slots__ = ("_parser", "ended", "error")

    def __init__(self) -> None:
        self._parser = SSEParser()
        self.ended = False
        self.error: dict[str, Any] | None = None

    def read(self, data: bytes) -> Iterator[dict[str, Any]]:
        if self.ended:
            return
        for _event, payload in self._parser.feed(data) if data else self._parser.flush():
            if payload.startswith(b"[DONE]"):
                self.ended = True
                return
            chunk = chat_stream_payload(payload)
            if chunk is None:
                continue
            error = chat_stream_error(chunk)
            if error is not None:
                self.error = error
                self.ended = True
                return
            yield chunk


def stream_error_chunk(message: str, error_type: str = "server_error") -> bytes:
    """The error event that ends an OpenAI-surface stream (nothing follows it)."""
    return data_chunk(
        {"error": {"message": message, "type": error_type, "param": None, "code": None}}
    )


class ChatStreamRelay:
    """Rewrites an upstream chat-completions stream for the client, event by event.

    Shows the public model name, captures usage (forced upstream for metering) and hides
    it when the client did not ask, strips repeated tool-call id/name/type that some
    backends resend (the SDK helpers would concatenate them), and counts delivered
    content chunks as the completion estimate should the upstream report no usage.
    A stream converter (see the package header): ``[DONE]`` sets ``done`` and is sent
    by ``finish()``; an upstream error sets ``error`` and is answered by ``fail()``.
    """

    __slots__ = (
        "public_model",
        "client_wants_usage",
        "usage",
        "service_tier",
        "content_chunks",
        "finish_reasons",
        "done",
        "error",
        "chunk_id",
        "created",
        "_seen_tool_calls",
        "_first_role_sent",
        "stream_id",
        "_parser",
        "_closed",
        "cost_of",
        "_usage_chunk",
        "_model_to",
    )

    def __init__(
        self, public_model: str, client_wants_usage: bool, stream_id: str = "chatcmpl-stream"
    ) -> None:
        self.cost_of: Callable[[], str] | None = None
        self._usage_chunk: dict[str, Any] | None = None  # held for finish() to price
        self.public_model = public_model
        self.stream_id = stream_id  # for the chunks we add when the upstream named none
        self.client_wants_usage = client_wants_usage
        self.usage: dict[str, Any] | None = None
        self.service_tier: object = None  # the usage chunk's (unchecked: usage.tier)
        self.content_chunks = 0
        self.finish_reasons: dict[int, str] = {}
        self.done = False
        self.error: dict[str, Any] | None = None
        self._model_to = b'"model":' + orjson.dumps(public_model)  # the bytes rewrite's
        # The stream's id and time, for the chunks added to it (one id per stream).
        self.chunk_id: str | None = None
        self.created: int | None = None
        self._seen_tool_calls: set[tuple[int, int]] = set()
        self._first_role_sent: set[int] = set()
        self._parser = SSEParser()
        self._closed = False

    @property
    def complete(self) -> bool:
        """The upstream ended its answer ([DONE], or a finish_reason before it closed)."""
        return self.error is None and (self.done or bool(self.finish_reasons))

    def start(self) -> bytes:
        return b""

    def feed(self, data: bytes) -> bytes:
        """Raw upstream bytes in (b"" once it closed), the bytes to send to the client."""
        if self.done or self._closed:
            return b""
        if self.chunk_id is not None and self._parser.idle():
            piece = self._plain_delta(data)
            if piece is not None:
                return piece
        out = b""
        for _event, payload in self._parser.feed(data) if data else self._parser.flush():
            piece = self._payload(payload)
            if piece:
                out += piece
            elif self.done:
                break
        return out

    def _plain_delta(self, data: bytes) -> bytes | None:
        """The client's bytes of an upstream read that is exactly one chunk of one
        choice's text delta (no role, tool call, reasoning, usage or end) in the compact
        shape servers write, rewritten without a parse: the model named ours, ``usage:
        null`` added when the client asked for usage. None: it takes ``_payload``."""
        match = _PLAIN_DELTA.fullmatch(data)
        if match is None:
            return None
        head, tail, content = match.groups()
        if content:
            self.content_chunks += 1
        if self.client_wants_usage:
            return b"data: " + head + self._model_to + tail + b',"usage":null}\n\n'
        return b"data: " + head + self._model_to + tail + b"}\n\n"

    def _payload(self, data: bytes) -> bytes | None:
        if data.startswith(b"[DONE]"):
            self.done = True
            return None
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return None  # keep-alives and junk some servers emit
        if not isinstance(chunk, dict):
            return None
        if "error" in chunk and "choices" not in chunk:
            error = chunk["error"]
            self.error = error if isinstance(error, dict) else {"message": str(error)}
            self.done = True
            return None
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
            self.service_tier = chunk.get("service_tier")
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            choices = []
        usage_only = not choices and usage is not None and "prompt_filter_results" not in chunk
        if not self.client_wants_usage:
            if usage_only:
                return None  # the usage-only chunk the client did not ask for
            chunk.pop("usage", None)
        elif "usage" not in chunk:
            chunk["usage"] = None
        if "model" in chunk:
            chunk["model"] = self.public_model
        if usage_only and self.cost_of is not None and isinstance(usage, dict):
            self._usage_chunk = chunk  # sent by finish(), priced
            return None
        if self.chunk_id is None and isinstance(chunk.get("id"), str) and chunk["id"]:
            # (Azure's prompt-filter chunk has an empty id: the next one names the stream)
            self.chunk_id = chunk["id"]
            created = chunk.get("created")
            self.created = created if isinstance(created, int) else None
        for choice in choices:
            if isinstance(choice, dict):
                self._observe_choice(choice)
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def finish(self, estimated_usage: dict[str, Any] | None = None) -> bytes:
        """``[DONE]``, after a usage chunk when the client asked for usage and the
        upstream reported none (``estimated_usage``: what the gateway billed)."""
        if self._closed:
            return b""
        self._closed = True
        if self._usage_chunk is not None:
            self._usage_chunk["usage"]["cost"] = self.cost_of()
            return data_chunk(self._usage_chunk) + DONE_EVENT
        if self.client_wants_usage and self.usage is None and estimated_usage is not None:
            chunk_id, created = self.chunk_id or self.stream_id, self.created or int(time.time())
            if self.cost_of is not None:
                estimated_usage = {**estimated_usage, "cost": self.cost_of()}
            return self.usage_chunk(chunk_id, created, estimated_usage) + DONE_EVENT
        return DONE_EVENT

    def fail(self, message: str, error_type: str = "server_error") -> bytes:
        if self._closed:
            return b""
        self._closed = True
        held = data_chunk(self._usage_chunk) if self._usage_chunk is not None else b""
        return held + stream_error_chunk(message, error_type)

    def _observe_choice(self, choice: dict[str, Any]) -> None:
        index = choice.get("index", 0)
        delta = choice.get("delta")
        if isinstance(delta, dict):
            content = delta.get("content")
            counted = False
            if isinstance(content, str) and content:
                counted = True
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for call in tool_calls:
                    if not isinstance(call, dict):
                        continue
                    slot = (index, call.get("index", 0))
                    function = call.get("function")
                    if not isinstance(function, dict):
                        function = call["function"] = {}
                    if slot in self._seen_tool_calls:
                        call.pop("id", None)
                        call.pop("type", None)
                        function.pop("name", None)
                    else:
                        self._seen_tool_calls.add(slot)
                    if function.get("arguments"):
                        counted = True
            if delta.get("reasoning_content"):
                counted = True
            if "role" in delta:
                if index in self._first_role_sent:
                    delta.pop("role")
                else:
                    self._first_role_sent.add(index)
            if counted:
                self.content_chunks += 1
        reason = choice.get("finish_reason")
        if isinstance(reason, str):
            self.finish_reasons[index] = reason

    def usage_chunk(self, chunk_id: str, created: int, usage: dict[str, Any]) -> bytes:
        return data_chunk(
            {
                "id": chunk_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.public_model,
                "choices": [],
                "usage": usage,
            }
        )


# One SSE event, one chunk of one choice's text delta, as vLLM, llama.cpp and OpenAI write
# it (compact JSON, this key order); only other top-level fields of plain values may
# follow (never usage). Groups: the head before the model, what follows the model, the
# content. A string is ``"…"`` without a bare quote, so nothing in one matches structure,
# and two events never fit one match.
_PLAIN_DELTA = re.compile(
    rb'data: (\{"id":"[^"\\\n\r]*","object":"chat\.completion\.chunk","created":\d+,)'
    rb'"model":"[^"\\\n\r]*"'
    rb'(,"choices":\[\{"index":\d+,"delta":\{"content":"((?:[^"\\\n\r]|\\.)*)"\}'
    rb'(?:,"logprobs":null)?,"finish_reason":null\}\]'
    rb'(?:,"(?!usage")[a-z_]+":(?:null|-?\d+|"[^"\\\n\r]*"))*)\}\n\n'
)


def data_chunk(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"
