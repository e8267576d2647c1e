"""Upper bounds of a request's tokens, for budget reservations (plain Python, no Django).

The cheap estimates in openai.py / anthropic.py (about 4 bytes a token) are what rate
limits reserve and what the ledger falls back to; a budget needs a number the real count
can never exceed, because a reservation below the real cost lets parallel requests spend
past the budget. The bound rests on one fact about every tokenizer in use (byte-level
BPE, SentencePiece with byte fallback): a token stands for at least one byte of the text,
so text never has more tokens than UTF-8 bytes. What the text does not show is bounded by
per-model allowances: the chat template's tokens per message and per request (role
headers, a default system prompt, tool instructions), a fixed count per image, and the
most tokens one answer can have.

Everything here is a pure function of the request body; one function per request shape
lives beside its protocol's estimate (``chat_prompt_bound``, ``messages_prompt_bound``,
``embeddings_prompt_bound``), all built from the helpers below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class TokenBounds:
    """A model's allowances for what a request's text does not show (see README)."""

    per_request: int = 512
    per_message: int = 32
    per_image: int = 4096
    max_output: int = 4096


DEFAULT_TOKEN_BOUNDS = TokenBounds()


def text_bytes(value: Any) -> int:
    """UTF-8 bytes of a string; 0 for anything else."""
    return len(value.encode()) if isinstance(value, str) else 0


def json_bytes(value: Any) -> int:
    """Bytes of a value as JSON (a string: its UTF-8 bytes), never less than its text."""
    if isinstance(value, str):
        return len(value.encode())
    if value is None:
        return 0
    try:
        return len(orjson.dumps(value))
    except TypeError:  # nested deeper than orjson serialises (it parses deeper)
        return _walk_bytes(value)


def _walk_bytes(value: Any) -> int:
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            total += 2
            for key, inner in item.items():
                total += len(str(key).encode()) + 4
                stack.append(inner)
        elif isinstance(item, list):
            total += 2
            stack.extend(item)
        elif isinstance(item, str):
            total += len(item.encode()) + 2
        else:
            total += len(str(item))
    return total


def output_bound(max_tokens: Any, bounds: TokenBounds, choices: Any = 1) -> int:
    """The most completion tokens a request can be billed: per choice, the client's
    ``max_tokens`` capped by the model's maximum output (the model's maximum when the
    client set none)."""
    per_choice = bounds.max_output
    if type(max_tokens) is int and 0 <= max_tokens < per_choice:
        per_choice = max_tokens
    n = choices if type(choices) is int and choices > 1 else 1
    return per_choice * n
