"""A request's token counts on its usage event: the upstream's usage when it reported
one (mapped by ``protocol.usage``), else the gateway's estimates, flagged
``tokens_estimated`` (README "Token counts").

The estimates themselves are the protocols' (``estimate_prompt_tokens``,
``estimate_message_tokens``, ``estimate_text_tokens``, the content chunks delivered); this
module decides when they replace reported counts. An estimate is given as an int or, when
computing it costs CPU the common case does not need, as a function of no arguments.
"""

from collections.abc import Callable

from apps.gateway.protocol.openai import estimate_prompt_tokens
from apps.gateway.protocol.usage import Usage, count, from_openai, tier
from apps.ledger.events import UsageEvent

Estimate = int | Callable[[], int]


def _value(estimate: Estimate) -> int:
    return estimate if isinstance(estimate, int) else estimate()


def meter(
    event: UsageEvent, usage: Usage | None, prompt_estimate: Estimate, completion_estimate: Estimate
) -> Usage:
    """A complete answer: its reported usage, or (None) the estimates; returns what is
    billed."""
    if usage is None:
        usage = Usage(_value(prompt_estimate), _value(completion_estimate), reported=False)
    record(event, usage)
    return usage


def record(event: UsageEvent, usage: Usage) -> None:
    """Usage → the event's token fields."""
    event.prompt_tokens = usage.prompt
    event.completion_tokens = usage.completion
    event.cached_tokens = usage.cached
    event.cache_write_5m_tokens = usage.cache_write_5m
    event.cache_write_1h_tokens = usage.cache_write_1h
    event.reasoning_tokens = usage.reasoning
    event.service_tier = usage.service_tier
    if not usage.reported:
        event.tokens_estimated = True


def meter_chat(
    event: UsageEvent,
    body: dict,
    usage: object,
    completion_estimate: int,
    service_tier: object = None,
) -> None:
    """A chat completion (or stream) with an OpenAI usage object: the prompt estimate is
    the chat request's; ``service_tier`` is the answer's (beside its usage)."""
    mapped = from_openai(usage, service_tier)
    if mapped is None:
        mapped = Usage(estimate_prompt_tokens(body), completion_estimate, reported=False)
    record(event, mapped)


def meter_embedding(event: UsageEvent, usage: object, prompt_estimate: int) -> Usage:
    """An embeddings answer: its prompt tokens (there are no output tokens)."""
    prompt = count(usage.get("prompt_tokens")) if isinstance(usage, dict) else None
    mapped = Usage(prompt, 0) if prompt is not None else None
    return meter(event, mapped, prompt_estimate, 0)


def meter_stream(
    event: UsageEvent,
    *,
    prompt: int | None,
    cached: int | None,
    completion: int | None,
    prompt_estimate: Estimate,
    delivered: int,
    cache_writes: tuple[int, int] = (0, 0),
    reasoning: int = 0,
    service_tier: object = None,
) -> None:
    """A stream: the prompt as reported, else estimated; the completion as reported
    (``None`` when the stream did not end with the upstream's final usage, e.g. cut short
    by a client gone or an upstream failure), else the content events delivered.
    ``cache_writes`` (5m, 1h) and ``reasoning`` are the counts the upstream reported
    (``protocol.usage``), ``service_tier`` as it said it."""
    estimated = prompt is None or completion is None
    record(
        event,
        Usage(
            _value(prompt_estimate) if prompt is None else prompt,
            delivered if completion is None else completion,
            cached or 0,
            reported=not estimated,
            cache_write_5m=cache_writes[0],
            cache_write_1h=cache_writes[1],
            reasoning=0 if completion is None else min(reasoning, completion),
            service_tier=tier(service_tier),
        ),
    )
