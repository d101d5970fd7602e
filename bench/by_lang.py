"""Would Chinese and Japanese texts do better with their own thresholds or calibration? (issue 12)

Scores validation, test and the real-world files once with a blended artifact's two parts (the
transformer's raw logits and the TF-IDF part's), then, for each CJK weight in --cjk-weights,
refits calibration and thresholds on validation as the pipeline does and compares:

- pooled: one calibration and one set of thresholds for every text (what the pipeline ships);
- cjk-thresholds: pooled calibration; CJK texts get thresholds searched on CJK validation rows
  only (the review band widens until they reach the recall target themselves);
- cjk-platt: CJK texts get their own per-label Platt scaling; thresholds pooled;
- cjk-max: CJK texts take the larger of the two models' logits (either model can raise an item)
  instead of the weighted sum; one calibration and thresholds for all.

CJK means `detect_lang` zh or ja. Nothing is tuned on test or on the real-world files. Prints
any-label recall, flag precision and review rate per set and per language slice.

    .venv/bin/python bench/by_lang.py --model models/dualscreen --out bench/by_lang.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import labelled_sets  # noqa: E402

from serving.contract.artifact import Manifest  # noqa: E402
from serving.contract.decide import (  # noqa: E402
    calibrate,
    decision_codes,
    is_insufficient,
    thresholds_for_budget,
)
from serving.contract.text import detect_lang  # noqa: E402
from serving.predictor import Predictor  # noqa: E402
from training.calibrate import apply_calibration, fit_calibration  # noqa: E402
from training.config import Config  # noqa: E402
from training.pipeline import CJK  # noqa: E402
from training.thresholds import review_search  # noqa: E402

Arr = NDArray[Any]


def _thresholds(cfg: Config, manifest: Manifest, p: Arr, y: Arr, texts: list[str]) -> Manifest:
    precision = {"*": cfg.decide.flag_precision, **cfg.decide.flag_precision_by_label}
    vague = np.array([is_insufficient(t, cfg.decide.min_words) for t in texts], dtype=bool)
    flag, path = review_search(
        p,
        y,
        manifest.labels,
        cfg.decide.target_recall,
        precision,
        caught_anyway=vague,
        review_floor=cfg.decide.review_floor,
    )
    return manifest.model_copy(update={"thresholds": thresholds_for_budget(flag, path)})


def _summary(codes: Arr, y: Arr) -> dict[str, Any]:
    positive: Arr = np.asarray(y.any(axis=1), dtype=bool)
    flagged = codes == 2
    return {
        "n": int(len(y)),
        "recall": round(float((codes >= 1)[positive].mean()), 4) if positive.any() else None,
        "flag_precision": round(float(positive[flagged].mean()), 4) if flagged.any() else None,
        "review_rate": round(float((codes == 1).mean()), 4) if len(y) else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/dualscreen")
    parser.add_argument("--config", type=Path, default=ROOT / "training/configs/default.toml")
    parser.add_argument("--cjk-weights", default="0,1", help="comma-separated CJK TF-IDF weights")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/by_lang.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    cfg, _, _, _, sets = labelled_sets(args.config)
    predictor = Predictor.load(args.model, backend="onnx")
    backend: Any = predictor.backend
    if not hasattr(backend, "part"):
        raise SystemExit(f"{args.model} is not a blended artifact")
    manifest = predictor.manifest
    w = manifest.blend.weight if manifest.blend else 0.0
    parts: dict[str, tuple[Arr, Arr, Arr]] = {}
    for name, (texts, _) in sets.items():
        langs = np.array([detect_lang(t) for t in texts])
        parts[name] = (backend.inner.logits(texts), backend.part.tfidf.run(texts), langs)
    report: dict[str, Any] = {"model": str(args.model), "weight": w, "runs": {}}
    for token in args.cjk_weights.split(","):
        wc = float(token)
        for method in ("pooled", "cjk-thresholds", "cjk-platt", "cjk-max"):
            logits: dict[str, Arr] = {}
            cjk: dict[str, Arr] = {}
            for name, (t, f, langs) in parts.items():
                cjk[name] = np.isin(langs, CJK)
                mine = np.maximum(t, f) if method == "cjk-max" else t + wc * f
                logits[name] = np.where(cjk[name][:, None], mine, t + w * f)
            val_texts, val_y = sets["val"]
            cal = fit_calibration(logits["val"], val_y, manifest.labels)
            pooled = manifest.model_copy(update={"calibration": cal})
            cal_cjk = fit_calibration(logits["val"][cjk["val"]], val_y[cjk["val"]], manifest.labels)

            probs: dict[str, Arr] = {}
            for name in sets:
                probs[name] = calibrate(logits[name], pooled)
                if method == "cjk-platt":
                    c = cjk[name]
                    probs[name][c] = apply_calibration(logits[name][c], cal_cjk, manifest.labels)
            p_val = probs["val"]
            main_m = _thresholds(cfg, pooled, p_val, val_y, val_texts)
            own = cjk["val"]
            own_texts = [t for t, c in zip(val_texts, own, strict=True) if c]
            cjk_m = _thresholds(cfg, pooled, p_val[own], val_y[own], own_texts)
            rows: dict[str, Any] = {}
            for name, (texts, y) in sets.items():
                p = probs[name]
                codes = decision_codes(p, texts, main_m)
                if method == "cjk-thresholds":
                    codes = np.where(cjk[name], decision_codes(p, texts, cjk_m), codes)
                rows[name] = _summary(codes, y)
                if name in ("val", "test"):
                    langs = parts[name][2]
                    for lang in CJK:
                        idx = langs == lang
                        rows[f"{name}/{lang}"] = _summary(codes[idx], y[idx])
            key = f"{method}" if method == "cjk-max" else f"{method}, cjk w {token}"
            if method == "cjk-max" and key in report["runs"]:
                continue
            report["runs"][key] = rows
            print(key, json.dumps({k: v["recall"] for k, v in rows.items()}), flush=True)
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| method | set | n | any-label recall | flag precision | review rate |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for key, rows in report["runs"].items():
        for name, m in rows.items():
            lines.append(
                f"| {key} | {name} | {m['n']} | {m['recall']} | {m['flag_precision']} | "
                f"{m['review_rate']} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
