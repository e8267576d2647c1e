"""The session key of a request, for affinity routing: which conversation it belongs to.

A model balanced by affinity names where its session key comes from (``affinity_key``):

``prompt_cache_key``
    the body's ``prompt_cache_key`` (OpenAI's field for exactly this: requests that
    share a prompt prefix say so);
``user``
    the body's ``user`` (Anthropic Messages: ``metadata.user_id``);
``header:<name>``
    a request header, e.g. ``header:x-session-id``;
``prefix``
    a hash of the system prompt and the first message after it: every turn of a
    conversation repeats them, and they are what an upstream's prefix cache holds.

A request without the named value (absent, empty, or not a string) falls back to
``prefix``; a request without messages either has no session key (None) and is balanced
by weight. The key is a 64-bit integer: a hash, never the value itself, so it can be
kept and compared without holding a caller's identifiers. Only a bounded head of each
value is hashed, so a hostile megabyte ``prompt_cache_key`` costs what a short one does.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

import orjson

PROMPT_CACHE_KEY = "prompt_cache_key"
USER = "user"
HEADER = "header"
PREFIX = "prefix"
AFFINITY_KEY_CHOICES = ("prompt_cache_key", "user", "header:<name>", "prefix")
DEFAULT_AFFINITY_KEY = PROMPT_CACHE_KEY

# A value's head that is hashed: distinct values sharing this much share a deployment,
# which costs nothing but a little balance.
MAX_KEY_BYTES = 1024
# The prefix's head: a system prompt and first message longer than this are told apart
# by their first 64 KiB.
MAX_PREFIX_BYTES = 64 * 1024

_HEADER_NAME = re.compile(r"\A[a-z0-9!#$%&'*+.^_`|~-]{1,64}\Z")
_SYSTEM_ROLES = frozenset({"system", "developer"})


class AffinityKeyInvalid(ValueError):
    """An ``affinity_key`` setting outside the vocabulary; the message says what is allowed."""


@dataclass(frozen=True, slots=True)
class AffinitySource:
    kind: str  # PROMPT_CACHE_KEY | USER | HEADER | PREFIX
    header: bytes = b""  # the header's lower-case name, for HEADER

    @property
    def setting(self) -> str:
        return f"header:{self.header.decode()}" if self.kind == HEADER else self.kind


def affinity_source_parse(value: Any) -> AffinitySource:
    """The source an ``affinity_key`` setting names; raises AffinityKeyInvalid."""
    if not isinstance(value, str):
        raise AffinityKeyInvalid(f"must be one of {', '.join(AFFINITY_KEY_CHOICES)}")
    if value in (PROMPT_CACHE_KEY, USER, PREFIX):
        return AffinitySource(value)
    kind, colon, name = value.partition(":")
    if kind == HEADER and colon:
        name = name.strip().lower()
        if not _HEADER_NAME.match(name):
            raise AffinityKeyInvalid(
                "header:<name> needs a header name (letters, digits, '-', at most 64), "
                "e.g. header:x-session-id"
            )
        return AffinitySource(HEADER, name.encode())
    raise AffinityKeyInvalid(f"must be one of {', '.join(AFFINITY_KEY_CHOICES)}")


def _digest(tag: bytes, data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=tag).digest(), "big")


def _text_value(value: Any) -> bytes | None:
    if type(value) is not str or not value:
        return None
    return value[:MAX_KEY_BYTES].encode("utf-8", "surrogatepass")[:MAX_KEY_BYTES]


def _piece(value: Any) -> bytes:
    if type(value) is str:
        return value[:MAX_PREFIX_BYTES].encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return b""


def prefix_key(body: dict) -> int | None:
    """The hash of the system prompt (Chat: leading system/developer messages; Messages:
    ``system``; Responses: ``instructions``) and the first message after it; None when
    the body has no message."""
    parts: list[bytes] = []
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
        if type(messages) is str:
            messages = [messages]
    system = body.get("system")
    if system is None:
        system = body.get("instructions")
    if system is not None:
        parts.append(_piece(system))
    if type(messages) is not list:
        return None
    for message in messages:
        if type(message) is dict and message.get("role") in _SYSTEM_ROLES:
            parts.append(_piece(message.get("content")))
            continue
        first = message
        break
    else:
        return None
    parts.append(_piece(first.get("content") if type(first) is dict else first))
    data = b"\x00".join(parts)[:MAX_PREFIX_BYTES]
    return _digest(b"prefix", data)


def session_key(source: AffinitySource, body: dict, headers: dict[bytes, bytes]) -> int | None:
    """The request's session key under ``source`` (falling back to the prefix), or None.

    ``headers``: the request's, names lower-case (as ASGI gives them)."""
    kind = source.kind
    value: bytes | None = None
    if kind == PROMPT_CACHE_KEY:
        value = _text_value(body.get("prompt_cache_key"))
    elif kind == USER:
        value = _text_value(body.get("user"))
        if value is None:
            metadata = body.get("metadata")
            if type(metadata) is dict:
                value = _text_value(metadata.get("user_id"))
    elif kind == HEADER:
        raw = headers.get(source.header)
        if raw:
            value = raw[:MAX_KEY_BYTES]
    if value is not None:
        return _digest(kind.encode()[:16], value)
    return prefix_key(body)
