"""`make bench`: every method on the same texts, limits measured in the same run, one table.

Writes bench/results.md (and bench/results.json). Each method runs in its own process (its own
peak memory), 3 timed passes (median, min, max). Quality is macro F1 and any-label recall of the
method's decisions on the labelled texts (real-world files when present, plus the corpus test
split). Also: the cascade on the real retail file alone (its own naive anchor), the API load
figures (bench/api_load.py), the bulk scorer's profile split, peak memory of `dualscreen score`
on a 10,000- and a 1,000,000-row synthetic catalog (bench/bulk.py; `--skip-memory` skips it), and
the default model's training throughput.
"""

from __future__ import annotations

import argparse
import cProfile
import csv
import json
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np
from common import ROOT, mean_tokens
from limits import fp32_gemm_gflops, int8_gemm_gops, minilm_flops
from methods import METHODS, labelled_texts

BENCH = ROOT / "bench"


def cpu_model() -> str:
    """The CPU's name and the vector extensions int8 speed depends on (percentages of the int8
    limit compare only between machines with the same ones: VNNI triples int8 GEMM)."""
    name, flags = platform.processor(), set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f in flags]
    return f"{name} ({', '.join(isa) or 'no AVX2'})"


def quality(probs: np.ndarray, y: np.ndarray, texts: list[str], model: str) -> dict[str, float]:
    from serving.contract.artifact import read_manifest
    from training.evaluate import compute_metrics

    m = compute_metrics(probs, y, texts, read_manifest(model))
    return {
        "macro_f1": m["macro_f1"],
        "any_label_recall": m["any_label"]["recall"],
        "review_rate": m["review_rate"],
    }


def profile_bulk(model: Path, rows: list[dict[str, str]]) -> dict[str, float]:
    from serving.batch.score import ScoreOptions, Scorer
    from serving.predictor import Predictor

    work = Path(tempfile.mkdtemp(prefix="dsbench-"))
    src = work / "in.csv"
    with open(src, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", *rows[0]])
        writer.writeheader()
        for i, r in enumerate(rows):
            writer.writerow({"id": f"r{i}", **r})
    scorer = Scorer(Predictor.load(model))
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.runcall(scorer.score_file, ScoreOptions(src, work / "out.csv"))
    total = time.perf_counter() - started
    stats = pstats.Stats(profiler)
    buckets = {
        "reading": 0.0,
        "text building": 0.0,
        "tokenisation": 0.0,
        "inference": 0.0,
        "writing": 0.0,
    }
    for (filename, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        if "readers.py" in filename or name in ("reader", "_csv.reader") or "csv" in name:
            buckets["reading"] += tottime
        elif "text.py" in filename or "unicodedata" in name:
            buckets["text building"] += tottime
        elif "encode_batch" in name or "tokenizers" in filename:
            buckets["tokenisation"] += tottime
        elif (
            (name == "run" and "onnxruntime" in filename)
            or "session" in name
            or ("acquire" in name or name == "wait")
        ):
            # int8 inference runs in worker threads that cProfile does not see; the main
            # thread's time blocked on them (lock acquire / wait) is inference time.
            buckets["inference"] += tottime
        elif "writers.py" in filename or "fsync" in name or name == "write":
            buckets["writing"] += tottime
    buckets["other (decisions, checkpoints, Python)"] = max(0.0, total - sum(buckets.values()))
    return {k: round(100 * v / total, 1) for k, v in buckets.items()} | {
        "rows": len(rows),
        "seconds": round(total, 1),
    }


def measure(method: str, only: str | None = None) -> dict:
    """Run bench/methods.py for one method in its own process and return its figures."""
    out = Path(tempfile.mktemp(suffix=".json"))
    print(f"benchmarking {method}{' on ' + only if only else ''} ...", file=sys.stderr)
    cmd = [sys.executable, str(BENCH / "methods.py"), "--method", method, "--out", str(out)]
    subprocess.run(cmd + (["--only", only] if only else []), check=True, cwd=ROOT)
    result = json.loads(out.read_text())
    out.unlink()
    return result


def retail_cascade() -> dict | None:
    """The cascade target on the real retail file: items/s vs naive, recall vs the transformer."""
    texts, y, _ = labelled_texts(None, "retail")
    if not texts:
        return None
    rows = {}
    for method in ("naive", "onnx-int8", "cascade"):
        r = measure(method, "retail")
        q = quality(np.array(r["probs"]), y, texts, r["manifest"]) if "probs" in r else {}
        rows[method] = {"items_per_s": round(r["items_per_s"], 1), **q}
        if method == "cascade":
            rows[method]["router"] = r.get("cascade_router")
            rows[method]["cleared_share"] = round(r.get("cleared_share", 0.0), 4)
    naive = rows["naive"]["items_per_s"]
    for r in rows.values():
        r["x_naive"] = round(r["items_per_s"] / naive, 2)
    return {"texts": len(texts), "methods": rows}


def memory(skip: bool) -> dict | None:
    """bench/bulk.py's memory part: peak RSS of `dualscreen score` on 10k and 1M rows."""
    if skip:
        return None
    print("memory: dualscreen score on 10,000 and 1,000,000 rows ...", file=sys.stderr)
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bulk.py"), "--memory-only"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-500:]}
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--skip-memory", action="store_true", help="skip the 1M-row memory run")
    args = parser.parse_args()
    model = ROOT / "models" / "dualscreen"
    texts, y, _ = labelled_texts(None)
    # The limits are the best rates this machine reaches, so they are measured before and after
    # the methods and the higher reading counts: one reading of the int8 GEMM came out at half
    # the rate of three readings taken minutes later (session 16).
    gemm_before = (fp32_gemm_gflops(), int8_gemm_gops())
    results = {method: measure(method) for method in METHODS}
    retail = retail_cascade()
    mem = memory(args.skip_memory)
    from serving.predictor import Predictor

    predictor = Predictor.load(model)
    tokens = mean_tokens(predictor, texts)
    flops = minilm_flops(tokens)
    gemm_after = (fp32_gemm_gflops(), int8_gemm_gops())
    fp32 = max(gemm_before[0], gemm_after[0])
    int8 = max(gemm_before[1], gemm_after[1])
    limits = {"fp32": fp32 * 1e9 / flops, "int8": int8 * 1e9 / flops}
    naive = results["naive"]["items_per_s"]
    rows = []
    for method, r in results.items():
        limit_kind = "int8" if method in ("onnx-int8", "onnx-int8-fast", "cascade") else "fp32"
        q = quality(np.array(r["probs"]), y, texts, r["manifest"]) if "probs" in r else {}
        rows.append(
            {
                "method": method,
                "items_per_s": round(r["items_per_s"], 1),
                "min": round(r["min"], 1),
                "max": round(r["max"], 1),
                "x_naive": round(r["items_per_s"] / naive, 2),
                "pct_limit": None
                if method == "tfidf"
                else round(100 * r["items_per_s"] / limits[limit_kind], 1),
                "limit": limit_kind,
                "peak_rss_mb": round(r.get("peak_rss_mb", 0), 0),
                **{k: r[k] for k in ("int8_graph", "guard_rescored_share") if k in r},
                **q,
            }
        )
    api = subprocess.run(
        [sys.executable, str(BENCH / "api_load.py")], capture_output=True, text=True, cwd=ROOT
    )
    api_figures = json.loads(api.stdout) if api.returncode == 0 else {"error": api.stderr[-500:]}
    from serving.contract.artifact import read_manifest

    training = read_manifest(model).metrics.get("training", {})
    train_rate = training.get("train_items_per_second")
    train_pct = round(100 * train_rate * 3 * flops / (fp32 * 1e9), 1) if train_rate else None
    profile_rows = [
        {k: r[k] for k in ("title", "description", "brand", "seller_category")}
        for r in (
            json.loads(line)
            for line in (ROOT / "data/corpus/corpus.jsonl").read_text().splitlines()
        )
    ][:3000]
    split = profile_bulk(model, profile_rows)
    versions = {
        p: metadata.version(p)
        for p in ("torch", "transformers", "onnxruntime", "numpy", "scikit-learn")
    }
    payload = {
        "machine": {
            "cpu": cpu_model(),
            "cores": __import__("os").cpu_count(),
            "python": platform.python_version(),
            **versions,
        },
        "texts": len(texts),
        "mean_tokens": round(tokens, 1),
        "gemm": {
            "fp32_gflops": round(fp32, 1),
            "int8_gops": round(int8, 1),
            "readings_before_after": [
                [round(v, 1) for v in gemm_before],
                [round(v, 1) for v in gemm_after],
            ],
        },
        "limits_items_per_s": {k: round(v, 1) for k, v in limits.items()},
        "methods": rows,
        "retail_cascade": retail,
        "memory": mem,
        "api": api_figures,
        "profile_split_pct": split,
        "training": {
            "items_per_s": train_rate,
            "pct_fp32_limit": train_pct,
            "seconds": training.get("train_seconds"),
        },
    }
    (BENCH / "results.json").write_text(json.dumps(payload, indent=2))
    (BENCH / "results.md").write_text(render(payload))
    print(render(payload))


def render(p: dict) -> str:
    m = p["machine"]
    lines = [
        f"# Benchmark results ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; Python {m['python']}, torch "
        f"{m['torch']}, transformers {m['transformers']}, onnxruntime {m['onnxruntime']}, "
        f"numpy {m['numpy']}, scikit-learn {m['scikit-learn']}.",
        "",
        f"{p['texts']} labelled texts (real-world files when present + corpus test split), "
        f"mean {p['mean_tokens']} tokens. Measured GEMM (the higher of readings before and "
        f"after the methods): fp32 {p['gemm']['fp32_gflops']} "
        f"GFLOP/s, int8 {p['gemm']['int8_gops']} GOP/s; limits at the mean length: fp32 "
        f"{p['limits_items_per_s']['fp32']} items/s, int8 {p['limits_items_per_s']['int8']}"
        " items/s.",
        "",
        "| method | items/s (median) | min-max | x naive | % of limit | peak RSS MB | "
        "macro F1 | any-label recall | review rate |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in p["methods"]:
        pct = "n/a" if r["pct_limit"] is None else f"{r['pct_limit']} ({r['limit']})"
        lines.append(
            f"| {r['method']} | {r['items_per_s']} | {r['min']}-{r['max']} | "
            f"{r['x_naive']} | {pct} | {r['peak_rss_mb']:.0f} | "
            f"{r.get('macro_f1', 'n/a')} | {r.get('any_label_recall', 'n/a')} | "
            f"{r.get('review_rate', 'n/a')} |"
        )
    int8 = [r for r in p["methods"] if "int8_graph" in r]
    if int8:
        lines += [
            "",
            "int8 graph (manifest `int8`; static = activation scales fixed from calibration "
            "data, batched): "
            + ", ".join(f"{r['method']} {r['int8_graph']}" for r in int8)
            + ". Guard re-score share (items re-scored in fp32 per item scored): "
            + ", ".join(
                f"{r['method']} {100 * r['guard_rescored_share']:.1f} %"
                for r in int8
                if "guard_rescored_share" in r
            )
            + ".",
        ]
    lines += [
        "",
        'naive = transformers `pipeline("text-classification")` over single items '
        "(torch fp32; its quality equals the torch row). onnx-int8 is the default backend: "
        "int8, with the items whose decision int8 error could change re-scored in fp32 (the "
        "int8 guard); onnx-int8-fast is int8 alone.",
        "",
        "## Cascade on the real retail file",
        "",
        "```json",
        json.dumps(p.get("retail_cascade"), indent=2),
        "```",
        "",
        "## Memory of `dualscreen score` (bench/bulk.py, TF-IDF model; peak RSS)",
        "",
        "```json",
        json.dumps(p.get("memory"), indent=2),
        "```",
        "",
        "## API (bench/api_load.py)",
        "",
        (
            f"`dualscreen serve --workers {p['api'].get('workers')}`; API items/s at 32 clients "
            f"over bulk items/s ({p['api'].get('headline_load')}): "
            f"**{p['api'].get('api_vs_bulk_headline')}** (target 0.80)."
        ),
        "",
        "```json",
        json.dumps(p["api"], indent=2),
        "```",
        "",
        "## Bulk scorer profile (share of wall time)",
        "",
        "```json",
        json.dumps(p["profile_split_pct"], indent=2),
        "```",
        "",
        "## Training",
        "",
        f"Default run: {p['training']['items_per_s']} items/s (forward + backward), "
        f"{p['training']['pct_fp32_limit']} % of the fp32 limit (3x forward FLOPs), "
        f"{p['training']['seconds']} s of training.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
