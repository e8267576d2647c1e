"""The /v1 gateway: the metered hot path, a bare ASGI app outside Django's request cycle.

Modules, lowest first; a module imports only from those above it (and from other
Django apps), never from one below it, so there is no import circle
(tests/gateway/test_layout.py checks it):

``protocol/``
    Plain Python, sans-IO: OpenAI and Anthropic shapes, validation, SSE, translation
    and stream converters. Imports nothing from Django or the rest of the gateway.
``backends/``
    One adapter per backend kind (auth headers, the protocol it speaks, the APIs it
    offers, its error types) and the registry ``{kind: adapter}``; plain Python too
    (the catalog's ``Backend.kind`` takes its choices from it). Nothing else compares
    kind names: a new kind is one new module here.
``errors``
    One class per error (status, OpenAI type/code, Anthropic type, ledger outcome,
    headers) and one renderer per protocol.
``exchange``
    The ASGI plumbing of one request/response (body, headers, stream, keep-alive).
``caches``, ``metrics``, ``limits``, ``metering``, ``estimates``
    The in-process caches of keys and catalog, the metrics, limits as clients see
    them, a call's ``Usage`` written into its usage event (the documented
    estimates where the upstream reported none), and the per-model drift of prompt
    estimates that scales TPM reservations.
``upstream/``
    ``client``: the pooled HTTP client, the only module that imports aiohttp (its
    exceptions mapped once into ``TransportError``s). ``bodies``: request bodies per
    deployment, answers read and checked. ``balancing``: the order a request tries a
    model's deployments in, per strategy (weighted, least-busy, latency, affinity), and
    the per-process board of in-flight counts and TTFT averages it shares through
    Redis. ``failover``: ordered attempts, retries before the first byte, upstream
    answers mapped to errors. ``health``: the per-deployment circuit breakers, shared
    through Redis and read from a local view refreshed twice a second. ``fallback``: a
    model's fallback models, tried when its deployments all failed or its window was too
    small.
``state``
    The per-process state: caches, limiter, upstream client, Redis, estimate drift.
``call``, ``filtering``
    ``MeteredCall`` (one usage event per authenticated request), authentication,
    model resolution, request parsing; content filtering of one call.
``endpoints/``
    One module per route family: chat (with ``chat_anthropic`` for Anthropic-native
    deployments), messages, count_tokens, responses, embeddings, models, key (a key's
    own standing); ``stream``, the one driver of every stream converter, below them all.
``app``
    ``GatewayApp``: the route table and the dispatch, nothing else.
"""
