"""Score the benchmark texts with one method and print its figures as JSON (run in a subprocess
by run_all.py, so each method's peak memory is its own).

    .venv/bin/python bench/methods.py --method onnx-int8 [--runs 3] [--only retail]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, rss_mb

METHODS = ("naive", "torch", "onnx", "onnx-int8-fast", "onnx-int8", "cascade", "tfidf")


def labelled_texts(
    limit: int | None, only: str | None = None
) -> tuple[list[str], np.ndarray, list[str]]:
    """Real-world files when present plus the corpus test split: texts, truth, set names.

    `only` keeps one set (a real-world file's stem, e.g. "retail", or "corpus_test").
    """
    from serving.contract.taxonomy import load_taxonomy
    from training.evaluate import load_labelled

    taxonomy = load_taxonomy(ROOT / "data" / "taxonomy.yaml")
    texts: list[str] = []
    ys = []
    names: list[str] = []
    realworld = ROOT.parent / "shared" / "realworld"
    paths = sorted(realworld.glob("*.jsonl")) if realworld.is_dir() else []
    for path in paths:
        data = load_labelled(path, taxonomy)
        texts += data.texts
        ys.append(data.y)
        names += [path.stem] * len(data.texts)
    test = [
        json.loads(line) for line in (ROOT / "data/corpus/corpus.jsonl").read_text().splitlines()
    ]
    from training.corpus import text_of

    test = [r for r in test if r["split"] == "test"]
    texts += [text_of(r) for r in test]
    ys.append(np.array([[1 if lb in r["labels"] else 0 for lb in taxonomy.labels] for r in test]))
    names += ["corpus_test"] * len(test)
    y = np.vstack(ys)
    if only is not None:
        keep = [i for i, n in enumerate(names) if n == only]
        texts, y, names = [texts[i] for i in keep], y[keep], [names[i] for i in keep]
    if limit:
        idx = np.random.default_rng(0).permutation(len(texts))[:limit]
        return [texts[i] for i in idx], y[idx], [names[i] for i in idx]
    return texts, y, names


def naive_pipeline(model: Path) -> Any:
    """The anchor: transformers `pipeline("text-classification")` on the torch model."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import pipeline
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    return pipeline(
        "text-classification",
        model=str(model),
        tokenizer=str(model),
        device="cpu",
        top_k=None,
        function_to_apply="sigmoid",
        truncation=True,
        max_length=128,
    )


def run(method: str, model: Path, tfidf: Path, texts: list[str], runs: int) -> dict:
    from serving.contract.decide import calibrate

    if method == "naive":
        pipe = naive_pipeline(model)
        label_order = [pipe.model.config.id2label[i] for i in range(pipe.model.config.num_labels)]

        def score(batch: list[str]) -> np.ndarray:
            out = []
            for t in batch:
                got = {d["label"]: d["score"] for d in pipe(t)[0]}
                out.append([got[lb] for lb in label_order])
            return np.array(out)

        probs_fn = None
    else:
        from serving.predictor import Predictor

        predictor = Predictor.load(
            tfidf if method == "tfidf" else model, backend=None if method == "tfidf" else method
        )

        def score(batch: list[str]) -> np.ndarray:
            return predictor.backend.logits(batch)

        def probs_fn(batch: list[str]) -> np.ndarray:
            return calibrate(predictor.backend.logits(batch), predictor.manifest)

    score(texts[:20])
    guarded = getattr(predictor.backend, "second", predictor.backend) if probs_fn else None
    if guarded is not None and hasattr(guarded, "rescored"):
        guarded.rescored = 0
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        score(texts)
        rates.append(len(texts) / (time.perf_counter() - started))
    result = {
        "method": method,
        "items_per_s": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "runs": runs,
        "n": len(texts),
        **rss_mb(),
    }
    if method == "cascade":
        # Which first stage the artifact carries (tfidf "any_label" or "static"), and the share
        # of items it cleared over the timed passes.
        backend: Any = predictor.backend
        seen = backend.cleared + backend.forwarded
        result["cascade_router"] = backend.stage.router
        result["cleared_share"] = backend.cleared / seen if seen else 0.0
    if guarded is not None and hasattr(guarded, "rescored") and method in ("onnx-int8", "cascade"):
        # Items re-scored in fp32 by the int8 guard, per item scored (cascade: of all items).
        result["guard_rescored_share"] = round(guarded.rescored / (runs * len(texts)), 4)
    if method in ("onnx-int8", "onnx-int8-fast", "cascade"):
        int8 = predictor.manifest.int8
        result["int8_graph"] = "dynamic (unrecorded)" if int8 is None else int8.method
    if probs_fn is not None:
        result["probs"] = probs_fn(texts).tolist()
        result["manifest"] = str(tfidf if method == "tfidf" else model)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "dualscreen")
    parser.add_argument("--tfidf", type=Path, default=ROOT / "models" / "dualscreen-tfidf")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--only", default=None, help="one set: retail, components, corpus_test")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    texts, _, _ = labelled_texts(args.limit, args.only)
    if args.method == "naive":
        texts = texts[: min(len(texts), 600)]
    args.out.write_text(json.dumps(run(args.method, args.model, args.tfidf, texts, args.runs)))


if __name__ == "__main__":
    main()
