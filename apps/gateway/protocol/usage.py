"""Token usage: the one place that reads and writes the protocols' usage objects.

Tollgate counts tokens in these classes, in OpenAI's convention (cached tokens inside the
prompt, and again in ``cached``; reasoning inside the completion, and again in
``reasoning``):

    prompt          every input token: uncached + cache writes + cache reads
    cached          cache reads (priced at the cached-input rate)
    cache_write     cache writes (priced as ordinary input) = cache_write_5m + cache_write_1h
    cache_write_5m  cache writes with the 5-minute TTL (Anthropic's default)
    cache_write_1h  cache writes with the 1-hour TTL
    completion      every output token
    reasoning       the output tokens spent thinking (0: none reported)

and the upstream's ``service_tier`` (None: not said, or not a short plain word).

OpenAI chat: prompt = ``prompt_tokens``, cached = ``prompt_tokens_details.cached_tokens``,
reasoning = ``completion_tokens_details.reasoning_tokens``, service_tier = the answer's
top-level ``service_tier`` (the caller passes it: it is not in the usage object).
OpenAI Responses: the same from ``input_tokens``, ``output_tokens``,
``input_tokens_details.cached_tokens`` and ``output_tokens_details.reasoning_tokens``.
Anthropic: prompt = ``input_tokens + cache_creation_input_tokens + cache_read_input_tokens``,
cached = ``cache_read_input_tokens``, cache_write = ``cache_creation_input_tokens``, split
by TTL as ``cache_creation.ephemeral_1h_input_tokens`` (the rest, and all of it when the
object is absent, is 5m), service_tier = ``usage.service_tier``. Anthropic counts thinking
inside ``output_tokens`` and does not report it apart, so its reasoning is 0.
vLLM and llama.cpp answer in OpenAI's chat shape (without the details they lack).

Upstreams are not trusted: a count that is not a non-negative JSON integer (a string, a
float, a bool, a negative number) is missing, and none exceeds ``MAX_TOKENS`` (what the
ledger can store), so whatever an upstream says maps to ints that are safe to add, price
and store; a usage object without its prompt or completion count is no usage (the
gateway estimates instead).
"""

import re
from typing import Any, NamedTuple

# The ledger's token columns are 32-bit; no real request comes near it.
MAX_TOKENS = 2**31 - 1


class Usage(NamedTuple):
    """Immutable; a NamedTuple rather than a frozen dataclass because one is built per
    request and a frozen dataclass's __init__ costs several times more."""

    prompt: int
    completion: int
    cached: int = 0
    cache_write: int = 0
    # False: the gateway's estimate (the upstream reported no usable usage).
    reported: bool = True
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0
    service_tier: str | None = None


# Stored and shown as is: a short word, nothing an upstream could smuggle markup or a
# megabyte into.
_TIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")


def tier(value: Any) -> str | None:
    """An upstream's service_tier, or None when it is not a short plain word."""
    if type(value) is str and _TIER.fullmatch(value):
        return value
    return None


def count(value: Any) -> int | None:
    """A token count from an upstream's JSON value; None when it is not one."""
    if type(value) is not int or value < 0:  # bool is an int subclass: not a count
        return None
    return value if value <= MAX_TOKENS else MAX_TOKENS


def _is_count(value: Any) -> bool:
    return type(value) is int and 0 <= value <= MAX_TOKENS


def openai_counts(usage: Any) -> tuple[int | None, int | None, int | None]:
    """(prompt, completion, cached) of an OpenAI usage object, None for each one missing
    (streams report them piecemeal)."""
    if not isinstance(usage, dict):
        return None, None, None
    details = usage.get("prompt_tokens_details")
    cached = count(details.get("cached_tokens")) if isinstance(details, dict) else None
    return count(usage.get("prompt_tokens")), count(usage.get("completion_tokens")), cached


def _detail(details: Any, key: str) -> int:
    return (count(details.get(key)) or 0) if isinstance(details, dict) else 0


def from_openai(usage: Any, service_tier: Any = None) -> Usage | None:
    """An OpenAI (chat, completions) usage object, or None if unusable; ``service_tier``
    is the answer's (top-level, beside ``usage``)."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not (_is_count(prompt) and _is_count(completion)):  # the common case, inline
        prompt, completion, _ = openai_counts(usage)
        if prompt is None or completion is None:
            return None
    return _openai_usage(
        prompt,
        completion,
        usage.get("prompt_tokens_details"),
        usage.get("completion_tokens_details"),
        service_tier,
    )


def from_responses(usage: Any, service_tier: Any = None) -> Usage | None:
    """An OpenAI Responses usage object, or None if unusable."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = count(usage.get("input_tokens")), count(usage.get("output_tokens"))
    if prompt is None or completion is None:
        return None
    return _openai_usage(
        prompt,
        completion,
        usage.get("input_tokens_details"),
        usage.get("output_tokens_details"),
        service_tier,
    )


def _openai_usage(
    prompt: int, completion: int, input_details: Any, output_details: Any, service_tier: Any
) -> Usage:
    if input_details is None and output_details is None and service_tier is None:
        return Usage(prompt, completion)  # vLLM, llama.cpp: nothing more to read
    # Cached tokens stay as said (pricing bounds them); reasoning, priced nowhere yet, is
    # kept within the completion it is part of.
    cached = _detail(input_details, "cached_tokens")
    reasoning = min(_detail(output_details, "reasoning_tokens"), completion)
    return Usage(prompt, completion, cached, reasoning=reasoning, service_tier=tier(service_tier))


def anthropic_counts(usage: Any) -> tuple[int | None, int | None, int | None, int | None]:
    """(input, output, cache write, cache read) of an Anthropic usage object, None for each
    one missing (a stream's message_delta repeats only some)."""
    if not isinstance(usage, dict):
        return None, None, None, None
    return (
        count(usage.get("input_tokens")),
        count(usage.get("output_tokens")),
        count(usage.get("cache_creation_input_tokens")),
        count(usage.get("cache_read_input_tokens")),
    )


def anthropic_prompt(input_tokens: int, cache_write: int | None, cache_read: int | None) -> int:
    """The prompt (every input token) of Anthropic's three input counts."""
    return min(input_tokens + (cache_write or 0) + (cache_read or 0), MAX_TOKENS)


def from_anthropic_counts(
    input_tokens: int,
    output_tokens: int,
    cache_write: int | None,
    cache_read: int | None,
    cache_creation: Any = None,
    service_tier: Any = None,
) -> Usage:
    """``cache_creation`` is Anthropic's object splitting the cache writes by TTL."""
    write_5m, write_1h = anthropic_cache_writes(cache_write, cache_creation)
    return Usage(
        anthropic_prompt(input_tokens, cache_write, cache_read),
        output_tokens,
        cache_read or 0,
        cache_write or 0,
        cache_write_5m=write_5m,
        cache_write_1h=write_1h,
        service_tier=tier(service_tier),
    )


def anthropic_cache_writes(cache_write: int | None, cache_creation: Any) -> tuple[int, int]:
    """(5m, 1h) cache writes: the 1h count of the ``cache_creation`` object, the rest of
    ``cache_creation_input_tokens`` 5m (the only TTL before the object existed), so the
    two always add up to the total the prompt counts."""
    write = cache_write or 0
    write_1h = min(_detail(cache_creation, "ephemeral_1h_input_tokens"), write)
    return write - write_1h, write_1h


def openai_reasoning(usage: Any, completion: int | None) -> int:
    """The reasoning tokens of an OpenAI chat usage object (within its completion)."""
    if not isinstance(usage, dict):
        return 0
    reasoning = _detail(usage.get("completion_tokens_details"), "reasoning_tokens")
    return reasoning if completion is None else min(reasoning, completion)


def from_anthropic(usage: Any) -> Usage | None:
    """An Anthropic usage object, or None without input_tokens and output_tokens."""
    input_tokens, output_tokens, write, read = anthropic_counts(usage)
    if input_tokens is None or output_tokens is None:
        return None
    return from_anthropic_counts(
        input_tokens,
        output_tokens,
        write,
        read,
        usage.get("cache_creation"),
        usage.get("service_tier"),
    )


def to_openai(usage: Usage) -> dict[str, Any]:
    """The OpenAI chat usage object (shown to an OpenAI client of an Anthropic upstream)."""
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
    }


def to_anthropic(usage: Usage) -> dict[str, Any]:
    """The Anthropic usage object (shown to an Anthropic client of an OpenAI upstream):
    input_tokens are the prompt tokens neither read from nor written to the cache."""
    return {
        "input_tokens": max(usage.prompt - usage.cached - usage.cache_write, 0),
        "output_tokens": usage.completion,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cached,
    }


def to_responses(usage: Usage) -> dict[str, Any]:
    """The Responses API usage object."""
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {
            "cached_tokens": usage.cached,
            "cache_write_tokens": usage.cache_write,
        },
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.prompt + usage.completion,
    }
