"""Shared types for content-filter detectors (Azure-style result shape)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

CATEGORIES_SEVERITY: tuple[str, ...] = ("hate", "self_harm", "sexual", "violence")
CATEGORIES_DETECTED: tuple[str, ...] = ("jailbreak", "profanity")
CATEGORIES: tuple[str, ...] = CATEGORIES_SEVERITY + CATEGORIES_DETECTED
SEVERITIES: tuple[str, ...] = ("safe", "low", "medium", "high")
SEVERITY_RANK: dict[str, int] = {s: i for i, s in enumerate(SEVERITIES)}


def severity_at_least(severity: str, threshold: str) -> bool:
    """True when ``severity`` is at or above ``threshold`` (e.g. "medium" >= "low")."""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]


@dataclass(frozen=True, slots=True)
class Scores:
    """Scores for one text: a severity per severity-category, a bool per detected-category."""

    hate: str = "safe"
    self_harm: str = "safe"
    sexual: str = "safe"
    violence: str = "safe"
    jailbreak: bool = False
    profanity: bool = False

    def __post_init__(self) -> None:
        for cat in CATEGORIES_SEVERITY:
            if getattr(self, cat) not in SEVERITY_RANK:
                raise ValueError(f"invalid severity for {cat}: {getattr(self, cat)!r}")

    def severity(self, category: str) -> str:
        return getattr(self, category)

    def detected(self, category: str) -> bool:
        return bool(getattr(self, category))

    def positives(self, threshold: str = "low") -> set[str]:
        """Categories flagged at ``threshold`` or above (detected-categories when True)."""
        out = {c for c in CATEGORIES_SEVERITY if severity_at_least(getattr(self, c), threshold)}
        out.update(c for c in CATEGORIES_DETECTED if getattr(self, c))
        return out

    @property
    def any(self) -> bool:
        return bool(self.positives("low"))

    def to_results(self, filtered: Iterable[str] = frozenset()) -> dict[str, dict[str, object]]:
        """Azure ``content_filter_results`` shape; ``filtered`` names the categories blocked."""
        filt = set(filtered)
        out: dict[str, dict[str, object]] = {}
        for cat in CATEGORIES_SEVERITY:
            out[cat] = {"filtered": cat in filt, "severity": getattr(self, cat)}
        for cat in CATEGORIES_DETECTED:
            out[cat] = {"filtered": cat in filt, "detected": bool(getattr(self, cat))}
        return out


SAFE = Scores()


@runtime_checkable
class Detector(Protocol):
    """Anything that scores a text. Implementations must be safe to call from many threads."""

    def score(self, text: str) -> Scores: ...
