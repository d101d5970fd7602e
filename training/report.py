"""The evaluation figures of a training run and the report written from them.

`evaluate_sets` scores every evaluation set (validation, test, real-world files) with a backend;
`write_report` turns the figures into `report.md` with plots and `metrics.json`, which the model
card and MLflow carry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from serving.backends import Backend
from serving.contract.artifact import Manifest
from serving.contract.decide import calibrate, review_ceilings, with_review_settings
from training.evaluate import (
    compute_metrics,
    format_metrics_table,
    format_per_label,
    metrics_by_source,
    write_plots,
)

if TYPE_CHECKING:
    from training.pipeline import Packaged


def evaluate_sets(
    backend: Backend,
    manifest: Manifest,
    sets: dict[str, tuple[list[str], NDArray[np.int64], list[str]]],
) -> tuple[dict[str, Any], dict[str, NDArray[np.float64]]]:
    """Metrics and calibrated probabilities of `backend` on every evaluation set."""
    metrics: dict[str, Any] = {}
    probs: dict[str, NDArray[np.float64]] = {}
    for name, (texts, y, sources) in sets.items():
        p = calibrate(backend.logits(texts), manifest)
        m = compute_metrics(p, y, texts, manifest)
        if any(sources):
            m["by_source"] = metrics_by_source(p, y, texts, sources, manifest)
        metrics[name] = m
        probs[name] = p
    return metrics, probs


def vocabulary_line(info: dict[str, Any]) -> str:
    """The report's sentence on the characters added to the vocabulary and where they started."""
    line = f"Added {info['added_tokens']} Chinese/Japanese characters to the vocabulary"
    vm = info.get("vocab_mapping")
    if vm:
        line += (
            f"; their rows start from `{vm['from']}`, mapped by a ridge fit on "
            f"{vm['anchors']} shared words (held-out nearest-word accuracy "
            f"{vm['held_out_nearest']:.3f}; {vm['unknown_to_source']} unknown to it "
            "start from [UNK])"
        )
    else:
        line += "; their rows start from [UNK]"
    return line + "."


def time_budget_line(info: dict[str, Any]) -> str:
    """The report's warning for a run that `train.max_minutes` stopped before its last epoch."""
    return (
        f"\n**Stopped by the time budget** after {info['epochs_run']} of "
        f"{info['epochs_planned']} epochs (`train.max_minutes`): this model depends on the "
        "machine's speed and is not what the same settings give on a faster or idle machine."
    )


def review_ceiling_table(
    manifest: Manifest,
    probs: dict[str, NDArray[np.float64]],
    sets: dict[str, tuple[list[str], NDArray[np.int64], list[str]]],
) -> list[str]:
    """The report's table of what each stored review ceiling gives on every evaluation set.

    Each cell is any-label recall / review rate with the thresholds `--review-ceiling` would
    use (the model's own budget); empty for a model that stores one ceiling.
    """
    ceilings = review_ceilings(manifest)
    if len(ceilings) < 2 or manifest.review_path is None:
        return []
    in_use = manifest.review_path.review_ceiling
    names = list(probs)
    lines = [
        "",
        "### Review ceilings",
        "",
        "Any-label recall / review rate with each review ceiling the model stores "
        "(`--review-ceiling` on serve, score and evaluate). No label at or above the ceiling is "
        "cleared; below it the review band is searched on validation from each ceiling, so the "
        "review rate mostly, not always, falls as the ceiling rises.",
        "",
        "| ceiling | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for ceiling in ceilings:
        m = with_review_settings(manifest, ceiling=ceiling)
        cells = []
        for name in names:
            texts, y, _ = sets[name]
            figures = compute_metrics(probs[name], y, texts, m)
            rec = figures["any_label"]["recall"]
            cells.append(f"{'n/a' if rec is None else f'{rec:.3f}'} / {figures['review_rate']:.3f}")
        mark = " (in use)" if ceiling == in_use else ""
        lines.append(f"| {ceiling:g}{mark} | " + " | ".join(cells) + " |")
    return lines


def write_report(
    report_dir: Path,
    main: Packaged,
    info: dict[str, Any],
    results: dict[str, dict[str, dict[str, Any]]],
    probs: dict[str, NDArray[np.float64]],
    sets: dict[str, tuple[list[str], NDArray[np.int64], list[str]]],
) -> str:
    """Write `report.md` (figures, per-label tables, plots) and `metrics.json`; return the text."""
    m = main.manifest
    parts = [
        f"Model `{m.name}` {m.version} ({m.kind}), taxonomy {m.taxonomy_version}.",
        "",
        "### Headline figures",
        "",
        format_metrics_table(results),
        "",
    ]
    if "train_seconds" in info:
        parts.append(
            f"Training time {info['train_seconds']} s"
            + (
                f", {info['train_items_per_second']} items/s, best epoch {info['best_epoch']}"
                if "best_epoch" in info
                else ""
            )
            + f". Validation ECE before calibration {info['val.ece_before']:.4f}, "
            f"after {info['val.ece_after']:.4f}."
        )
    if info.get("stopped_by_time_budget"):
        parts.append(time_budget_line(info))
    if info.get("added_tokens"):
        parts.append(vocabulary_line(info))
    if m.onnx_agreement:
        parts.append(f"int8 ONNX vs torch on validation: {json.dumps(m.onnx_agreement)}.")
    if m.int8_guard is not None:
        g = m.int8_guard
        parts.append(
            f"int8 guard: items whose decision could change within {g.margin} (calibrated logit) "
            f"are re-scored with fp32; on validation {json.dumps(g.validation)}."
        )
    parts += review_ceiling_table(m, probs, sets)
    for set_name, by_model in results.items():
        if set_name == "val":
            continue
        metrics = by_model[m.kind]
        parts += ["", f"### {set_name} ({m.kind}), per label", "", format_per_label(metrics)]
        if "by_source" in metrics:
            parts += [
                "",
                "| source | n | macro F1 | any-label recall | review rate |",
                "|---|---:|---:|---:|---:|",
            ]
            for src, sm in metrics["by_source"].items():
                rec = sm["any_label"]["recall"]
                parts.append(
                    f"| {src} | {sm['n']} | {sm['macro_f1']:.3f} | "
                    f"{'n/a' if rec is None else f'{rec:.3f}'} | {sm['review_rate']:.3f} |"
                )
        safe = set_name.replace("/", "_")
        for plot in write_plots(
            probs[set_name], sets[set_name][1], m.labels, metrics, report_dir, safe
        ):
            parts.append(f"![{plot.stem}]({plot.name})")
    text = "\n".join(parts) + "\n"
    (report_dir / "report.md").write_text(f"# Evaluation report\n\n{text}", encoding="utf-8")
    (report_dir / "metrics.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    return text
