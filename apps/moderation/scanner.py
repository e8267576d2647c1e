"""Checking texts against a policy, once or incrementally over a stream. No Django.

``Scanner.check`` scores one text (built-in detector, or the policy's remote detector
with the built-in one as fallback) and evaluates the policy for a direction.

``StreamGuard`` checks a streamed completion over a sliding window. Output items
(chunks/events, opaque to it) are pushed with the text they carry; items are held while
the unchecked text is shorter than ``window`` characters, then the unchecked text plus
the last ``overlap`` characters already checked is scanned and, unless it blocks, every
held item is released in order. Items carrying no text pass straight through when
nothing is held. So at most one window of text (plus the chunk that completed it) is
ever held back: the added delay is bounded by one window. On a block the held items
are dropped (never delivered) and the guard refuses everything after.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from apps.moderation.detectors import LocalDetector, Scores
from apps.moderation.policy import EffectivePolicy, Verdict, verdict_merge
from apps.moderation.remote import RemoteModerationClient, RemoteModerationError

log = logging.getLogger(__name__)

WINDOW_CHARS = 128
OVERLAP_CHARS = 128

_LOCAL = LocalDetector()


class Scanner:
    def __init__(
        self,
        remote_client: RemoteModerationClient | None = None,
        local: LocalDetector | None = None,
    ) -> None:
        self.local = local or _LOCAL
        self.remote_client = remote_client

    async def scores(self, policy: EffectivePolicy, text: str) -> tuple[Scores, str]:
        """(scores, detector label): remote when configured, else (or on failure) local."""
        local = self.local.score(text)
        spec = policy.remote
        if spec is None or self.remote_client is None or not text.strip():
            return local, "local"
        try:
            return await self.remote_client.score(spec, text, local), f"remote:{spec.backend}"
        except RemoteModerationError as exc:
            log.warning("moderation backend %s failed (%s); using local", spec.backend, exc)
            return local, f"local (fallback: {exc.reason})"

    async def check(self, policy: EffectivePolicy, text: str, direction: str) -> Verdict:
        scores, detector = await self.scores(policy, text)
        return policy.evaluate(scores, direction, detector)


class StreamGuard:
    """Sliding-window check of one streamed completion (see the module docstring)."""

    __slots__ = (
        "_check",
        "window",
        "overlap",
        "_items",
        "_text",
        "_pending_chars",
        "_tail",
        "_scores",
        "_detector",
        "verdict",
        "blocked",
        "max_held_chars",
        "windows_scanned",
        "delivered_text_items",
        "_held_text_items",
    )

    def __init__(
        self,
        check: Callable[[str], Awaitable[Verdict]],
        window: int = WINDOW_CHARS,
        overlap: int = OVERLAP_CHARS,
    ) -> None:
        self._check = check
        self.window = window
        self.overlap = overlap
        self._items: list[Any] = []
        self._text: list[str] = []
        self._pending_chars = 0
        self._tail = ""
        self.verdict: Verdict | None = None  # the stream's so far (worst of its windows)
        self.blocked = False
        self.max_held_chars = 0  # unchecked text held before the chunk that fills a window
        self.windows_scanned = 0
        self.delivered_text_items = 0
        self._held_text_items = 0

    @property
    def held_items(self) -> int:
        return len(self._items)

    @property
    def held_chars(self) -> int:
        return self._pending_chars

    async def push(self, item: Any, text: str = "", *, final: bool = False) -> list[Any]:
        """Add one output item; returns the items now safe to send (possibly none).

        ``final``: the item ends the completion (finish chunk, message_delta): what is
        held is checked now, whatever its length."""
        if self.blocked:
            return []
        if not text and not self._items and not final:
            return [item]
        if text:
            self.max_held_chars = max(self.max_held_chars, self._pending_chars)
            self._text.append(text)
            self._pending_chars += len(text)
            self._held_text_items += 1
        self._items.append(item)
        if final or self._pending_chars >= self.window:
            return await self._scan()
        return []

    async def flush(self) -> list[Any]:
        """End of stream (or before an error is sent): check and release what is held."""
        if self.blocked:
            return []
        return await self._scan()

    async def _scan(self) -> list[Any]:
        if self._pending_chars:
            pending = "".join(self._text)
            verdict = await self._check(self._tail + pending)
            self.windows_scanned += 1
            self._merge(verdict)
            if verdict.blocked:
                self.blocked = True
                self._items.clear()
                self._text.clear()
                self._pending_chars = 0
                return []
            self._tail = (self._tail + pending)[-self.overlap :] if self.overlap else ""
        items, self._items = self._items, []
        self._text = []
        self._pending_chars = 0
        self.delivered_text_items += self._held_text_items
        self._held_text_items = 0
        return items

    def _merge(self, verdict: Verdict) -> None:
        self.verdict = verdict_merge(self.verdict, verdict)
