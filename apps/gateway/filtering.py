"""Content filtering of one gateway request (the policy is the key's, from KeyInfo).

Nothing here runs when the key's effective policy is off (``KeyInfo.content_policy is
None``, the common case): the handlers test that one attribute and go on.

* prompts are checked after admission (a blocked prompt still counts against the rate
  limits, but bills 0 tokens) and before any upstream is called;
* non-stream answers are checked whole (each choice on its own);
* streams go through ChatChunkFilter / MessageEventFilter (apps/gateway/protocol/
  content_filter.py) with a StreamGuard (sliding window, apps/moderation/scanner.py).

The ledger's ``content_filter`` gets ``{"prompt": outcome, "completion": outcome}`` with
each outcome ``{"action", "detector", "flagged", "filtered", "results"}``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson

from apps.gateway.errors import PromptFiltered
from apps.gateway.protocol.content_filter import (
    ChatChunkFilter,
    MessageEventFilter,
    choice_text,
    message_text,
    openai_content_filter_error,
    prompt_filter_results,
    withhold_choice,
    withhold_message,
)
from apps.gateway.protocol.sse import DONE_EVENT
from apps.moderation.policy import EffectivePolicy, Verdict, verdict_merge
from apps.moderation.scanner import Scanner, StreamGuard

if TYPE_CHECKING:
    from apps.gateway.call import MeteredCall

CONTENT_FILTER_OUTCOME = "content_filter"


class Screen:
    """The content filter's state for one request."""

    __slots__ = ("call", "policy", "scanner", "prompt", "completion")

    def __init__(self, call: MeteredCall, policy: EffectivePolicy) -> None:
        self.call = call
        self.policy = policy
        self.scanner = Scanner(call.state.moderation)
        self.prompt: Verdict | None = None
        self.completion: Verdict | None = None

    def _record(self) -> None:
        outcome = {}
        if self.prompt is not None:
            outcome["prompt"] = self.prompt.outcome()
        if self.completion is not None:
            outcome["completion"] = self.completion.outcome()
        self.call.event.content_filter = outcome or None

    async def check_prompt(self, text: str) -> None:
        if not self.policy.prompt_active:
            return
        verdict = await self.scanner.check(self.policy, text, "prompt")
        self.prompt = verdict
        self._record()
        if verdict.blocked:
            rules = self.policy.describe(verdict.filtered, "prompt")
            raise PromptFiltered(rules, openai_content_filter_error(verdict.results))

    def prompt_results(self) -> list | None:
        return prompt_filter_results(self.prompt.results) if self.prompt is not None else None

    async def check_completion(self, text: str) -> Verdict:
        verdict = await self.scanner.check(self.policy, text, "completion")
        self.record_completion(verdict)
        return verdict

    def record_completion(self, verdict: Verdict | None) -> None:
        if verdict is None:
            return
        self.completion = verdict_merge(self.completion, verdict)
        self._record()

    def guard(self) -> StreamGuard | None:
        if not self.policy.completion_active:
            return None
        policy, scanner = self.policy, self.scanner
        return StreamGuard(lambda text: scanner.check(policy, text, "completion"))

    def chat_filter(self) -> ChatChunkFilter | None:
        guard, results = self.guard(), self.prompt_results()
        if guard is None and results is None:
            return None
        return ChatChunkFilter(guard, results)

    def message_filter(self) -> MessageEventFilter | None:
        guard, results = self.guard(), self.prompt_results()
        if guard is None and results is None:
            return None
        return MessageEventFilter(guard, results)


async def screen_prompt(call: MeteredCall, text: str) -> None:
    """Open the request's screen (the key has a policy) and check the prompt."""
    call.screen = Screen(call, call.key.content_policy)
    await call.screen.check_prompt(text)


def _mark_blocked(call: MeteredCall) -> None:
    call.event.outcome = CONTENT_FILTER_OUTCOME
    call.event.status = 200  # (a status of 0 would be settled as "ok")


def _with_prompt_results(screen: Screen, answer: dict) -> bool:
    """The prompt's results put on a non-stream answer; whether its completion is to be
    checked as well."""
    results = screen.prompt_results()
    if results is not None:
        answer["prompt_filter_results"] = results
    return screen.policy.completion_active


async def filter_chat_completion(call: MeteredCall, answer: dict) -> None:
    """A chat completion (non-stream): results on it, blocked choices withheld."""
    screen: Screen = call.screen
    if not _with_prompt_results(screen, answer):
        return
    blocked = False
    for choice in answer.get("choices") or ():
        if not isinstance(choice, dict):
            continue
        verdict = await screen.check_completion(choice_text(choice))
        if verdict.blocked:
            blocked = True
            withhold_choice(choice, verdict.results)
        else:
            choice["content_filter_results"] = verdict.results
    if blocked:
        _mark_blocked(call)


async def filter_message(call: MeteredCall, message: dict) -> None:
    """An Anthropic Message (non-stream): results on it, withheld with refusal on a block."""
    screen: Screen = call.screen
    if not _with_prompt_results(screen, message):
        return
    verdict = await screen.check_completion(message_text(message))
    if verdict.blocked:
        withhold_message(message, verdict.results)
        _mark_blocked(call)
    else:
        message["content_filter_results"] = verdict.results


def stream_filter_done(call: MeteredCall, guard: StreamGuard | None, delivered: int) -> bool:
    """Record the stream's completion outcome; True when it was blocked (then the
    completion billed is what was delivered: ``delivered`` content chunks/deltas)."""
    if guard is None:
        return False
    call.screen.record_completion(guard.verdict)
    if not guard.blocked:
        return False
    event = call.event
    event.completion_tokens = delivered
    event.tokens_estimated = True
    _mark_blocked(call)
    return True


def blocked_chat_tail(
    call: MeteredCall,
    flt: ChatChunkFilter,
    public_model: str,
    client_wants_usage: bool,
    chunk_id: str | None = None,
    created: int | None = None,
) -> bytes:
    """End of a blocked chat stream: finish_reason content_filter (+ usage) + [DONE],
    under the stream's own id and time when it had one."""
    chunk_id = chunk_id or "chatcmpl-" + call.exchange.request_id.removeprefix("req_")
    created = created or int(time.time())
    tail = flt.blocked_chunk(chunk_id, public_model, created)
    if client_wants_usage:
        event = call.event
        usage = {
            "prompt_tokens": event.prompt_tokens,
            "completion_tokens": event.completion_tokens,
            "total_tokens": event.prompt_tokens + event.completion_tokens,
        }
        frame = {
            "id": chunk_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": public_model,
            "choices": [],
            "usage": usage,
        }
        tail += b"data: " + orjson.dumps(frame) + b"\n\n"
    return tail + DONE_EVENT
