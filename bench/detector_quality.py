"""Quality of the built-in LocalDetector on the labelled corpus.

Usage (from the repo root):
    .venv/bin/python bench/detector_quality.py [--corpus tune|holdout|all] [--errors]

A category is a predicted positive when its severity is >= low (severity-categories) or it
is detected (jailbreak, profanity); a label is positive when present in ``labels``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apps.moderation.detectors import LocalDetector  # noqa: E402
from apps.moderation.detectors.base import CATEGORIES  # noqa: E402

CORPUS_DIR = ROOT / "tests" / "moderation" / "corpus"


def load(corpus: str) -> list[dict]:
    names = ["tune", "holdout"] if corpus == "all" else [corpus]
    rows: list[dict] = []
    for name in names:
        with open(CORPUS_DIR / f"{name}.jsonl", encoding="utf-8") as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return rows


def evaluate(rows: list[dict], detector: LocalDetector | None = None) -> dict:
    det = detector or LocalDetector()
    stats = {c: {"tp": 0, "fp": 0, "fn": 0} for c in CATEGORIES}
    errors: list[tuple[str, str, str]] = []
    lookalike_total = lookalike_fp = benign_total = benign_fp = 0
    for row in rows:
        predicted = det.score(row["text"]).positives("low")
        truth = set(row["labels"])
        for c in CATEGORIES:
            if c in predicted and c in truth:
                stats[c]["tp"] += 1
            elif c in predicted:
                stats[c]["fp"] += 1
                errors.append(("FP", c, row["text"]))
            elif c in truth:
                stats[c]["fn"] += 1
                errors.append(("FN", c, row["text"]))
        if not truth:
            benign_total += 1
            benign_fp += bool(predicted)
            if row["kind"] == "benign_lookalike":
                lookalike_total += 1
                lookalike_fp += bool(predicted)
    per_cat = {}
    for c, s in stats.items():
        p_den = s["tp"] + s["fp"]
        r_den = s["tp"] + s["fn"]
        per_cat[c] = {
            "precision": s["tp"] / p_den if p_den else 1.0,
            "recall": s["tp"] / r_den if r_den else 1.0,
            "support": r_den,
            **s,
        }
    return {
        "n": len(rows),
        "per_category": per_cat,
        "macro_recall": sum(v["recall"] for v in per_cat.values()) / len(per_cat),
        "macro_precision": sum(v["precision"] for v in per_cat.values()) / len(per_cat),
        "lookalike_fp_rate": lookalike_fp / lookalike_total if lookalike_total else 0.0,
        "lookalike_total": lookalike_total,
        "benign_fp_rate": benign_fp / benign_total if benign_total else 0.0,
        "benign_total": benign_total,
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", choices=("tune", "holdout", "all"), default="holdout")
    ap.add_argument("--errors", action="store_true", help="list false positives/negatives")
    args = ap.parse_args(argv)
    res = evaluate(load(args.corpus))
    print(f"corpus={args.corpus} examples={res['n']}")
    print(
        f"{'category':<10} {'precision':>9} {'recall':>7} {'support':>7} {'tp':>4} {'fp':>4} {'fn':>4}"
    )
    for c, v in res["per_category"].items():
        print(
            f"{c:<10} {v['precision']:>9.3f} {v['recall']:>7.3f} {v['support']:>7d} "
            f"{v['tp']:>4d} {v['fp']:>4d} {v['fn']:>4d}"
        )
    print(f"macro recall     {res['macro_recall']:.3f}")
    print(f"macro precision  {res['macro_precision']:.3f}")
    print(
        f"FP rate on benign look-alikes {res['lookalike_fp_rate']:.3f} "
        f"(of {res['lookalike_total']}); on all benign {res['benign_fp_rate']:.3f} "
        f"(of {res['benign_total']})"
    )
    if args.errors:
        for kind, cat, text in res["errors"]:
            print(f"  {kind} {cat:<10} {text}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
