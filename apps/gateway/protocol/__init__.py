"""OpenAI and Anthropic wire formats, sans-IO: plain Python, no Django, no sockets.

Modules, and the direction imports may go (left may import right, never back):

    anthropic_to_openai, openai_to_anthropic, responses    the translations
      -> openai, anthropic                                 each protocol's own shapes
      -> sse, bounds, stops, tool_arguments                shared pieces
    content_filter -> sse                                  the output policy's framing
    session                                                a request's session key

Stream converters
=================
One object per streamed answer turns what an upstream sends into what the client
gets. Every one of them (``ChatStreamRelay``, ``MessagesStreamRelay``,
``ChatStreamToMessagesStream``, ``MessagesStreamToChatStream``,
``ChatStreamToResponseEvents``) has the same interface, so one loop drives any:

    out = converter.start()                 # optional prologue, sent before any read
    for data in upstream_reads:             # raw bytes, cut anywhere
        out = converter.feed(data)          # -> bytes for the client (b"" = nothing)
        if converter.done: break            # the upstream said its last word
    else:
        out = converter.feed(b"")           # the upstream closed: flush what it left
    if transport_failed or not converter.complete:
        tail = converter.fail(message)      # the protocol's error event
    else:
        tail = converter.finish(estimated_usage)   # the protocol's clean end

and reads ``converter.usage`` (the upstream's usage object as last reported, in its
own shape; None until reported) and ``converter.error`` (the upstream's in-band error
object, or None) to settle the ledger.

Rule 1: a converter owns its whole stream state. It parses the upstream's bytes with
its own ``sse.SSEParser`` (the one SSE parser), decides when the upstream has ended
(``done``) and whether it ended well (``complete``), and frames every byte it emits.
The driver never parses, never frames, never inspects events.

Rule 2: a converter does no I/O and never raises on what an upstream sends: junk is
skipped, an in-band error sets ``error`` and ``done``. After ``finish()`` or ``fail()``
(or an upstream error the converter already answered in the client's protocol, as the
Anthropic ones do) every call returns ``b""``, so a driver may call ``fail()``
unconditionally on a broken stream and never sends two ends.

Rule 3: the price a client is shown is the bill. A converter that shows the final usage
calls ``converter.cost_of()`` (set by the driver; None = show none) in ``finish()``,
after the driver settled the usage, and puts that decimal string in the usage object
as ``cost``; a final usage the upstream sent earlier is held back until then (the pass-
through relays hold their last usage event), and ``fail()`` sends what it held as is.

``feed(b"")`` means end of input, as in h11's ``receive_data``: reads from an upstream
are never empty. ``finish(estimated_usage)``'s argument (chat-completions shape) is
what the gateway billed when the upstream reported no usage, for the converters that
show usage to the client; the others ignore it. ``fail(message, error_type)`` takes
the error type of the client's protocol, defaulting to the generic server error.

Pass-through converters (chat → chat, messages → messages) are the hot path: they
parse only what they must and relay the upstream's bytes when nothing changes.
"""
