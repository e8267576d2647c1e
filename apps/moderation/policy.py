"""Content policies: validation, tenant/key merging and evaluation. Pure Python, no Django.

A policy is a JSON object, per category::

    {"violence": {"prompt": "block", "completion": "annotate", "threshold": "medium"},
     "jailbreak": {"prompt": "block"},
     "moderation": {"backend": "openai-moderation", "model": "omni-moderation-latest",
                    "timeout_s": 2}}

* categories: hate, self_harm, sexual, violence (severity safe/low/medium/high) and
  jailbreak, profanity (detected or not; ``threshold`` does not apply to them);
* per direction (``prompt``, ``completion``): ``off`` (default), ``annotate`` (results on
  the response, never blocks) or ``block`` (refuse when the category is at or above
  ``threshold``; results shown as well);
* ``threshold``: low, medium (default) or high;
* ``moderation`` (optional): score with a remote OpenAI-compatible ``/v1/moderations``
  Backend instead of the built-in detector (see apps/moderation/remote.py).

A key's policy merges over its tenant's **per category**: a category the key names
replaces the tenant's rule for that category as a whole (missing fields take the
defaults, so ``{"hate": {"prompt": "off"}}`` on a key switches hate off for it); the
key's ``moderation`` replaces the tenant's. An empty or all-off effective policy compiles
to ``None``: the gateway then does no content-filter work at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from apps.moderation.detectors.base import (
    CATEGORIES,
    CATEGORIES_DETECTED,
    CATEGORIES_SEVERITY,
    Scores,
    severity_at_least,
)

DIRECTIONS: tuple[str, ...] = ("prompt", "completion")
ACTIONS: tuple[str, ...] = ("off", "annotate", "block")
THRESHOLDS: tuple[str, ...] = ("low", "medium", "high")
DEFAULT_THRESHOLD = "medium"
RULE_FIELDS = frozenset({*DIRECTIONS, "threshold"})
MODERATION_FIELDS = frozenset({"backend", "model", "timeout_s"})
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"
DEFAULT_MODERATION_TIMEOUT_S = 2.0
MAX_MODERATION_TIMEOUT_S = 30.0


class PolicyError(ValueError):
    """An invalid policy; ``path`` names the offending field (``hate.prompt``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def _one_of(value: Any, allowed: tuple[str, ...], path: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise PolicyError(path, f"must be one of {', '.join(allowed)} (got {value!r})")
    return value


def _clean_rule(raw: Any, path: str) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "must be a mapping of prompt, completion and threshold")
    for name in raw:
        if name not in RULE_FIELDS:
            raise PolicyError(
                f"{path}.{name}", f"unknown field (allowed: {', '.join(sorted(RULE_FIELDS))})"
            )
    rule = {d: _one_of(raw.get(d, "off"), ACTIONS, f"{path}.{d}") for d in DIRECTIONS}
    rule["threshold"] = _one_of(
        raw.get("threshold", DEFAULT_THRESHOLD), THRESHOLDS, f"{path}.threshold"
    )
    return rule


def _clean_moderation(raw: Any, path: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise PolicyError(path, "must be a mapping with backend (and optional model, timeout_s)")
    for name in raw:
        if name not in MODERATION_FIELDS:
            raise PolicyError(
                f"{path}.{name}",
                f"unknown field (allowed: {', '.join(sorted(MODERATION_FIELDS))})",
            )
    backend = raw.get("backend")
    if not isinstance(backend, str) or not backend:
        raise PolicyError(f"{path}.backend", "is required: the name of a Backend")
    model = raw.get("model", DEFAULT_MODERATION_MODEL)
    if not isinstance(model, str) or not model:
        raise PolicyError(f"{path}.model", "must be a non-empty string")
    timeout = raw.get("timeout_s", DEFAULT_MODERATION_TIMEOUT_S)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise PolicyError(f"{path}.timeout_s", "must be a number of seconds")
    if not 0 < timeout <= MAX_MODERATION_TIMEOUT_S:
        raise PolicyError(f"{path}.timeout_s", f"must be > 0 and <= {MAX_MODERATION_TIMEOUT_S:g}")
    return {"backend": backend, "model": model, "timeout_s": float(timeout)}


def policy_clean(raw: Any) -> dict[str, Any]:
    """Validate a policy document and return its normal form (every rule complete).

    ``None`` is the empty policy. Raises PolicyError naming the field."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise PolicyError("", "must be a mapping of category to rule")
    cleaned: dict[str, Any] = {}
    for name, value in raw.items():
        if name == "moderation":
            cleaned["moderation"] = _clean_moderation(value, "moderation")
        elif name in CATEGORIES:
            cleaned[name] = _clean_rule(value, str(name))
        else:
            raise PolicyError(
                str(name),
                f"unknown category (allowed: {', '.join(CATEGORIES)}, and moderation)",
            )
    return cleaned


def policy_merge(tenant: Mapping[str, Any] | None, key: Mapping[str, Any] | None) -> dict:
    """The key's policy over the tenant's, per category (both already clean)."""
    merged = dict(tenant or {})
    merged.update(key or {})
    return merged


# --------------------------------------------------------------------------- compiled


@dataclass(frozen=True, slots=True)
class RemoteSpec:
    """Where the remote detector lives (resolved from a Backend when the key is loaded)."""

    backend: str
    url: str  # …/moderations
    headers: tuple[tuple[str, str], ...]
    model: str
    timeout_s: float


@dataclass(frozen=True, slots=True)
class Rule:
    prompt: str
    completion: str
    threshold: str

    def action(self, direction: str) -> str:
        return self.prompt if direction == "prompt" else self.completion


@dataclass(frozen=True, slots=True)
class Verdict:
    """The outcome of checking one text in one direction."""

    direction: str
    action: str  # allow (nothing flagged) | annotate (flagged, shown) | block
    scores: Scores
    filtered: frozenset[str]  # categories that block
    flagged: frozenset[str]  # active categories at or above their threshold
    detector: str

    @property
    def blocked(self) -> bool:
        return self.action == "block"

    @property
    def results(self) -> dict[str, dict[str, object]]:
        """Azure ``content_filter_results``; ``filtered`` is true for blocking categories."""
        return self.scores.to_results(self.filtered)

    def outcome(self) -> dict[str, Any]:
        """What the ledger records for this direction."""
        return {
            "action": self.action,
            "detector": self.detector,
            "flagged": sorted(self.flagged),
            "filtered": sorted(self.filtered),
            "results": self.results,
        }


@dataclass(frozen=True, slots=True)
class EffectivePolicy:
    """A key's compiled policy: only categories with an action other than off."""

    rules: dict[str, Rule]
    remote: RemoteSpec | None = None
    prompt_active: bool = False
    completion_active: bool = False

    def active(self, direction: str) -> bool:
        return self.prompt_active if direction == "prompt" else self.completion_active

    def evaluate(self, scores: Scores, direction: str, detector: str = "local") -> Verdict:
        flagged: set[str] = set()
        filtered: set[str] = set()
        for category, rule in self.rules.items():
            action = rule.action(direction)
            if action == "off":
                continue
            if category in CATEGORIES_DETECTED:
                hit = bool(getattr(scores, category))
            else:
                hit = severity_at_least(getattr(scores, category), rule.threshold)
            if hit:
                flagged.add(category)
                if action == "block":
                    filtered.add(category)
        action = "block" if filtered else ("annotate" if flagged else "allow")
        return Verdict(direction, action, scores, frozenset(filtered), frozenset(flagged), detector)

    def describe(self, categories: frozenset[str] | set[str], direction: str) -> str:
        """Human description of the rules that blocked, for error messages."""
        parts = []
        for category in sorted(categories):
            rule = self.rules[category]
            if category in CATEGORIES_SEVERITY:
                parts.append(f"{category} ({direction}: block at {rule.threshold} or above)")
            else:
                parts.append(f"{category} ({direction}: block when detected)")
        return ", ".join(parts)


def policy_compile(merged: Mapping[str, Any], remote: RemoteSpec | None = None):
    """EffectivePolicy, or None when no category is on in either direction."""
    rules: dict[str, Rule] = {}
    for category in CATEGORIES:
        raw = merged.get(category)
        if not raw:
            continue
        rule = Rule(raw.get("prompt", "off"), raw.get("completion", "off"), raw["threshold"])
        if rule.prompt != "off" or rule.completion != "off":
            rules[category] = rule
    if not rules:
        return None
    return EffectivePolicy(
        rules=rules,
        remote=remote,
        prompt_active=any(r.prompt != "off" for r in rules.values()),
        completion_active=any(r.completion != "off" for r in rules.values()),
    )


def scores_max(a: Scores | None, b: Scores) -> Scores:
    """Per category, the worse of two scores (windows of one stream → the stream's)."""
    if a is None:
        return b
    values: dict[str, Any] = {}
    for category in CATEGORIES_SEVERITY:
        x, y = getattr(a, category), getattr(b, category)
        values[category] = y if severity_at_least(y, x) else x
    for category in CATEGORIES_DETECTED:
        values[category] = getattr(a, category) or getattr(b, category)
    return Scores(**values)


_ACTION_ORDER = ("allow", "annotate", "block")


def verdict_merge(a: Verdict | None, b: Verdict) -> Verdict:
    """Two checks of one direction as one (worst scores, union of flags, worst action)."""
    if a is None:
        return b
    return Verdict(
        b.direction,
        max(a.action, b.action, key=_ACTION_ORDER.index),
        scores_max(a.scores, b.scores),
        a.filtered | b.filtered,
        a.flagged | b.flagged,
        b.detector if b.detector != "local" else a.detector,
    )
