"""Who a request is for and what it is tagged with: the end user and the tags, read off
the request and checked (plain Python, no Django).

End user: the ``x-tollgate-end-user`` header, else the body's ``user`` (OpenAI chat,
responses, embeddings) or ``metadata.user_id`` (Anthropic messages). The id is the
tenant's data: a non-empty string of at most ``MAX_END_USER`` characters without control
characters; anything else is refused (a 400 naming the field), never cut or cleaned.

Tags: ``x-tollgate-tags: team:web,env:prod`` — at most ``MAX_TAGS`` ``key:value`` pairs
after merging with the key's default tags (the request's value wins for a key it names).
On the routes whose upstream takes no ``metadata`` object of tags, the body's
``metadata`` carries tags too (``metadata_tags``; which routes: ``METADATA_TAGS``), under
the same rules; the header wins over it for a key both name.
A key is 1 to 64 of ``[A-Za-z0-9_.-]`` starting with a letter, digit or ``_``; a value 1 to
128 of ``[A-Za-z0-9_.:/-]``. Nothing else (spaces, quotes, ``=``, ``+``, ``@``, ``|``,
control characters) is taken, so a tag can never be a spreadsheet formula's start except
``-``, which the CSV writer neutralises like every text cell.
"""

import functools
import hashlib
import re
from collections.abc import Mapping
from typing import Any

MAX_END_USER = 256
MAX_TAGS = 10
MAX_TAG_KEY = 64
MAX_TAG_VALUE = 128
# Longer than 10 tags of the longest kind can be: refused before any split.
MAX_TAGS_HEADER = MAX_TAGS * (MAX_TAG_KEY + MAX_TAG_VALUE + 2)

END_USER_HEADER = "x-tollgate-end-user"
TAGS_HEADER = "x-tollgate-tags"

_TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}")
_TAG_VALUE = re.compile(r"[A-Za-z0-9_.:/\-]{1,128}")
# C0, DEL and C1 controls, and the Unicode line/paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


class AttributionInvalid(ValueError):
    """A refused end user or tag; ``param`` names where it came from."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.message = message


def end_user_checked(value: Any, param: str) -> str:
    """The id as sent, or AttributionInvalid naming ``param``."""
    if not isinstance(value, str):
        raise AttributionInvalid(param, "must be a string")
    if not value:
        raise AttributionInvalid(param, "must not be empty")
    if len(value) > MAX_END_USER:
        raise AttributionInvalid(param, f"is longer than {MAX_END_USER} characters")
    if _CONTROL.search(value):
        raise AttributionInvalid(param, "must not contain control characters")
    return value


def openai_end_user(body: Any, header: bytes | None) -> str | None:
    """The end user of an OpenAI-shaped request (header, else body ``user``)."""
    sent = body.get("user") if type(body) is dict else None
    if sent is not None:
        sent = end_user_checked(sent, "user")
    if header is not None:
        return end_user_checked(_header_text(header), END_USER_HEADER)
    return sent


def anthropic_end_user(body: Any, header: bytes | None) -> str | None:
    """The end user of an Anthropic Messages request (header, else ``metadata.user_id``)."""
    sent = None
    metadata = body.get("metadata") if type(body) is dict else None
    if type(metadata) is dict and metadata.get("user_id") is not None:
        sent = end_user_checked(metadata["user_id"], "metadata.user_id")
    if header is not None:
        return end_user_checked(_header_text(header), END_USER_HEADER)
    return sent


@functools.lru_cache(maxsize=4096)
def end_user_hash(tenant_id: int, end_user: str) -> str:
    """What an end user's counters are keyed by: never the id itself, and never the same
    for two tenants' end users of one id."""
    return hashlib.sha256(f"{tenant_id}:{end_user}".encode()).hexdigest()[:32]


def _header_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise AttributionInvalid(END_USER_HEADER, "must be UTF-8") from None


def tag_checked(key: Any, value: Any, param: str) -> tuple[str, str]:
    if not isinstance(key, str) or not _TAG_KEY.fullmatch(key):
        raise AttributionInvalid(
            param,
            f"a tag key is 1 to {MAX_TAG_KEY} of A-Z a-z 0-9 _ . - (starting with a letter,"
            " digit or _)",
        )
    if not isinstance(value, str) or not _TAG_VALUE.fullmatch(value):
        raise AttributionInvalid(
            param, f"a tag value is 1 to {MAX_TAG_VALUE} of A-Z a-z 0-9 _ . : / -"
        )
    return key, value


# A client sends the same few tag sets again and again: parsed once each. The dict is
# shared between requests: nothing changes it (tags_merge makes a new one, or returns it).
@functools.lru_cache(maxsize=1024)
def tags_parse(header: bytes, param: str = TAGS_HEADER) -> dict[str, str]:
    """``key:value,key:value`` → ``{key: value}`` (a key named twice: refused; refusals
    are not cached)."""
    if len(header) > MAX_TAGS_HEADER:
        raise AttributionInvalid(param, f"at most {MAX_TAGS} tags of bounded length")
    try:
        text = header.decode("ascii")
    except UnicodeDecodeError:
        raise AttributionInvalid(param, "tags are ASCII") from None
    tags: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition(":")
        if not sep:
            raise AttributionInvalid(param, "each tag is key:value")
        key, value = tag_checked(key, value, param)
        if key in tags:
            raise AttributionInvalid(param, f"tag key '{key}' is given twice")
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise AttributionInvalid(param, f"at most {MAX_TAGS} tags")
    return tags


def tags_validate(value: Any, param: str = "default_tags") -> dict[str, str]:
    """Stored tags (a key's ``default_tags``): ``{key: value}`` under the header's rules."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise AttributionInvalid(param, "must map tag keys to values")
    if len(value) > MAX_TAGS:
        raise AttributionInvalid(param, f"at most {MAX_TAGS} tags")
    return dict(tag_checked(k, v, f"{param}.{k}") for k, v in value.items())


# Where a request body's ``metadata`` object is read as tags and taken off before the
# request is forwarded: the routes whose upstream would refuse it or takes only some of it.
#   "always"   – OpenAI embeddings take no ``metadata`` at all.
#   "unstored" – OpenAI chat completions take ``metadata`` only with ``store: true`` ("The
#                'metadata' parameter is only allowed when 'store' is enabled"): without
#                it, the object is Tollgate's tags; with it, the upstream's (stored
#                completions' filters, any text), forwarded untouched and not read.
#   "user_id"  – Anthropic Messages take ``metadata.user_id`` only (any other key: "Extra
#                inputs are not permitted"): every other key is a tag; user_id stays.
#   "never"    – the Responses API: ``metadata`` is the response object's own (echoed).
METADATA_TAGS = ("always", "unstored", "user_id", "never")
_ANTHROPIC_METADATA_KEEP = "user_id"


def metadata_tags(metadata: Any, *, keep: str | None = None) -> dict[str, str]:
    """The tags of a body's ``metadata`` object (``{key: value}`` under the header's rules;
    the entry ``keep`` is not a tag); AttributionInvalid names ``metadata.<key>``."""
    if metadata is None:
        return {}
    if type(metadata) is not dict:
        raise AttributionInvalid("metadata", "must be an object of tag keys to values")
    if len(metadata) > MAX_TAGS + (keep in metadata):
        raise AttributionInvalid("metadata", f"at most {MAX_TAGS} tags")
    tags: dict[str, str] = {}
    for key, value in metadata.items():
        if key == keep:
            continue
        if type(key) is str and type(value) is str and _TAG_KEY.fullmatch(key):
            if not _TAG_VALUE.fullmatch(value):
                tag_checked(key, value, f"metadata.{key}")  # raises, naming the entry
        else:  # a refused key is named by its object only (it may be anything)
            param = (
                f"metadata.{key}" if type(key) is str and _TAG_KEY.fullmatch(key) else "metadata"
            )
            tag_checked(key, value, param)
        tags[key] = value
    return tags


def take_metadata_tags(body: Any, where: str) -> dict[str, str]:
    """The tags the body's ``metadata`` carries on this kind of route (``METADATA_TAGS``),
    taken off ``body`` so that the upstream never sees them (Anthropic's ``user_id`` is
    left in place)."""
    if type(body) is not dict or "metadata" not in body or where == "never":
        return {}
    if where == "unstored" and body.get("store") is True:
        return {}
    if where == "user_id":
        metadata = body["metadata"]
        tags = metadata_tags(metadata, keep=_ANTHROPIC_METADATA_KEEP)
        if tags:
            if _ANTHROPIC_METADATA_KEEP in metadata:
                body["metadata"] = {_ANTHROPIC_METADATA_KEEP: metadata[_ANTHROPIC_METADATA_KEEP]}
            else:
                del body["metadata"]
        return tags
    return metadata_tags(body.pop("metadata"))


def request_tags(from_body: dict[str, str], from_header: dict[str, str]) -> dict[str, str]:
    """The body's ``metadata`` tags with the header's over them (the header wins for a key
    both name); at most MAX_TAGS in all."""
    if not from_body:
        return from_header
    merged = {**from_body, **from_header}
    if len(merged) > MAX_TAGS:
        raise AttributionInvalid("metadata", f"at most {MAX_TAGS} tags with {TAGS_HEADER}'s")
    return merged


def tags_merge(defaults: Mapping[str, str], sent: dict[str, str]) -> dict[str, str]:
    """The key's default tags with the request's over them; at most MAX_TAGS in all."""
    if not defaults:
        return sent
    merged = {**defaults, **sent}
    if len(merged) > MAX_TAGS:
        raise AttributionInvalid(
            TAGS_HEADER, f"at most {MAX_TAGS} tags with the key's {len(defaults)} default tags"
        )
    return merged
