"""Remote moderation: any OpenAI-compatible ``POST /v1/moderations`` endpoint, configured
as a Backend and named in a policy (``moderation: {backend: <name>}``). No Django.

Mapping of OpenAI's categories onto ours (the worst score wins per category):

    hate, hate/threatening, harassment          → hate
    self-harm, self-harm/intent, …/instructions → self_harm
    sexual, sexual/minors                       → sexual (minors: at least high when flagged)
    violence, violence/graphic, harassment/threatening, illicit/violent → violence

Severity from the category score: ≥ 0.8 high, ≥ 0.5 medium, ≥ 0.2 low (a flagged category
is at least medium). OpenAI's API has no jailbreak or profanity categories: those always
come from the built-in detector, which also runs on every remote check (it is cheap).

**Fallback:** a remote failure (timeout, connection error, non-2xx, unreadable answer)
never fails the request: the built-in detector's scores are used instead and the ledger
outcome says so (``detector: "local (fallback: remote timeout)"``).
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from apps.moderation.detectors.base import CATEGORIES_SEVERITY, SEVERITY_RANK, Scores
from apps.moderation.policy import RemoteSpec

log = logging.getLogger(__name__)

OPENAI_CATEGORY_MAP: dict[str, str] = {
    "hate": "hate",
    "hate/threatening": "hate",
    "harassment": "hate",
    "self-harm": "self_harm",
    "self-harm/intent": "self_harm",
    "self-harm/instructions": "self_harm",
    "sexual": "sexual",
    "sexual/minors": "sexual",
    "violence": "violence",
    "violence/graphic": "violence",
    "harassment/threatening": "violence",
    "illicit/violent": "violence",
}
MAX_INPUT_CHARS = 32_000


class RemoteModerationError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def severity_of_score(score: float, flagged: bool) -> str:
    if score >= 0.8:
        severity = "high"
    elif score >= 0.5:
        severity = "medium"
    elif score >= 0.2:
        severity = "low"
    else:
        severity = "safe"
    if flagged and SEVERITY_RANK[severity] < SEVERITY_RANK["medium"]:
        severity = "medium"
    return severity


def scores_from_openai(answer: Any, local: Scores) -> Scores:
    """Our Scores from an OpenAI moderation answer (first result); jailbreak and
    profanity from ``local``. Raises RemoteModerationError if the answer is unusable."""
    try:
        result = answer["results"][0]
        categories = result.get("categories") or {}
        category_scores = result.get("category_scores") or {}
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RemoteModerationError("unreadable answer") from None
    if not isinstance(categories, dict) or not isinstance(category_scores, dict):
        raise RemoteModerationError("unreadable answer")
    worst = dict.fromkeys(CATEGORIES_SEVERITY, "safe")
    for name in set(categories) | set(category_scores):
        ours = OPENAI_CATEGORY_MAP.get(name)
        if ours is None:
            continue
        raw_score = category_scores.get(name, 0.0)
        score = float(raw_score) if isinstance(raw_score, int | float) else 0.0
        flagged = categories.get(name) is True
        severity = severity_of_score(score, flagged)
        if name == "sexual/minors" and flagged:
            severity = "high"
        if SEVERITY_RANK[severity] > SEVERITY_RANK[worst[ours]]:
            worst[ours] = severity
    return Scores(**worst, jailbreak=local.jailbreak, profanity=local.profanity)


class RemoteModerationClient:
    """A pooled httpx.AsyncClient shared by every request of one gateway process."""

    def __init__(self, max_connections: int = 32) -> None:
        self._max = max_connections
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                limits=httpx.Limits(max_connections=self._max, max_keepalive_connections=self._max),
                follow_redirects=False,
            )
        return self._client

    async def score(self, spec: RemoteSpec, text: str, local: Scores) -> Scores:
        """Scores from the remote endpoint; raises RemoteModerationError on any failure."""
        try:
            response = await self._http().post(
                spec.url,
                json={"model": spec.model, "input": text[:MAX_INPUT_CHARS]},
                headers=dict(spec.headers),
                timeout=spec.timeout_s,
            )
        except httpx.TimeoutException:
            raise RemoteModerationError("remote timeout") from None
        except httpx.HTTPError as exc:
            raise RemoteModerationError(f"remote unreachable ({type(exc).__name__})") from None
        if response.status_code >= 300:
            raise RemoteModerationError(f"remote HTTP {response.status_code}")
        try:
            answer = response.json()
        except ValueError:
            raise RemoteModerationError("unreadable answer") from None
        return scores_from_openai(answer, local)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
