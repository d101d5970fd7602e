"""Compare transformer training settings on the same splits, without packaging or MLflow.

Each variant is a name and `--set` overrides of a config (default.toml unless --config). For each:
train as the pipeline does, calibrate and search thresholds on validation as the pipeline does,
then score the test split (whole and per language) and the real-world files with torch fp32
logits and report the same figures as `dualscreen evaluate --json` at the trained thresholds and
at review budget 5. No artifact is written: this chooses settings (base model, pooling, epochs,
learning rate); the chosen one is then trained with `dualscreen train` and measured with
bench/quality.py on the real artifact.

It runs on the CPU, or on a GPU when one is present (bf16 autocast), which is how the
multilingual model could be trained for full epochs at all (see bench/sweep.md).

    python bench/sweep.py --variant 'minilm-mean=model.pooling="mean"' --out bench/sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serving.contract.decide import calibrate, with_review_settings  # noqa: E402
from serving.contract.taxonomy import load_taxonomy  # noqa: E402
from serving.contract.text import detect_lang  # noqa: E402
from training.config import load_config  # noqa: E402
from training.evaluate import compute_metrics, load_labelled  # noqa: E402
from training.pipeline import (  # noqa: E402
    _calibrate_and_decide,
    _identity_manifest,
    _resolve,
    load_data,
)
from training.train import cfg_model_input, predict_logits, train_transformer  # noqa: E402

BUDGETS: tuple[float | None, ...] = (None, 5.0)


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {
        "n": m["n"],
        "macro_f1": m["macro_f1"],
        "recall": m["any_label"]["recall"],
        "flag_precision": m["any_label"]["flag_precision"],
        "review_rate": m["review_rate"],
    }


def run_variant(
    name: str, overrides: list[str], config: Path, realworld: Path | None
) -> dict[str, Any]:
    """Train one variant and evaluate it; every figure in one dict."""
    cfg = load_config(config, ["track.mlflow=false", *overrides])
    taxonomy = load_taxonomy(_resolve(cfg.data.taxonomy))
    splits, data_info = load_data(cfg, taxonomy)
    labels = taxonomy.labels
    train = splits["train"]
    result = train_transformer(
        cfg, train.rows, train.y, splits["val"].texts, splits["val"].y, labels
    )
    device = result.device
    model = result.model.to(device)
    reads = cfg_model_input(cfg)

    def logits(texts: list[str]) -> Any:
        return predict_logits(
            model,
            result.tokenizer,
            texts,
            cfg.model.max_tokens,
            device,
            model_input=reads,
            pooling=cfg.model.pooling,
        )

    manifest = _identity_manifest(cfg, "transformer", taxonomy, "sweep", data_info, name)
    manifest, _ = _calibrate_and_decide(cfg, manifest, logits(splits["val"].texts), splits["val"])
    test = splits["test"]
    sets: dict[str, tuple[list[str], Any, list[str]]] = {
        "test": (
            test.texts,
            test.y,
            [
                str(r.get("lang") or detect_lang(t))
                for r, t in zip(test.rows, test.texts, strict=True)
            ],
        )
    }
    if realworld is not None:
        for path in sorted(realworld.glob("*.jsonl")):
            got = load_labelled(path, taxonomy, max_chars=cfg.model.max_chars)
            sets[path.stem] = (got.texts, got.y, got.langs)
    out: dict[str, Any] = {
        "overrides": overrides,
        "device": device,
        "train_seconds": round(result.seconds, 1),
        "best_epoch": result.best_epoch,
        "history": result.history,
        "results": {},
    }
    for set_name, (texts, y, langs) in sets.items():
        raw = logits(texts)
        for budget in BUDGETS:
            m = with_review_settings(manifest, budget)
            probs = calibrate(raw, m)
            key = f"{set_name}@{'default' if budget is None else int(budget)}"
            out["results"][key] = _summary(compute_metrics(probs, y, texts, m))
            if set_name == "test" and budget is None:
                lang_arr = np.array(langs)
                for lang in ("zh", "ja"):
                    idx = np.flatnonzero(lang_arr == lang)
                    if len(idx):
                        sub = compute_metrics(probs[idx], y[idx], [texts[i] for i in idx], m)
                        out["results"][f"test-{lang}@default"] = _summary(sub)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--variant",
        action="append",
        required=True,
        help="name=override;override... (config --set syntax)",
    )
    parser.add_argument("--config", type=Path, default=ROOT / "training/configs/default.toml")
    parser.add_argument("--realworld", type=Path, default=ROOT.parent / "shared/realworld")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/sweep.json")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    realworld = args.realworld if args.realworld.is_dir() else None
    report: dict[str, Any] = {"machine": platform.node(), "variants": {}}
    try:
        import torch

        if torch.cuda.is_available():
            report["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        overrides = [o for o in rest.split(";") if o.strip()]
        started = time.perf_counter()
        try:
            got = run_variant(name, overrides, args.config, realworld)
        except Exception as exc:  # noqa: BLE001 - one failed variant must not lose the others
            got = {"overrides": overrides, "error": f"{type(exc).__name__}: {exc}"}
        got["wall_seconds"] = round(time.perf_counter() - started, 1)
        report["variants"][name] = got
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print(name, json.dumps(got.get("results", got.get("error")), indent=None), flush=True)


if __name__ == "__main__":
    main()
