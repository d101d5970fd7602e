"""Evaluate a model on any labelled file; write Markdown reports with plots.

Per-label precision, recall and F1 count a label as predicted when its calibrated probability is
at least 0.5 (a point classifier, comparable across models); PR-AUC uses the probabilities. The
routing figures use the model's own thresholds: `any_label.recall` is the share of items with any
label that were flagged or sent to review, `flag_precision` the share of flagged items that have a
label, `review_rate` the share of all items sent to people.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import Manifest
from serving.contract.decide import decision_codes
from serving.contract.readers import ColumnMapping, RejectedRow, read_records
from serving.contract.taxonomy import Taxonomy
from serving.contract.text import build_text_from_record, detect_lang
from training.calibrate import expected_calibration_error, reliability_curve


@dataclass
class LabelledSet:
    """Texts, a truth matrix, optional per-item sources, and each item's language."""

    name: str
    texts: list[str]
    y: NDArray[np.int64]
    sources: list[str]
    rejected: list[RejectedRow]
    langs: list[str] = field(default_factory=list)


LANGS = ("en", "zh", "ja", "mixed")


def load_labelled(
    path: Path,
    taxonomy: Taxonomy,
    mapping: ColumnMapping | None = None,
    max_chars: int = 2000,
    source_col: str = "source",
    fmt: str | None = None,
    lang_col: str = "lang",
    split: str | None = None,
) -> LabelledSet:
    """Read a labelled file in any supported format through the shared reader.

    Languages come from `lang_col` where a row has one of en/zh/ja/mixed, else from the text's
    script (`detect_lang`). `split` keeps only rows whose `split` column has that value.
    """
    mapping = mapping or ColumnMapping()
    texts: list[str] = []
    rows: list[list[int]] = []
    sources: list[str] = []
    rejected: list[RejectedRow] = []
    langs: list[str] = []
    for result in read_records(path, fmt=fmt, mapping=mapping, taxonomy=taxonomy):
        if isinstance(result, RejectedRow):
            rejected.append(result)
            continue
        if split is not None and str(result.data.get("split") or "") != split:
            continue
        text = build_text_from_record(result.data, mapping.text_cols, max_chars).text
        texts.append(text)
        lang = str(result.data.get(lang_col) or "")
        langs.append(lang if lang in LANGS else detect_lang(text))
        labels = set(result.labels or [])
        rows.append([1 if lb in labels else 0 for lb in taxonomy.labels])
        sources.append(str(result.data.get(source_col) or ""))
    y = np.array(rows, dtype=np.int64).reshape(len(rows), len(taxonomy.labels))
    return LabelledSet(path.stem, texts, y, sources, rejected, langs)


def _prf(pred: NDArray[np.bool_], truth: NDArray[np.bool_]) -> tuple[float, float, float]:
    tp = float((pred & truth).sum())
    fp = float((pred & ~truth).sum())
    fn = float((~pred & truth).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def pr_auc(p: NDArray[np.floating], y: NDArray[np.integer]) -> float | None:
    """Average precision; None when the label has no positives."""
    from sklearn.metrics import average_precision_score

    if int(np.sum(y)) == 0:
        return None
    return float(average_precision_score(y, p))


def compute_metrics(
    probs: NDArray[np.floating], y: NDArray[np.integer], texts: list[str], manifest: Manifest
) -> dict[str, Any]:
    """All evaluation figures for one labelled set (the `--json` object)."""
    labels = manifest.labels
    truth = np.asarray(y).astype(bool)
    pred = np.asarray(probs) >= 0.5
    per_label: dict[str, dict[str, Any]] = {}
    f1s = []
    for j, label in enumerate(labels):
        precision, recall, f1 = _prf(pred[:, j], truth[:, j])
        support = int(truth[:, j].sum())
        per_label[label] = {
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
            "pr_auc": _round(pr_auc(probs[:, j], y[:, j])),
            "support": support,
        }
        if support:
            f1s.append(f1)
    micro = _prf(pred.ravel(), truth.ravel())[2]
    codes = decision_codes(np.asarray(probs), texts, manifest)
    positive: NDArray[np.bool_] = np.asarray(truth.any(axis=1), dtype=bool)
    caught = codes >= 1
    flagged = codes == 2
    n = len(texts)
    any_label = {
        "recall": _round(float(caught[positive].mean()) if positive.any() else None),
        "flag_precision": _round(float(positive[flagged].mean()) if flagged.any() else None),
        "clear_rate_negatives": _round(
            float((codes[~positive] == 0).mean()) if (~positive).any() else None
        ),
        "positives": int(positive.sum()),
        "negatives": int((~positive).sum()),
    }
    return {
        "n": n,
        "macro_f1": round(float(np.mean(f1s)) if f1s else 0.0, 4),
        "micro_f1": round(micro, 4),
        "per_label": per_label,
        "any_label": any_label,
        "review_rate": round(float((codes == 1).mean()) if n else 0.0, 4),
        "flag_rate": round(float(flagged.mean()) if n else 0.0, 4),
        "clear_rate": round(float((codes == 0).mean()) if n else 0.0, 4),
        "ece": round(expected_calibration_error(probs, y), 4),
        "decisions": _decision_matrix(codes, positive),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _decision_matrix(codes: NDArray[np.int8], positive: NDArray[np.bool_]) -> dict[str, Any]:
    names = {2: "flag", 1: "review", 0: "clear"}
    out: dict[str, Any] = {}
    for truth_name, mask in (("controlled", positive), ("not_controlled", ~positive)):
        out[truth_name] = {names[c]: int(((codes == c) & mask).sum()) for c in (2, 1, 0)}
    return out


def metrics_by_source(
    probs: NDArray[np.floating],
    y: NDArray[np.integer],
    texts: list[str],
    sources: Sequence[str],
    manifest: Manifest,
) -> dict[str, dict[str, Any]]:
    """compute_metrics per value of a grouping column (the `source` column, the language)."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        if s:
            groups[s].append(i)
    out = {}
    for source, idx in sorted(groups.items()):
        ix = np.array(idx)
        m = compute_metrics(probs[ix], y[ix], [texts[i] for i in idx], manifest)
        out[source] = {k: m[k] for k in ("n", "macro_f1", "any_label", "review_rate")}
    return out


def metrics_by_lang(
    probs: NDArray[np.floating],
    y: NDArray[np.integer],
    texts: list[str],
    langs: Sequence[str],
    manifest: Manifest,
) -> dict[str, dict[str, Any]]:
    """metrics_by_source per language, in the order en, zh, ja, mixed (absent ones left out)."""
    found = metrics_by_source(probs, y, texts, langs, manifest)
    return {lang: found[lang] for lang in LANGS if lang in found}


# ---------------------------------------------------------------- reports


def write_plots(
    probs: NDArray[np.floating],
    y: NDArray[np.integer],
    labels: list[str],
    metrics: dict[str, Any],
    folder: Path,
    prefix: str,
) -> list[Path]:
    """PR curves per label, a reliability diagram and the decision confusion, as PNG files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    folder.mkdir(parents=True, exist_ok=True)
    files = []
    fig, ax = plt.subplots(figsize=(7, 5))
    for j, label in enumerate(labels):
        if y[:, j].sum() == 0:
            continue
        prec, rec, _ = precision_recall_curve(y[:, j], probs[:, j])
        ax.plot(rec, prec, label=label, linewidth=1.2)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title(f"{prefix}: precision-recall per label")
    ax.legend(fontsize=7, loc="lower left")
    path = folder / f"{prefix}_pr_curves.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(path)

    mean_p, freq, count = reliability_curve(probs, y)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=0.8)
    used = count > 0
    ax.plot(mean_p[used], freq[used], "o-")
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("observed frequency")
    ax.set_title(f"{prefix}: reliability (ECE {metrics['ece']:.3f})")
    path = folder / f"{prefix}_reliability.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(path)

    matrix = metrics["decisions"]
    grid = np.array(
        [
            [matrix[t][d] for d in ("flag", "review", "clear")]
            for t in ("controlled", "not_controlled")
        ]
    )
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(3), ["flag", "review", "clear"])
    ax.set_yticks(range(2), ["controlled", "not controlled"])
    for (r, c), v in np.ndenumerate(grid):
        ax.text(c, r, str(v), ha="center", va="center")
    ax.set_title(f"{prefix}: decisions")
    path = folder / f"{prefix}_decisions.png"
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    files.append(path)
    return files


def format_metrics_table(results: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown table: one row per (set, model) with the headline figures."""
    lines = [
        "| set | model | n | macro F1 | micro F1 | any-label recall | flag precision | "
        "review rate | clear rate (neg) | ECE |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for set_name, by_model in results.items():
        for model_name, m in by_model.items():
            a = m["any_label"]
            lines.append(
                f"| {set_name} | {model_name} | {m['n']} | {m['macro_f1']:.3f} | "
                f"{m['micro_f1']:.3f} | {_fmt(a['recall'])} | {_fmt(a['flag_precision'])} | "
                f"{m['review_rate']:.3f} | {_fmt(a['clear_rate_negatives'])} | {m['ece']:.3f} |"
            )
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_per_label(metrics: dict[str, Any]) -> str:
    """Markdown table of per-label figures."""
    lines = [
        "| label | support | precision | recall | F1 | PR-AUC |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, m in metrics["per_label"].items():
        lines.append(
            f"| {label} | {m['support']} | {m['precision']:.3f} | {m['recall']:.3f} | "
            f"{m['f1']:.3f} | {_fmt(m['pr_auc'])} |"
        )
    return "\n".join(lines)
