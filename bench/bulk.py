"""Bulk scoring benchmark: naive pipeline vs the scorer, percent of the int8 limit, flat memory.

    .venv/bin/python bench/bulk.py [--model models/dualscreen] [--rows-small 10000]
                                   [--rows-large 1000000] [--memory-model models/dualscreen-tfidf]

1. Same texts, same run: a transformers `pipeline("text-classification")` loop over single items
   on the torch model (the naive way), and the local engine with `onnx-int8` (in process).
2. The int8 limit: measured int8 GEMM rate / MiniLM FLOPs at the measured mean token length.
3. Memory: `dualscreen score` on a synthetic 10,000-row and 1,000,000-row CSV (peak RSS of the
   process). The large file is scored with the fast TF-IDF model by default, since memory depends
   on the streaming pipeline, not on the model; pass --memory-model to use another.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, load_listings, mean_tokens
from limits import int8_gemm_gops, minilm_flops
from methods import naive_pipeline


def naive_rate(model: Path, texts: list[str]) -> float:
    pipe = naive_pipeline(model)
    for t in texts[:10]:
        pipe(t)
    started = time.perf_counter()
    for t in texts:
        pipe(t)
    return len(texts) / (time.perf_counter() - started)


def scorer_rate(model: Path, texts: list[str]) -> tuple[float, float]:
    from serving.predictor import Predictor

    predictor = Predictor.load(model)
    predictor.probabilities(texts[:32])
    tokens = mean_tokens(predictor, texts)
    started = time.perf_counter()
    predictor.predict_texts(texts)
    return len(texts) / (time.perf_counter() - started), tokens


def make_catalog(path: Path, rows: int, listings: list[dict[str, str]]) -> Path:
    if path.exists():
        return path
    rng = random.Random(7)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "title", "description", "brand", "seller_category"])
        for i in range(rows):
            r = listings[rng.randrange(len(listings))]
            writer.writerow(
                [f"sku-{i:08d}", r["title"], r["description"], r["brand"], r["seller_category"]]
            )
    return path


def peak_rss_of_score(model: Path, src: Path, out: Path) -> dict[str, float]:
    cmd = [
        sys.executable,
        "-m",
        "dualscreen.cli",
        "score",
        str(src),
        "-o",
        str(out),
        "--model",
        str(model),
        "--overwrite",
        "--json-summary",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    peak = 0.0
    status = Path(f"/proc/{proc.pid}/status")
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
        time.sleep(0.2)
    summary = json.loads(proc.stdout.read() if proc.stdout else "{}")
    if proc.returncode != 0 or not summary.get("scored"):
        raise SystemExit(
            f"dualscreen score exited {proc.returncode} and scored {summary.get('scored', 0)} "
            f"rows of {src}: the memory figure would be meaningless"
        )
    return {
        "peak_rss_mb": round(peak, 1),
        "rows": summary.get("scored", 0),
        "rows_per_s": summary.get("rows_per_second", 0.0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "dualscreen")
    parser.add_argument("--naive-items", type=int, default=400)
    parser.add_argument("--rows-small", type=int, default=10_000)
    parser.add_argument("--rows-large", type=int, default=1_000_000)
    parser.add_argument("--memory-model", type=Path, default=ROOT / "models" / "dualscreen-tfidf")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true", help="only the memory figures")
    args = parser.parse_args()
    listings = load_listings()
    if args.memory_only:
        print(json.dumps(memory_figures(args, listings), indent=2))
        return
    from serving.contract.text import build_text

    texts = [build_text(**r).text for r in listings]
    random.Random(3).shuffle(texts)
    sample = texts[:2000]
    naive = naive_rate(args.model, sample[: args.naive_items])
    fast, tokens = scorer_rate(args.model, sample)
    gops = int8_gemm_gops()
    limit = gops * 1e9 / minilm_flops(tokens)
    result = {
        "texts": len(sample),
        "mean_tokens": round(tokens, 1),
        "naive_items_per_s": round(naive, 1),
        "scorer_int8_items_per_s": round(fast, 1),
        "speedup_vs_naive": round(fast / naive, 2),
        "int8_gemm_gops": round(gops, 1),
        "int8_limit_items_per_s": round(limit, 1),
        "percent_of_int8_limit": round(100 * fast / limit, 1),
    }
    if not args.skip_memory:
        result.update(memory_figures(args, listings))
    print(json.dumps(result, indent=2))


def memory_figures(args: argparse.Namespace, listings: list[dict[str, str]]) -> dict[str, object]:
    """Peak RSS of `dualscreen score` on the small and the large synthetic catalog."""
    work = ROOT / "var" / "bench"
    small = make_catalog(work / f"catalog_{args.rows_small}.csv", args.rows_small, listings)
    large = make_catalog(work / f"catalog_{args.rows_large}.csv", args.rows_large, listings)
    result: dict[str, object] = {"model": str(args.memory_model)}
    result["memory_small"] = s = peak_rss_of_score(args.memory_model, small, work / "small.csv")
    result["memory_large"] = b = peak_rss_of_score(args.memory_model, large, work / "large.csv")
    result["memory_growth"] = round(b["peak_rss_mb"] / s["peak_rss_mb"] - 1, 3)
    for leftover in work.glob("*.csv*"):
        if leftover.name.startswith(("small", "large")):
            leftover.unlink()
    return result


if __name__ == "__main__":
    main()
