"""Would blending the TF-IDF baseline into the transformer help? (issue 12)

A transformer run writes two artifacts: the transformer (models/dualscreen) and the TF-IDF
baseline fitted on the same training split (models/dualscreen-tfidf). This scores validation,
test (whole, zh, ja) and the real-world files with both, blends their raw logits as
`transformer + w * tfidf` for each w in --weights, then calibrates and cuts thresholds on
validation exactly as the pipeline does (`_calibrate_and_decide`) and reports the figures of
`dualscreen evaluate --json` (macro F1, any-label recall, flag precision, review rate). With
--cjk-weights, Chinese and Japanese texts get their own w (manifest `blend.weight_by_lang`). A
blended artifact is studied without its blend part.

Nothing is tuned on the real-world files: they are only scored. Validation chooses both the
calibration and the thresholds; which w to ship would also be chosen on validation (the
`val` rows). The transformer is scored with the fp32 ONNX graph. w = inf is the baseline alone.

    .venv/bin/python bench/blend.py --out bench/blend.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import labelled_sets  # noqa: E402

from serving.contract.decide import calibrate  # noqa: E402
from serving.contract.text import detect_lang  # noqa: E402
from serving.predictor import Predictor  # noqa: E402
from training.evaluate import compute_metrics  # noqa: E402
from training.pipeline import (  # noqa: E402
    CJK,
    _calibrate_and_decide,
    _identity_manifest,
    _mean_average_precision,
)

WEIGHTS = "0,0.5,1,1.5,2,inf"


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": m["n"],
        "macro_f1": m["macro_f1"],
        "recall": m["any_label"]["recall"],
        "flag_precision": m["any_label"]["flag_precision"],
        "review_rate": m["review_rate"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models/dualscreen")
    parser.add_argument("--baseline", type=Path, default=ROOT / "models/dualscreen-tfidf")
    parser.add_argument("--config", type=Path, default=ROOT / "training/configs/default.toml")
    parser.add_argument("--weights", default=WEIGHTS, help="comma-separated w values; inf allowed")
    parser.add_argument(
        "--cjk-weights",
        default="",
        help="comma-separated w values for Chinese and Japanese texts (detect_lang zh/ja); "
        "each is tried with every --weights value; empty: the same w for every text",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/blend.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    cfg, taxonomy, splits, info, sets = labelled_sets(args.config)
    test = splits["test"]
    langs = np.array(
        [str(r.get("lang") or detect_lang(t)) for r, t in zip(test.rows, test.texts, strict=True)]
    )
    transformer = Predictor.load(args.model, backend="onnx")
    baseline = Predictor.load(args.baseline)
    # A blended artifact: study its transformer alone (the blend part is the baseline again).
    inner = getattr(transformer.backend, "inner", transformer.backend)
    if transformer.manifest.corpus_hash != baseline.manifest.corpus_hash:
        raise SystemExit("the two artifacts were trained on different corpora")
    raw: dict[str, tuple[Any, Any]] = {}
    cjk: dict[str, Any] = {}
    for name, (texts, _) in sets.items():
        raw[name] = (
            inner.logits(texts),
            baseline.run(baseline.prepare_texts(texts).inputs),
        )
        cjk[name] = np.array([detect_lang(t) in CJK for t in texts])[:, None]
    report: dict[str, Any] = {
        "model": str(args.model),
        "baseline": str(args.baseline),
        "corpus_hash": info["corpus_hash"],
        "realworld": any(name.startswith("realworld/") for name in sets),
        "weights": {},
    }
    cjk_tokens = [c for c in args.cjk_weights.split(",") if c]
    pairs = [(w, c) for w in args.weights.split(",") for c in (cjk_tokens or [w])]
    for w_token, c_token in pairs:
        token = w_token if w_token == c_token else f"{w_token}/cjk {c_token}"
        w, wc = float(w_token), float(c_token)

        def blend(name: str, w: float = w, wc: float = wc) -> Any:
            t, f = raw[name]
            if math.isinf(w):
                return f
            return t + np.where(cjk[name], np.float32(wc), np.float32(w)) * f

        manifest = _identity_manifest(cfg, "transformer", taxonomy, "blend", info, "blend")
        manifest, _ = _calibrate_and_decide(cfg, manifest, blend("val"), splits["val"])
        rows: dict[str, Any] = {
            "val_mean_ap": round(_mean_average_precision(blend("val"), sets["val"][1]), 4)
        }
        for name, (texts, y) in sets.items():
            probs = calibrate(blend(name), manifest)
            rows[name] = _summary(compute_metrics(probs, y, texts, manifest))
            if name == "test":
                for lang in ("zh", "ja"):
                    idx = np.flatnonzero(langs == lang)
                    sub = [texts[i] for i in idx]
                    rows[f"test/{lang}"] = _summary(
                        compute_metrics(probs[idx], y[idx], sub, manifest)
                    )
        report["weights"][token] = rows
        print(
            token,
            rows["val_mean_ap"],
            json.dumps({k: v["macro_f1"] for k, v in rows.items() if k != "val_mean_ap"}),
            flush=True,
        )
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "| w | set | n | macro F1 | any-label recall | flag precision | review rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for token, rows in report["weights"].items():
        for name, m in rows.items():
            if name == "val_mean_ap":
                continue
            lines.append(
                f"| {token} | {name} | {m['n']} | {m['macro_f1']} | {m['recall']} | "
                f"{m['flag_precision']} | {m['review_rate']} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
