"""How to cut int8 batches on one-thread sessions (issue 14's API target).

The API's micro-batcher hands the backend whatever requests arrived together: a random mix of
short titles and long descriptions. Cut into length-sorted batches of 16, such a mix pads to
about twice its tokens (a batch runs at its longest member's length), while the bulk scorer,
sorting thousands of rows at once, pads almost nothing. This script measures, on one one-thread
int8 session of a trained artifact:

1. the cost of a run of k items of L tokens (ms per run and microseconds per real token);
2. random request mixes of n items, as the API sees them, cut both ways: `length_sorted_batches`
   (fixed batches of 16, the old rule) and `padding_aware_batches` (the rule `OnnxBackend`
   uses); padded tokens over real tokens, and ms per item, the two rules interleaved;
3. the same on the whole listing set at once, as the bulk scorer sees it.

    .venv/bin/python bench/batching.py --model models/dualscreen --out bench/batching.json

Timings are medians of interleaved repeats; on a shared machine compare rules within one run.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

from common import ROOT, load_listings

from serving.backends.batching import length_sorted_batches, padding_aware_batches
from serving.backends.onnx import POOLED_BATCH, POOLED_TOKENS, RUN_COST, OnnxBackend
from serving.predictor import Predictor


def _time(fn: Any, seconds: float) -> float:
    """Median ms of repeated calls of `fn` over about `seconds`."""
    fn()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def _cuts(rule: str, lengths: list[int]) -> list[list[int]]:
    if rule == "fixed":
        batches = length_sorted_batches(lengths, POOLED_BATCH)
    else:
        batches = iter(padding_aware_batches(lengths, POOLED_BATCH, POOLED_TOKENS, RUN_COST))
    return [[int(i) for i in b] for b in batches]


def _padded(cuts: list[list[int]], lengths: list[int]) -> int:
    return sum(len(b) * max(lengths[i] for i in b) for b in cuts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=ROOT / "models/dualscreen")
    parser.add_argument("--mixes", type=int, default=60, help="random request mixes per size")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    backend = OnnxBackend(
        args.model, predictor.manifest, "model.int8.onnx", threads=1, guard=False, pooled=True
    )
    texts = [predictor.build(i).text for i in load_listings()]
    ids = backend.encode(texts)
    lengths = [len(i) for i in ids]
    result: dict[str, Any] = {
        "model": str(args.model),
        "items": len(ids),
        "mean_tokens": round(statistics.mean(lengths), 1),
        "rule": {"max_items": POOLED_BATCH, "token_budget": POOLED_TOKENS, "run_cost": RUN_COST},
    }

    grid = {}
    for k in (1, 4, 16):
        for length in (16, 32, 64, 128):
            rows = [[101] + [2000 + j % 500 for j in range(length - 2)] + [102]] * k
            ms = _time(lambda rows=rows: backend._run(rows), 0.5)
            grid[f"{k}x{length}"] = {
                "ms": round(ms, 3),
                "us_per_token": round(1000 * ms / k / length),
            }
    result["run_cost"] = grid

    rng = random.Random(0)
    mixes: dict[str, Any] = {}
    for n in (4, 16, 32):
        per_rule: dict[str, list[float]] = {"fixed": [], "padding_aware": []}
        padded = {"fixed": 0, "padding_aware": 0}
        real = 0
        for _ in range(args.mixes):
            pick = rng.sample(range(len(ids)), n)
            mix_ids = [ids[i] for i in pick]
            mix_len = [lengths[i] for i in pick]
            real += sum(mix_len)
            for rule in per_rule:
                cuts = _cuts(rule, mix_len)
                padded[rule] += _padded(cuts, mix_len)

                def run(cuts: list[list[int]] = cuts, mix_ids: list[list[int]] = mix_ids) -> None:
                    for b in cuts:
                        backend._run([mix_ids[i] for i in b])

                per_rule[rule].append(_time(run, 0.0) / n)
        mixes[str(n)] = {
            rule: {
                "padded_over_real": round(padded[rule] / real, 3),
                "ms_per_item": round(statistics.median(v), 3),
            }
            for rule, v in per_rule.items()
        }
        fixed, aware = (mixes[str(n)][r]["ms_per_item"] for r in ("fixed", "padding_aware"))
        mixes[str(n)]["speedup"] = round(fixed / aware, 3)
    result["request_mixes"] = mixes

    whole: dict[str, Any] = {}
    for rule in ("fixed", "padding_aware", "fixed", "padding_aware"):
        cuts = _cuts(rule, lengths)
        started = time.perf_counter()
        for b in cuts:
            backend._run([ids[i] for i in b])
        ms = (time.perf_counter() - started) * 1000 / len(ids)
        entry = whole.setdefault(rule, {"padded_over_real": 0.0, "ms_per_item": []})
        entry["padded_over_real"] = round(_padded(cuts, lengths) / sum(lengths), 3)
        entry["ms_per_item"].append(round(ms, 3))
    result["whole_set"] = whole
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
