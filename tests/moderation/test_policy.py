"""Content policies: validation, merge, evaluation, the stream guard and the remote
detector's mapping and fallback (pure Python: no database, no server)."""

import asyncio

import httpx
import pytest

from apps.moderation.detectors import Scores
from apps.moderation.policy import (
    PolicyError,
    RemoteSpec,
    policy_clean,
    policy_compile,
    policy_merge,
    verdict_merge,
)
from apps.moderation.remote import RemoteModerationClient, scores_from_openai
from apps.moderation.scanner import Scanner, StreamGuard


def compiled(raw, remote=None):
    return policy_compile(policy_clean(raw), remote)


# --------------------------------------------------------------------------- validation


def test_clean_fills_defaults():
    assert policy_clean({"hate": {"prompt": "block"}}) == {
        "hate": {"prompt": "block", "completion": "off", "threshold": "medium"}
    }
    assert policy_clean(None) == {} and policy_clean({}) == {}


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({"hate": {"prompt": "deny"}}, "hate.prompt"),
        ({"hate": {"completion": True}}, "hate.completion"),
        ({"violence": {"threshold": "extreme"}}, "violence.threshold"),
        ({"violence": {"promt": "block"}}, "violence.promt"),
        ({"gore": {"prompt": "block"}}, "gore"),
        ({"hate": "block"}, "hate"),
        ({"moderation": {"model": "x"}}, "moderation.backend"),
        ({"moderation": {"backend": "m", "timeout_s": 0}}, "moderation.timeout_s"),
        ({"moderation": {"backend": "m", "url": "x"}}, "moderation.url"),
        (["hate"], ""),
    ],
)
def test_invalid_policies_name_the_field(raw, path):
    with pytest.raises(PolicyError) as info:
        policy_clean(raw)
    assert info.value.path == path
    assert str(info.value).startswith(f"{path}: " if path else "must be")


def test_all_off_compiles_to_none():
    assert compiled({}) is None
    assert compiled({"hate": {"prompt": "off", "completion": "off"}}) is None
    assert compiled({"moderation": {"backend": "m"}}) is None
    policy = compiled({"hate": {"completion": "annotate"}})
    assert policy is not None and not policy.prompt_active and policy.completion_active


def test_key_overrides_tenant_per_category():
    tenant = policy_clean(
        {"hate": {"prompt": "block"}, "violence": {"prompt": "block", "completion": "block"}}
    )
    key = policy_clean({"violence": {"prompt": "annotate"}})
    merged = policy_merge(tenant, key)
    assert merged["hate"]["prompt"] == "block"  # untouched category: the tenant's
    assert merged["violence"] == {"prompt": "annotate", "completion": "off", "threshold": "medium"}
    off = policy_merge(tenant, policy_clean({"hate": {}, "violence": {}}))
    assert policy_compile(off) is None  # a key may switch its tenant's categories off


# --------------------------------------------------------------------------- evaluation


def test_evaluate_thresholds_and_actions():
    policy = compiled(
        {
            "violence": {"prompt": "block", "threshold": "high"},
            "hate": {"prompt": "annotate", "threshold": "low"},
            "jailbreak": {"prompt": "block"},
            "sexual": {"completion": "block"},
        }
    )
    medium = policy.evaluate(Scores(violence="medium"), "prompt")
    assert medium.action == "allow" and not medium.blocked
    high = policy.evaluate(Scores(violence="high", hate="low"), "prompt")
    assert high.action == "block" and high.filtered == {"violence"}
    assert high.flagged == {"violence", "hate"}
    assert high.results["violence"] == {"filtered": True, "severity": "high"}
    assert high.results["hate"] == {"filtered": False, "severity": "low"}
    annotated = policy.evaluate(Scores(hate="medium"), "prompt")
    assert annotated.action == "annotate" and not annotated.filtered
    assert policy.evaluate(Scores(jailbreak=True), "prompt").blocked
    # sexual is only checked on completions
    assert policy.evaluate(Scores(sexual="high"), "prompt").action == "allow"
    assert policy.evaluate(Scores(sexual="medium"), "completion").blocked
    outcome = high.outcome()
    assert outcome["action"] == "block" and outcome["filtered"] == ["violence"]
    assert outcome["results"]["violence"]["severity"] == "high"


def test_verdict_merge_takes_the_worst():
    policy = compiled({"violence": {"completion": "block"}, "hate": {"completion": "annotate"}})
    a = policy.evaluate(Scores(hate="medium"), "completion")
    b = policy.evaluate(Scores(violence="high"), "completion")
    merged = verdict_merge(a, b)
    assert merged.action == "block"
    assert merged.scores == Scores(hate="medium", violence="high")
    assert merged.flagged == {"hate", "violence"}


# --------------------------------------------------------------------------- stream guard


def run(coro):
    return asyncio.run(coro)


def guard_for(raw, window=32, overlap=32):
    policy = compiled(raw)
    scanner = Scanner()
    return StreamGuard(lambda t: scanner.check(policy, t, "completion"), window, overlap)


def test_guard_holds_at_most_one_window():
    guard = guard_for({"violence": {"completion": "block"}}, window=32)
    words = [f"word{i} " for i in range(60)]
    released_total: list = []

    async def go():
        for i, w in enumerate(words):
            released_total.extend(await guard.push(i, w))
            # never more than one window of unchecked text held back
            assert guard.held_chars < guard.window + len(w)
        released_total.extend(await guard.flush())

    run(go())
    assert released_total == list(range(60))  # all, in order
    assert guard.max_held_chars < guard.window
    assert guard.windows_scanned >= 60 * 6 // 32
    assert guard.verdict.action == "allow" and not guard.blocked
    assert guard.delivered_text_items == 60


def test_guard_passes_textless_items_when_nothing_is_held():
    guard = guard_for({"violence": {"completion": "block"}}, window=32)

    async def go():
        assert await guard.push("start") == ["start"]
        assert await guard.push("a", "hello ") == []
        assert await guard.push("ping") == []  # queued behind held text, order kept
        assert await guard.flush() == ["a", "ping"]

    run(go())


def test_guard_blocks_across_a_window_boundary_and_withholds():
    guard = guard_for({"violence": {"completion": "block"}}, window=16, overlap=32)
    pieces = ["The plan is simple. ", "I am going to ki", "ll you tonight", " and more"]

    async def go():
        out = []
        for i, p in enumerate(pieces):
            out.extend(await guard.push(i, p))
        return out

    released = run(go())
    assert guard.blocked and guard.verdict.blocked
    assert "violence" in guard.verdict.filtered
    assert 2 not in released and 3 not in released  # the harmful text never went out
    run(guard.push(9, "more"))
    assert run(guard.flush()) == []  # nothing after a block


def test_guard_final_item_checks_what_is_held():
    guard = guard_for({"profanity": {"completion": "annotate"}}, window=1000)

    async def go():
        assert await guard.push("a", "what the fuck") == []
        return await guard.push("finish", final=True)

    assert run(go()) == ["a", "finish"]
    assert guard.verdict.action == "annotate" and guard.verdict.scores.profanity


# --------------------------------------------------------------------------- remote


SPEC = RemoteSpec("mod", "http://moderation.test/v1/moderations", (), "omni", 0.5)


def openai_answer(**flags):
    categories = dict.fromkeys(
        ["hate", "harassment", "self-harm", "sexual", "sexual/minors", "violence"], False
    )
    scores = dict.fromkeys(categories, 0.01)
    for name, score in flags.items():
        name = name.replace("__", "/").replace("_", "-")
        categories[name] = score >= 0.5
        scores[name] = score
    return {"id": "modr-1", "results": [{"flagged": any(categories.values()),
                                          "categories": categories,
                                          "category_scores": scores}]}  # fmt: skip


def test_openai_categories_map_to_ours():
    local = Scores(jailbreak=True)
    scores = scores_from_openai(openai_answer(violence=0.93, self_harm=0.3), local)
    assert scores.violence == "high" and scores.self_harm == "low"
    assert scores.hate == "safe" and scores.jailbreak  # jailbreak from the local detector
    minors = scores_from_openai(openai_answer(sexual__minors=0.55), Scores())
    assert minors.sexual == "high"


def remote_scanner(handler) -> Scanner:
    client = RemoteModerationClient()
    client._client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Scanner(client)


def test_remote_detector_is_used_when_configured():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=openai_answer(hate=0.7))

    policy = compiled({"hate": {"prompt": "block"}}, SPEC)
    verdict = run(remote_scanner(handler).check(policy, "some text", "prompt"))
    assert verdict.blocked and verdict.detector == "remote:mod"
    assert seen[0].url == SPEC.url


@pytest.mark.parametrize("failure", ["timeout", "500", "junk"])
def test_remote_failure_falls_back_to_local(failure):
    def handler(request: httpx.Request) -> httpx.Response:
        if failure == "timeout":
            raise httpx.ReadTimeout("slow", request=request)
        if failure == "500":
            return httpx.Response(500, json={"error": "down"})
        return httpx.Response(200, content=b"not json")

    policy = compiled({"violence": {"prompt": "block"}}, SPEC)
    verdict = run(remote_scanner(handler).check(policy, "I will kill you", "prompt"))
    assert verdict.blocked  # the built-in detector still caught it
    assert verdict.detector.startswith("local (fallback: ")
