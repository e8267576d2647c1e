"""The client's stop sequences, matched by the gateway in generated text.

Servers such as llama.cpp end with ``finish_reason: "stop"`` both at end of turn and on
a stop string, and strip the string: the client cannot be told which one ended the
answer. For those the stop strings are not forwarded; the text is matched here instead,
cut before the first stop string, and the match reported. Pure Python, no Django.

The match is the stop string that *completes* first (the one a server checking after
every token would stop on): for ``["bcd", "c"]`` in ``"abcd"`` it is ``"c"``.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["StopMatcher", "find_stop"]


def _clean(stops: Iterable[str]) -> tuple[str, ...]:
    # An empty stop string would match everywhere; nobody means that.
    return tuple(dict.fromkeys(s for s in stops if isinstance(s, str) and s))


def find_stop(text: str, stops: Iterable[str]) -> tuple[int, str] | None:
    """(position where the text is cut, the stop string) for the first stop string that
    completes in ``text``, or None."""
    return _find(text, _clean(stops))


def _find(text: str, stops: tuple[str, ...]) -> tuple[int, str] | None:
    best: tuple[int, int, str] | None = None
    for stop in stops:
        pos = text.find(stop)
        if pos >= 0:
            end = pos + len(stop)
            if best is None or end < best[0] or (end == best[0] and pos < best[1]):
                best = (end, pos, stop)
    return None if best is None else (best[1], best[2])


class StopMatcher:
    """Stop strings matched across the pieces of a stream.

    ``feed(text)`` returns the text that can go to the client now: a tail that could be
    the start of a stop string is held back (at most the longest stop string minus one
    character) until the next piece tells. After a match ``matched`` is the stop string,
    the text after it is never returned and ``cut_chars`` counts what was generated but
    withheld (the stop string and anything after it in the same piece).
    """

    __slots__ = ("_held", "_stops", "cut_chars", "matched")

    def __init__(self, stops: Iterable[str]) -> None:
        self._stops = _clean(stops)
        self._held = ""
        self.matched: str | None = None
        self.cut_chars = 0

    def __bool__(self) -> bool:
        return bool(self._stops)

    def feed(self, text: str) -> str:
        if self.matched is not None:
            self.cut_chars += len(text)
            return ""
        buffer = self._held + text
        found = _find(buffer, self._stops)
        if found is not None:
            pos, self.matched = found
            self._held = ""
            self.cut_chars += len(buffer) - pos
            return buffer[:pos]
        keep = self._partial_tail(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """The held-back tail, at the end of the text (it matched nothing)."""
        held, self._held = self._held, ""
        return held

    def _partial_tail(self, buffer: str) -> int:
        """Length of the longest tail of ``buffer`` that some stop string starts with."""
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if stop.startswith(buffer[-size:]):
                    longest = size
                    break
        return longest
