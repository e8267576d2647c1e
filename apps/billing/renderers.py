"""JSON with exact money: a Decimal is written as a JSON number with all its digits (DRF's
default encoder would turn it into a float first)."""

import json
import re
import secrets
from decimal import Decimal
from typing import Any

from rest_framework.renderers import JSONRenderer

_NONCE = secrets.token_hex(8)
_MARK = re.compile(rf'"\\u0001{_NONCE}:(-?[0-9.]+)"')


def decimal_text(value: Decimal) -> str:
    """Plain notation, no exponent, no trailing zeros ("0.000123", "12", "0")."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _mark(value: Any) -> Any:
    if isinstance(value, Decimal):
        return f"\u0001{_NONCE}:{decimal_text(value)}"
    if isinstance(value, dict):
        return {k: _mark(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mark(v) for v in value]
    return value


class ExactJSONRenderer(JSONRenderer):
    def render(self, data, accepted_media_type=None, renderer_context=None) -> bytes:
        if data is None:
            return b""
        text = json.dumps(_mark(data), separators=(",", ":"), default=str)
        return _MARK.sub(r"\1", text).encode()
