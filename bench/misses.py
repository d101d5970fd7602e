"""Which labelled items a model gets wrong: missed positives and false flags, per set.

For reading errors, not for scores (`dualscreen evaluate` gives those). Sets: the held-out files
in data/heldout/ and the real-world files in ../shared/realworld/ when present, or the files named
with --data. A missed positive is an item with a label that the model clears; a false flag is an
item without one that it flags. Each line shows the decision, the top label probabilities and the
item's text; --json prints one object instead.

Real-world files are for evaluation only: read their errors to learn what kinds of product are
missed, never to copy or paraphrase their texts into data/.

    .venv/bin/python bench/misses.py --model models/dualscreen
    .venv/bin/python bench/misses.py --model M --data data/heldout/fresh.jsonl --backend onnx
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from common import ROOT


def default_sets() -> list[Path]:
    """Held-out files, then the real-world files when present."""
    files = sorted((ROOT / "data" / "heldout").glob("*.jsonl"))
    realworld = ROOT.parent / "shared" / "realworld"
    if realworld.is_dir():
        files += sorted(realworld.glob("*.jsonl"))
    return files


def errors(predictor: Any, path: Path, top: int = 3) -> dict[str, Any]:
    """Missed positives and false flags of one labelled file (rows the reader rejects are
    counted, not scored)."""
    from serving.contract.decide import decide
    from training.evaluate import load_labelled

    data = load_labelled(path, predictor.taxonomy, max_chars=predictor.manifest.rules.max_chars)
    labels = predictor.labels
    probs = predictor.probabilities(data.texts)
    decisions = decide(probs, data.texts, predictor.manifest)
    missed: list[dict[str, Any]] = []
    false_flags: list[dict[str, Any]] = []
    for i, d in enumerate(decisions):
        gold = [labels[j] for j in range(len(labels)) if data.y[i, j]]
        order = probs[i].argsort()[::-1][:top]
        item = {
            "row": i + 1,
            "gold": gold,
            "decision": d.decision,
            "top": {labels[j]: round(float(probs[i, j]), 3) for j in order},
            "text": data.texts[i],
        }
        if gold and d.decision == "clear":
            missed.append(item)
        elif not gold and d.decision == "flag":
            false_flags.append(item)
    positives = int((data.y.sum(axis=1) > 0).sum())
    return {
        "file": str(path),
        "items": len(data.texts),
        "rejected": len(data.rejected),
        "positives": positives,
        "missed": missed,
        "false_flags": false_flags,
    }


def show(result: dict[str, Any], width: int) -> str:
    lines = [
        f"## {result['file']}: {result['items']} items, {result['positives']} with a label; "
        f"{len(result['missed'])} missed, {len(result['false_flags'])} false flags"
    ]
    for kind in ("missed", "false_flags"):
        if result[kind]:
            lines.append(f"### {kind.replace('_', ' ')}")
        for item in result[kind]:
            top = ", ".join(f"{k} {v:.2f}" for k, v in item["top"].items())
            gold = ",".join(item["gold"]) or "-"
            lines.append(f"- row {item['row']} [{gold}] {top}: {item['text'][:width]}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "dualscreen"))
    parser.add_argument("--data", action="append", help="labelled file (repeatable)")
    parser.add_argument("--backend", default=None, help="backend (default: the model's own)")
    parser.add_argument("--width", type=int, default=140, help="characters of text shown")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from serving.predictor import Predictor

    files = [Path(p) for p in args.data] if args.data else default_sets()
    if not files:
        raise SystemExit("no labelled files: pass --data FILE")
    predictor = Predictor.load(args.model, backend=args.backend)
    results = [errors(predictor, path) for path in files]
    if args.json:
        json.dump(results, sys.stdout, ensure_ascii=False, indent=1)
        print()
    else:
        print("\n\n".join(show(r, args.width) for r in results))


if __name__ == "__main__":
    main()
