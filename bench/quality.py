"""Model quality side by side: `dualscreen evaluate --json` on the same sets for each model.

Sets: the corpus test split (with its zh / ja / mixed slices from `by_lang`), the held-out files
in data/heldout/ (product kinds the corpus does not have, never trained on), and the real-world
evaluation files in ../shared/realworld/ when present (never used for training or tuning). Each
model is also evaluated at the review budgets and ceilings given with --budgets and --ceilings
(applied at serving time, no retraining). Writes bench/quality.md and bench/quality.json.

    .venv/bin/python bench/quality.py --model minilm=/tmp/runs/minilm/dualscreen \
        --model e5=models/dualscreen --budgets default,none,3 --ceilings default,0.2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import ROOT

BENCH = ROOT / "bench"
REALWORLD = ROOT.parent / "shared" / "realworld"
DUALSCREEN = str(Path(sys.executable).parent / "dualscreen")


def evaluate(
    model: str, data: Path, budget: str, ceiling: str, split: str | None
) -> dict[str, Any]:
    """One `dualscreen evaluate --json` run."""
    cmd = [DUALSCREEN, "evaluate", "--model", model, "--data", str(data), "--json"]
    if split:
        cmd += ["--split", split]
    if budget != "default":
        cmd += ["--review-budget", budget]
    if ceiling != "default":
        cmd += ["--review-ceiling", ceiling]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def sets() -> list[tuple[str, Path, str | None]]:
    out: list[tuple[str, Path, str | None]] = [
        ("test", ROOT / "data" / "corpus" / "corpus.jsonl", "test")
    ]
    for path in sorted((ROOT / "data" / "heldout").glob("*.jsonl")):
        out.append((f"heldout/{path.stem}", path, None))
    for name in ("retail", "components"):
        path = REALWORLD / f"{name}.jsonl"
        if path.exists():
            out.append((f"realworld/{name}", path, None))
    return out


def fmt(value: Any) -> str:
    return "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| model | budget | ceiling | set | n | macro F1 | any-label recall | flag precision "
        "| review rate | flag rate |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, per_set in results.items():
        model, budget, ceiling = key.split("@", 2)
        for name, m in per_set.items():
            rows = [(name, m)]
            if name == "test":
                rows += [(f"test/{lang}", lm) for lang, lm in m.get("by_lang", {}).items()]
            for label, mm in rows:
                a = mm["any_label"]
                lines.append(
                    f"| {model} | {budget} | {ceiling} | {label} | {mm['n']} | "
                    f"{fmt(mm['macro_f1'])} | {fmt(a['recall'])} | "
                    f"{fmt(a.get('flag_precision'))} | {fmt(mm['review_rate'])} | "
                    f"{fmt(mm.get('flag_rate'))} |"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="name=folder")
    parser.add_argument("--budgets", default="default", help="comma-separated review budgets")
    parser.add_argument(
        "--ceilings", default="default", help="comma-separated review ceilings the models store"
    )
    parser.add_argument("--out", default=str(BENCH / "quality"), help="output path stem")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    started = time.perf_counter()
    for spec in args.model:
        name, _, folder = spec.partition("=")
        for budget in (b.strip() for b in args.budgets.split(",")):
            for ceiling in (c.strip() for c in args.ceilings.split(",")):
                per_set = {}
                for set_name, path, split in sets():
                    per_set[set_name] = evaluate(folder, path, budget, ceiling, split)
                    print(f"{name} @ {budget} @ {ceiling}: {set_name} done", file=sys.stderr)
                results[f"{name}@{budget}@{ceiling}"] = per_set
    Path(args.out + ".json").write_text(json.dumps(results, indent=1) + "\n")
    text = (
        "# Model quality (bench/quality.py)\n\n"
        "Macro F1 counts a label at calibrated probability >= 0.5; recall, flag precision, review "
        "rate and flag rate use each model's thresholds at the given review budget and ceiling "
        "(`default`: the model's own). Real-world files are for evaluation only.\n\n"
        + table(results)
        + f"\n\n{time.perf_counter() - started:.0f} s.\n"
    )
    Path(args.out + ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
