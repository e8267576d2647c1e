"""The interface every backend kind implements, and the registry {kind: adapter}.

Plain Python, no Django: the catalog's model field takes its choices from here.
"""

from typing import ClassVar

# The wire protocols the gateway itself implements, front door and upstream: a backend
# speaks one of them natively; the gateway translates to and from the other.
OPENAI = "openai"
ANTHROPIC = "anthropic"
PROTOCOLS = (OPENAI, ANTHROPIC)
# The APIs beyond chat the gateway implements for a backend of each protocol (the
# endpoints build the request in that protocol's shape).
PROTOCOL_APIS = {
    OPENAI: frozenset({"embeddings", "responses", "tokenize"}),
    ANTHROPIC: frozenset({"count_tokens"}),
}

MAX_KIND_LENGTH = 16  # Backend.kind's column


class UnknownBackendKind(ValueError):
    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown backend kind {kind!r}: must be one of {backend_kinds()}")
        self.kind = kind


class BackendAdapter:
    """One kind of upstream server: what the gateway must know to talk to it.

    The endpoints ask the deployment's adapter, never compare kind names, so a kind not
    registered here cannot be mistaken for another.
    """

    kind: ClassVar[str]
    label: ClassVar[str]
    # The protocol its API is (``OPENAI`` or ``ANTHROPIC``): it decides the request the
    # endpoints build, the answer and stream they parse, and whether the client's
    # protocol-specific headers (anthropic-beta) are passed on.
    speaks: ClassVar[str]
    # The APIs it offers besides its protocol's chat (see ``offers``).
    apis: ClassVar[frozenset[str]] = frozenset()

    def auth_headers(self, credential: str) -> dict[str, str]:
        """The headers that carry the backend's API key."""
        raise NotImplementedError

    def default_headers(self) -> dict[str, str]:
        """Headers sent unless the backend's extra headers set them."""
        return {}

    def headers(self, credential: str, extra: dict[str, str]) -> dict[str, str]:
        """Every header of a request to this backend (computed once per catalog load,
        and per call made with a caller's own key). The auth headers replace any extra
        header of the same name, whatever its case."""
        headers = {**self.default_headers(), **extra}
        if credential:
            auth = self.auth_headers(credential)
            replaced = {name.lower() for name in auth}
            headers = {n: v for n, v in headers.items() if n.lower() not in replaced}
            headers.update(auth)
        return headers

    def offers(self, api: str) -> bool:
        """Whether it serves ``api``: "embeddings", "responses", "tokenize" (vLLM's
        token count at the server root), "count_tokens" (Anthropic's)."""
        return api in self.apis

    def error_type(self, error: dict) -> str | None:
        """The Anthropic error type its refusal names (passed on to Anthropic clients),
        None when it names none the gateway can trust."""
        return None


ADAPTERS: dict[str, BackendAdapter] = {}


def register(adapter: BackendAdapter) -> BackendAdapter:
    """Add ``adapter`` under its kind (a module of this package does it on import)."""
    kind = getattr(adapter, "kind", "")
    if not kind or len(kind) > MAX_KIND_LENGTH:
        raise ValueError(f"a backend kind is 1 to {MAX_KIND_LENGTH} characters: {kind!r}")
    if adapter.speaks not in PROTOCOLS:
        raise ValueError(f"backend kind {kind!r} speaks {adapter.speaks!r}, not one of {PROTOCOLS}")
    if not adapter.apis <= PROTOCOL_APIS[adapter.speaks]:
        extra = sorted(adapter.apis - PROTOCOL_APIS[adapter.speaks])
        raise ValueError(f"backend kind {kind!r} cannot offer {extra} over {adapter.speaks}")
    if ADAPTERS.get(kind, adapter) is not adapter:
        raise ValueError(f"backend kind {kind!r} is registered twice")
    ADAPTERS[kind] = adapter
    return adapter


def adapter_for(kind: str) -> BackendAdapter:
    adapter = ADAPTERS.get(kind)
    if adapter is None:
        raise UnknownBackendKind(kind)
    return adapter


def backend_kinds() -> tuple[str, ...]:
    return tuple(ADAPTERS)


def backend_kind_choices() -> list[tuple[str, str]]:
    """(kind, label) pairs: the choices of ``Backend.kind``, its form and serializer."""
    return [(kind, adapter.label) for kind, adapter in ADAPTERS.items()]
