"""Anthropic's Messages API (and servers that speak it)."""

from apps.gateway.backends.base import ANTHROPIC, BackendAdapter, register
from apps.gateway.protocol.anthropic import ANTHROPIC_ERROR_TYPES


class AnthropicAdapter(BackendAdapter):
    kind = "anthropic"
    label = "Anthropic Messages"
    speaks = ANTHROPIC
    apis = frozenset({"count_tokens"})

    def auth_headers(self, credential: str) -> dict[str, str]:
        return {"x-api-key": credential}

    def default_headers(self) -> dict[str, str]:
        # The version the gateway's translation is written against; a backend may pin
        # another in its extra headers.
        return {"anthropic-version": "2023-06-01"}

    def error_type(self, error: dict) -> str | None:
        kind = error.get("type")
        return kind if kind in ANTHROPIC_ERROR_TYPES else None


ADAPTER = register(AnthropicAdapter())
