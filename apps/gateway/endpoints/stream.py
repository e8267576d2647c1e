"""The one stream driver: an upstream's stream through a converter to the client.

Every streamed endpoint and backend kind runs ``relay_stream`` with its converter
(``apps.gateway.protocol``'s header: ``start``/``feed``/``finish``/``fail``, ``done``,
``complete``, ``error``, ``usage``) and says only what differs:

``settle``
    puts the usage event's tokens from the converter's state; run once when reading
    stops, also when the client left or the upstream failed (what was delivered is
    billed), before the end is framed, so the end may show what is billed;
``blocked_tail``
    the end of a stream the content policy blocked, in the client's protocol (needed
    with a filter only);
``after_finish``
    what a clean end changes in the bill (a translated end estimates output tokens);
``ping``, ``prologue``
    keep-alive events while the upstream is silent; the converter's prologue sent
    before any read.

The converter's ``cost_of`` is set here: its ``finish()`` shows the request's price in
the final usage it sends (``usage.cost``).

The bytes of the read that ended the stream, and the end itself, are held back in
``MeteredCall.tail`` until the usage event is durable.
"""

from collections.abc import AsyncIterable, Callable
from typing import Any

from django.conf import settings

from apps.gateway.call import MeteredCall
from apps.gateway.exchange import KeepAlive
from apps.gateway.filtering import stream_filter_done
from apps.gateway.upstream.client import ReadError
from apps.gateway.upstream.failover import scrub_for
from apps.ledger.events import UsageEvent

STREAM_ERROR_MESSAGE = "The upstream failed while streaming the response."
STREAM_ENDED_EARLY = "The upstream stream ended early."


def estimated_usage(event: UsageEvent) -> dict | None:
    """The settled counts in chat-completions shape when they are estimates (the
    upstream reported none), for a converter that shows the client what is billed."""
    if not event.tokens_estimated:
        return None
    return {
        "prompt_tokens": event.prompt_tokens,
        "completion_tokens": event.completion_tokens,
        "total_tokens": event.prompt_tokens + event.completion_tokens,
    }


async def relay_stream(
    call: MeteredCall,
    chunks: AsyncIterable[bytes],
    converter: Any,
    *,
    flt: Any,
    settle: Callable[[], None],
    blocked_tail: Callable[[], bytes] | None = None,
    after_finish: Callable[[], None] | None = None,
    ping: bytes | None = None,
    prologue: bool = False,
) -> None:
    """Relay ``chunks`` (the upstream's reads) through ``converter`` and the content
    filter ``flt`` (None = off); leaves the end in ``call.tail``."""
    exchange = call.exchange
    send = exchange.stream_send
    converter.cost_of = _cost_of(call, after_finish)
    failed = False
    held = b""
    keep_alive = None
    try:
        await exchange.start_stream()
        if prologue:
            await send(converter.start())
        if ping is not None:
            keep_alive = KeepAlive(exchange, ping, settings.GATEWAY_STREAM_PING_S)
        try:
            async for data in chunks:
                out = converter.feed(data)
                if converter.done:
                    held = out
                    break
                if not out:
                    continue
                if flt is not None:
                    out = await flt.feed(out)
                    if flt.blocked:
                        if out:
                            await send(out)
                        break
                    if not out:
                        continue
                await send(out)
                if keep_alive is not None:
                    keep_alive.touch()
            else:
                held = converter.feed(b"")
        except ReadError:
            failed = True
    finally:
        if keep_alive is not None:
            keep_alive.stop()
        settle()
    await end_stream(
        call,
        converter,
        flt=flt,
        failed=failed,
        held=held,
        blocked_tail=blocked_tail,
        after_finish=after_finish,
    )


def _cost_of(call: MeteredCall, after_finish: Callable[[], None] | None) -> Callable[[], str]:
    """What a converter's finish() shows as the request's price: the bill as it stands
    once the stream ended well (``after_finish``'s change included)."""

    def cost_of() -> str:
        if after_finish is not None:
            after_finish()
        return call.cost_text()

    return cost_of


async def end_stream(
    call: MeteredCall,
    converter: Any,
    *,
    flt: Any,
    failed: bool,
    held: bytes,
    blocked_tail: Callable[[], bytes] | None = None,
    after_finish: Callable[[], None] | None = None,
) -> None:
    """``call.tail``: the converter's clean end or its error event (a block's end
    instead when the content policy stopped the stream), through the filter, which
    checks what it still holds first. Usage is settled already."""
    blocked = flt is not None and flt.blocked
    if blocked:
        tail = b""
    elif failed or not converter.complete:
        said = scrub_for(call.deployment, str((converter.error or {}).get("message") or ""))
        call.event.outcome = "upstream_stream_error"
        call.event.status = 502
        tail = held + converter.fail(
            said or (STREAM_ERROR_MESSAGE if failed else STREAM_ENDED_EARLY)
        )
    else:
        tail = held + converter.finish(estimated_usage(call.event))
        if after_finish is not None:
            after_finish()
    if flt is not None:
        if not blocked:
            tail = await flt.finish(tail)
        if stream_filter_done(call, flt.guard, flt.delivered):
            tail += blocked_tail()
    call.tail = tail
