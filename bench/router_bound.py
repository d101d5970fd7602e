"""How much a cascade first stage clears, against a first stage as good as the transformer.

For each evaluation set (validation, test, held-out, and the real-world files when present): the
share of items the model's cascade router clears and the labelled items it loses, beside the same
figures for the transformer's own highest label probability cut by the same rule (at most
`cascade.max_clear_share_labelled` of the labelled validation items below the cut). The second is
an upper bound for any first stage trained on this corpus: a router that clears much less than it
is limited by what it reads, not by the rule. Real-world files are for evaluation only. Writes
bench/router_bound.md and .json.

    .venv/bin/python bench/router_bound.py --model models/dualscreen
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT

BENCH = ROOT / "bench"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(ROOT / "models" / "dualscreen"))
    parser.add_argument("--out", default=str(BENCH / "router_bound"), help="output path stem")
    args = parser.parse_args()

    from serving.backends import load_backend
    from serving.backends.cascade import CascadeBackend
    from serving.contract.artifact import load_artifact_taxonomy, verify_artifact
    from serving.contract.decide import calibrate
    from training import paths
    from training.cascade_fit import choose_clear_below
    from training.config import Config
    from training.pipeline import _eval_inputs, load_data

    started = time.perf_counter()
    folder = Path(args.model)
    manifest = verify_artifact(folder)
    if manifest.cascade is None:
        raise SystemExit(f"{folder}: the model has no cascade first stage")
    taxonomy = load_artifact_taxonomy(folder, manifest)
    cfg = Config.model_validate(manifest.config)
    splits, _ = load_data(cfg, taxonomy)
    sets = _eval_inputs(splits, taxonomy, cfg, paths.realworld_dir() is not None)
    cascade = CascadeBackend(folder, manifest)
    fp32 = load_backend(folder, manifest, "onnx")  # fp32, with the blend where the model has one
    max_share = float(cfg.cascade.max_clear_share_labelled)
    risks: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for name, (texts, y, _) in sets.items():
        cleared, _, _ = cascade.route(texts)
        top = calibrate(fp32.logits(texts), manifest).max(axis=1)
        risks[name] = (cleared, top, np.asarray(y.any(axis=1), dtype=bool))
    _, val_top, val_pos = risks["val"]
    cut = choose_clear_below(val_top, val_pos, max_share, 1.0)
    results: dict[str, Any] = {
        "model": f"{manifest.name} {manifest.version}",
        "router": manifest.cascade.router,
        "router_cut": manifest.cascade.clear_below,
        "transformer_cut": round(float(cut), 5),
        "max_clear_share_labelled": max_share,
        "sets": {},
    }
    for name, (cleared, top, pos) in risks.items():
        bound = top < cut
        results["sets"][name] = {
            "n": int(len(pos)),
            "labelled": int(pos.sum()),
            "router_cleared": round(float(cleared.mean()), 4),
            "router_lost": int((cleared & pos).sum()),
            "transformer_cleared": round(float(bound.mean()), 4),
            "transformer_lost": int((bound & pos).sum()),
        }
    results["seconds"] = round(time.perf_counter() - started)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        "# Cascade first stage against the transformer's own bound (bench/router_bound.py)",
        "",
        f"Model {results['model']}; router `{results['router']}` (cut {results['router_cut']:.4f});"
        f" the transformer's highest calibrated label probability cut at "
        f"{results['transformer_cut']} by the same rule (at most {max_share:.1%} of labelled "
        "validation items below the cut).",
        "",
        "| set | n | labelled | router: cleared / labelled lost | transformer: cleared / lost |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results["sets"].items():
        lines.append(
            f"| {name} | {r['n']} | {r['labelled']} | {r['router_cleared']:.1%} / "
            f"{r['router_lost']} | {r['transformer_cleared']:.1%} / {r['transformer_lost']} |"
        )
    text = "\n".join(lines) + f"\n\n{results['seconds']} s.\n"
    Path(args.out + ".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
