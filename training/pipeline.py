"""One training run end to end: data, fit, export, calibrate, thresholds, evaluate, track, register.

Calibration and thresholds are fitted on logits from the backend the artifact is served with by
default (ONNX int8 for transformers), so the figures in the manifest are the figures users get.
A transformer run also fits the TF-IDF baseline on the same data and reports both side by side.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import random
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends import Backend, load_backend
from serving.backends.blend import blend_weights
from serving.contract.artifact import (
    FORMAT_VERSION,
    Blend,
    Calibration,
    DecisionRules,
    LabelThresholds,
    Manifest,
    ReviewPath,
    write_manifest,
)
from serving.contract.decide import decision_codes, is_insufficient, thresholds_for_budget
from serving.contract.errors import ConfigError
from serving.contract.listing import TEXT_FIELDS
from serving.contract.readers import ColumnMapping, RejectedRow, read_records
from serving.contract.specs import SPEC_HINTS_VERSION
from serving.contract.taxonomy import Taxonomy, load_taxonomy
from serving.contract.text import build_text, detect_lang
from training import paths
from training.calibrate import apply_calibration, expected_calibration_error, fit_calibration
from training.cascade_fit import attach_cascade
from training.config import Config
from training.corpus import corpus_hash
from training.evaluate import (
    format_metrics_table,
    load_labelled,
)
from training.report import evaluate_sets, write_report
from training.thresholds import NEVER, review_search
from training.train import cfg_model_input, model_text_prefix

log = logging.getLogger(__name__)
FIELDS = TEXT_FIELDS  # the corpus schema holds the listing's text fields


@dataclass
class Split:
    """Rows of one split with built texts and a truth matrix."""

    rows: list[dict[str, Any]]
    texts: list[str]
    y: NDArray[np.int64]


@dataclass
class Packaged:
    """A finished artifact folder and how it scored."""

    folder: Path
    manifest: Manifest
    backend: Backend
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What a training run produced."""

    folder: Path
    manifest: Manifest
    report: Path
    results: dict[str, dict[str, dict[str, Any]]]
    registered_version: str | None = None
    baseline_folder: Path | None = None


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else paths.project_root() / p


def git_revision() -> str:
    """Current git commit (with -dirty when the tree has changes), or 'unknown'."""
    try:
        root = paths.project_root()
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def read_labelled_rows(
    path: Path, taxonomy: Taxonomy
) -> tuple[list[dict[str, Any]], list[RejectedRow]]:
    """Read a labelled file through the shared reader; rows carry `labels`."""
    rows, rejected = [], []
    for result in read_records(path, mapping=ColumnMapping(), taxonomy=taxonomy):
        if isinstance(result, RejectedRow):
            rejected.append(result)
            continue
        row = {k: result.data.get(k) or "" for k in FIELDS}
        row["id"] = str(result.data.get("id") or f"{path.name}:{result.line}")
        row["split"] = str(result.data.get("split") or "")
        row["labels"] = result.labels or []
        rows.append(row)
    return rows, rejected


def _slice(
    rows: list[dict[str, Any]], n: int | None, labels: list[str], seed: int
) -> list[dict[str, Any]]:
    """A deterministic slice of n rows that keeps positives of every label."""
    if n is None or len(rows) <= n:
        return rows
    rng = random.Random(seed)
    order = sorted(rows, key=lambda r: hashlib.sha1(r["id"].encode()).hexdigest())
    per_label = max(2, n // (3 * len(labels)))
    chosen: dict[str, dict[str, Any]] = {}
    for label in labels:
        for r in [r for r in order if label in r["labels"]][:per_label]:
            chosen[r["id"]] = r
    rest = [r for r in order if r["id"] not in chosen]
    rng.shuffle(rest)
    for r in rest[: max(0, n - len(chosen))]:
        chosen[r["id"]] = r
    return sorted(chosen.values(), key=lambda r: r["id"])


def _to_split(rows: list[dict[str, Any]], labels: list[str], max_chars: int) -> Split:
    texts = [
        build_text(**{k: r.get(k, "") for k in FIELDS}, max_chars=max_chars).text for r in rows
    ]
    y = np.array(
        [[1 if lb in r["labels"] else 0 for lb in labels] for r in rows], dtype=np.int64
    ).reshape(len(rows), len(labels))
    return Split(rows, texts, y)


def load_data(cfg: Config, taxonomy: Taxonomy) -> tuple[dict[str, Split], dict[str, Any]]:
    """Corpus splits (through `datasets`), plus reviewed extra files added to train only."""
    import datasets

    corpus_path = _resolve(cfg.data.corpus)
    rows, rejected = read_labelled_rows(corpus_path, taxonomy)
    if rejected:
        raise ValueError(
            f"{corpus_path}: {len(rejected)} bad rows, first: line "
            f"{rejected[0].line}: {rejected[0].reason}"
        )
    ds = datasets.Dataset.from_list(rows)
    by_split = {s: [r for r in ds if r["split"] == s] for s in ("train", "val", "test")}
    held_out = {
        build_text(**{k: r[k] for k in FIELDS}).text.lower()
        for s in ("val", "test")
        for r in by_split[s]
    }
    labels = taxonomy.labels
    seed = cfg.train.seed
    # Slice the corpus first, so every reviewed row counted below really enters training.
    by_split["train"] = _slice(by_split["train"], cfg.data.max_train_rows, labels, seed)
    by_split["val"] = _slice(by_split["val"], cfg.data.max_eval_rows, labels, seed)
    by_split["test"] = _slice(by_split["test"], cfg.data.max_eval_rows, labels, seed)
    extra_used = 0
    for extra in cfg.data.extra:
        extra_rows, bad = read_labelled_rows(_resolve(extra), taxonomy)
        if bad:
            log.warning(
                "%s: %d rows rejected (first: line %d: %s)",
                extra,
                len(bad),
                bad[0].line,
                bad[0].reason,
            )
        for r in extra_rows:
            if build_text(**{k: r[k] for k in FIELDS}).text.lower() in held_out:
                continue  # a reviewed item never enters training if it is a val/test item
            r["split"] = "train"
            by_split["train"].append(r)
            extra_used += 1
    splits = {s: _to_split(r, labels, cfg.model.max_chars) for s, r in by_split.items()}
    info = {
        "corpus": str(corpus_path),
        "corpus_hash": corpus_hash(corpus_path),
        "train_rows": len(splits["train"].rows),
        "val_rows": len(splits["val"].rows),
        "test_rows": len(splits["test"].rows),
        "reviewed_labels": extra_used,
        "extra_files": list(cfg.data.extra),
    }
    return splits, info


def _identity_manifest(
    cfg: Config, kind: str, taxonomy: Taxonomy, version: str, data_info: dict[str, Any], name: str
) -> Manifest:
    labels = taxonomy.labels
    return Manifest(
        format_version=FORMAT_VERSION,
        name=name,
        version=version,
        kind=kind,  # type: ignore[arg-type]
        labels=labels,
        taxonomy_version=taxonomy.version,
        calibration=Calibration(
            method="none", a={lb: 1.0 for lb in labels}, b={lb: 0.0 for lb in labels}
        ),
        thresholds={lb: LabelThresholds(flag=NEVER, review=NEVER) for lb in labels},
        rules=DecisionRules(
            min_words=cfg.decide.min_words,
            max_chars=cfg.model.max_chars,
            max_tokens=cfg.model.max_tokens,
            text_prefix=model_text_prefix(cfg) if kind == "transformer" else "",
            spec_hints=cfg.model.spec_hints if kind == "transformer" else False,
            spec_hints_version=SPEC_HINTS_VERSION,
            pooling=cfg.model.pooling if kind == "transformer" else "cls",
        ),
        base_model=cfg.model.base_model if kind == "transformer" else "tfidf",
        corpus_hash=data_info["corpus_hash"],
        git_revision=git_revision(),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=cfg.model_dump(mode="json"),
        training_data=data_info,
    )


def _calibrate_and_decide(
    cfg: Config, manifest: Manifest, val_logits: NDArray[np.float32], val: Split
) -> tuple[Manifest, dict[str, float]]:
    labels = manifest.labels
    cal = fit_calibration(val_logits, val.y, labels)
    raw_p = apply_calibration(val_logits, manifest.calibration, labels)
    cal_p = apply_calibration(val_logits, cal, labels)
    vague = np.array([is_insufficient(t, cfg.decide.min_words) for t in val.texts], dtype=bool)
    unknown = sorted(set(cfg.decide.flag_precision_by_label) - set(labels))
    if unknown:
        raise ConfigError(f"decide.flag_precision_by_label: unknown labels {unknown}")
    precision: dict[str, float] = {"*": cfg.decide.flag_precision}
    precision.update(cfg.decide.flag_precision_by_label)
    budget = cfg.decide.review_budget
    paths: dict[float, ReviewPath] = {}
    others = [c for c in cfg.decide.review_ceilings if c > cfg.decide.review_floor]
    for ceiling in sorted({cfg.decide.review_ceiling, *others}):
        flag, path = review_search(
            cal_p,
            val.y,
            labels,
            cfg.decide.target_recall,
            precision,
            caught_anyway=vague,
            review_floor=cfg.decide.review_floor,
            review_ceiling=ceiling,
        )
        paths[ceiling] = path.model_copy(update={"budget": budget})
    path = paths.pop(cfg.decide.review_ceiling)
    thresholds = thresholds_for_budget(flag, path, budget or math.inf)
    notes = {
        "val.ece_before": expected_calibration_error(raw_p, val.y),
        "val.ece_after": expected_calibration_error(cal_p, val.y),
    }
    update = {
        "calibration": cal,
        "thresholds": thresholds,
        "review_path": path,
        "other_review_paths": list(paths.values()),
    }
    return manifest.model_copy(update=update), notes


def _package(
    cfg: Config,
    kind: str,
    taxonomy: Taxonomy,
    taxonomy_path: Path,
    splits: dict[str, Split],
    data_info: dict[str, Any],
    version: str,
    name: str,
    folder: Path,
    console: Any,
    on_epoch: Any = None,
) -> tuple[Packaged, dict[str, Any]]:
    from training.export import copy_taxonomy

    labels = taxonomy.labels
    folder.mkdir(parents=True, exist_ok=True)
    copy_taxonomy(taxonomy_path, folder)
    info: dict[str, Any] = {}
    manifest = _identity_manifest(cfg, kind, taxonomy, version, data_info, name)
    started = time.perf_counter()
    reference_val: NDArray[np.float32] | None = None
    if kind == "transformer":
        from training.export import export_onnx, save_transformer
        from training.train import predict_logits, train_transformer

        train = splits["train"]
        result = train_transformer(
            cfg,
            train.rows,
            train.y,
            splits["val"].texts,
            splits["val"].y,
            labels,
            on_epoch=on_epoch,
            console=console,
        )
        info.update(
            train_seconds=round(result.seconds, 1),
            best_epoch=result.best_epoch,
            epochs_run=len(result.history),
            epochs_planned=cfg.train.epochs,
            stopped_by_time_budget=result.stopped_by_time_budget,
            train_items_per_second=round(result.items_per_second, 1),
            device=result.device,
            history=result.history,
            added_tokens=result.added_tokens,
        )
        if result.vocab_mapping:
            info["vocab_mapping"] = result.vocab_mapping
        save_transformer(result.model, result.tokenizer, folder)
        reference_val = predict_logits(
            result.model,
            result.tokenizer,
            splits["val"].texts,
            cfg.model.max_tokens,
            model_input=cfg_model_input(cfg),
            pooling=cfg.model.pooling,
        )
        if cfg.track.export_onnx:
            if console is not None:
                console.print("exporting ONNX (fp32, fused) and int8 ...")
            info["onnx"] = export_onnx(
                folder,
                cfg.model.max_tokens,
                cfg.model.pooling,
                _calibration_texts(splits["train"].texts, cfg.train.seed),
                cfg_model_input(cfg),
            )
        if cfg.model.blend_weights:
            blend, tfidf_val, info["blend"] = _fit_blend(cfg, folder, splits, reference_val)
            if blend is not None and tfidf_val is not None:
                manifest = manifest.model_copy(update={"blend": blend})
                # The fp32 reference the int8 graph is compared with is the blended one too.
                reference_val = (
                    reference_val + blend_weights(blend, splits["val"].texts) * tfidf_val
                )
        backend_name = "onnx-int8" if cfg.track.export_onnx else "torch"
    else:
        from training.baseline import save_tfidf, train_tfidf

        pipeline = train_tfidf(cfg, splits["train"].texts, splits["train"].y)
        save_tfidf(pipeline, folder)
        info["train_seconds"] = round(time.perf_counter() - started, 1)
        backend_name = "tfidf"
    if backend_name != "onnx-int8":
        manifest, notes = _fit_decisions(cfg, manifest, folder, backend_name, splits, reference_val)
        notes.pop("val_logits")
        info.update(notes)
        return Packaged(folder, manifest, load_backend(folder, manifest, backend_name)), info
    manifest, notes = _choose_int8(cfg, manifest, folder, splits, reference_val, info["onnx"])
    info.update(notes)
    return Packaged(folder, manifest, load_backend(folder, manifest, backend_name)), info


BLEND_FILE = "blend.skops"


def _mean_average_precision(logits: NDArray[np.floating], y: NDArray[np.int64]) -> float:
    """Mean over labels with a positive of the average precision of raw scores."""
    from sklearn.metrics import average_precision_score

    aps = [
        float(average_precision_score(y[:, j], logits[:, j]))
        for j in range(y.shape[1])
        if y[:, j].any()
    ]
    return float(np.mean(aps)) if aps else 0.0


CJK = ("zh", "ja")


def choose_blend_weight(
    transformer_val: NDArray[np.floating],
    tfidf_val: NDArray[np.floating],
    y: NDArray[np.int64],
    weights: list[float],
    cjk: NDArray[np.bool_] | None = None,
    cjk_weights: list[float] | None = None,
) -> tuple[tuple[float, float], dict[tuple[float, float], float]]:
    """The weights (w, w for Chinese and Japanese rows `cjk`) among `weights` x `cjk_weights`
    whose `transformer + w * tfidf` has the highest mean per-label average precision on
    validation (ties: the smaller weights), and every pair's figure. Without `cjk_weights` every
    row has the same w.

    Average precision depends only on each label's ranking, so the per-label Platt scaling that
    is fitted afterwards on the sum cannot change the choice.
    """
    column = np.zeros((len(y), 1), dtype=bool) if cjk is None else cjk.reshape(-1, 1)
    pairs = [
        (float(w), float(c) if cjk_weights else float(w))
        for w in sorted(set(weights))
        for c in (sorted(set(cjk_weights)) if cjk_weights else [w])
    ]
    scores = {
        (w, c): _mean_average_precision(
            transformer_val + np.where(column, np.float32(c), np.float32(w)) * tfidf_val, y
        )
        for w, c in pairs
    }
    best = max(scores, key=lambda p: (round(scores[p], 6), -p[0], -p[1]))
    return best, scores


def _fit_blend(
    cfg: Config, folder: Path, splits: dict[str, Split], reference_val: NDArray[np.float32]
) -> tuple[Blend | None, NDArray[np.float32] | None, dict[str, Any]]:
    """Fit the TF-IDF part on the training split and choose its weights on validation
    (`choose_blend_weight`). With 0 chosen for every text nothing is written and the model is
    not a blend."""
    from training.baseline import save_tfidf, train_tfidf

    started = time.perf_counter()
    val = splits["val"]
    pipeline = train_tfidf(cfg, splits["train"].texts, splits["train"].y)
    scores = np.asarray(pipeline.decision_function(val.texts), dtype=np.float32)
    tfidf_val = scores.reshape(len(val.texts), -1)[:, : val.y.shape[1]]
    cjk = np.array([detect_lang(t) in CJK for t in val.texts], dtype=bool)
    (weight, weight_cjk), by_pair = choose_blend_weight(
        reference_val, tfidf_val, val.y, cfg.model.blend_weights, cjk, cfg.model.blend_weights_cjk
    )
    notes: dict[str, Any] = {
        "weight": weight,
        "val_mean_ap": {
            (f"{w}/cjk {c}" if cfg.model.blend_weights_cjk else f"{w}"): round(v, 4)
            for (w, c), v in by_pair.items()
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    if cfg.model.blend_weights_cjk:
        notes["weight_cjk"] = weight_cjk
    if weight == 0.0 and weight_cjk == 0.0:
        return None, None, notes
    save_tfidf(pipeline, folder, BLEND_FILE)
    alone = by_pair.get((0.0, 0.0))
    if alone is None:
        alone = _mean_average_precision(reference_val, val.y)
    validation = {
        "mean_ap": round(by_pair[(weight, weight_cjk)], 4),
        "mean_ap_transformer": round(alone, 4),
    }
    by_lang = {lang: weight_cjk for lang in CJK} if weight_cjk != weight else {}
    blend = Blend(
        model_file=BLEND_FILE, weight=weight, weight_by_lang=by_lang, validation=validation
    )
    return blend, tfidf_val, notes


def _calibration_texts(texts: list[str], seed: int) -> list[str]:
    """A fixed sample of training texts to calibrate the static int8 graph on."""
    from training.export import CALIBRATION_ITEMS

    order = np.random.default_rng(seed).permutation(len(texts))[:CALIBRATION_ITEMS]
    return [texts[i] for i in order]


def _fit_decisions(
    cfg: Config,
    manifest: Manifest,
    folder: Path,
    backend_name: str,
    splits: dict[str, Split],
    reference_val: NDArray[np.float32] | None,
) -> tuple[Manifest, dict[str, Any]]:
    """Calibration and thresholds on the serving backend's validation logits."""
    from training.export import agreement

    val_logits = load_backend(folder, manifest, backend_name).logits(splits["val"].texts)
    agree: dict[str, float] = {}
    if reference_val is not None and backend_name != "torch":
        agree = agreement(reference_val, val_logits)
    manifest, cal_notes = _calibrate_and_decide(cfg, manifest, val_logits, splits["val"])
    manifest = manifest.model_copy(update={"onnx_agreement": agree})
    return manifest, {**cal_notes, "val_logits": val_logits}


def _choose_int8(
    cfg: Config,
    manifest: Manifest,
    folder: Path,
    splits: dict[str, Split],
    reference_val: NDArray[np.float32] | None,
    onnx_notes: dict[str, Any],
) -> tuple[Manifest, dict[str, Any]]:
    """Calibrate on the int8 graph and choose its guard; keep a static graph only if its guarded
    decisions agree with fp32 on validation at `MIN_INT8_AGREEMENT` (issue 14).

    With a static graph the dynamic one is scored too, under the same calibration, so the
    manifest shows both re-score shares; the spare graph is removed either way.
    """
    from serving.backends.blend import BlendPart
    from serving.backends.onnx import OnnxBackend
    from serving.contract.artifact import Int8Graph
    from training.export import MIN_INT8_AGREEMENT, STATIC_SPARE, choose_int8_guard

    texts = splits["val"].texts
    spare = folder / STATIC_SPARE
    static = onnx_notes.get("int8") == "static" and spare.exists()
    fallback: str | None = None
    if not static and "error" in onnx_notes.get("int8_static", {}):
        fallback = f"static export failed: {onnx_notes['int8_static']['error']}"
    calibration = None
    if static:
        frozen = onnx_notes["int8_static"]
        calibration = f"{frozen['calibration']} over {frozen['calibration_items']} training items"
    fp32_val = load_backend(folder, manifest, "onnx").logits(texts)
    candidates: dict[str, dict[str, float]] = {}
    chosen: Manifest | None = None
    notes: dict[str, Any] = {}
    for method in ("static", "dynamic") if static else ("dynamic",):
        graph = Int8Graph(method=method, calibration=calibration if method == "static" else None)
        trial = manifest.model_copy(update={"int8": graph})
        # Unguarded: the guard is what these logits choose.
        trial, notes = _fit_decisions(cfg, trial, folder, "onnx-int8-fast", splits, reference_val)
        guard = choose_int8_guard(
            fp32_val, notes.pop("val_logits"), texts, trial, cfg.decide.int8_agreement
        )
        candidates[method] = {**guard.validation, "margin": guard.margin}
        if method == "static" and guard.validation["agreement"] < MIN_INT8_AGREEMENT:
            fallback = (
                f"static int8 guarded agreement {guard.validation['agreement']} < "
                f"{MIN_INT8_AGREEMENT} on validation"
            )
            log.warning("%s; falling back to dynamic int8", fallback)
            os.replace(spare, folder / "model.int8.onnx")
            continue
        if method == "static":
            dynamic = OnnxBackend(folder, trial, STATIC_SPARE, guard=False, per_item=True)
            dynamic_val = dynamic.logits(texts)
            if trial.blend is not None:
                dynamic_val = dynamic_val + BlendPart(folder, trial).offset(texts)
            other = choose_int8_guard(
                fp32_val, dynamic_val, texts, trial, cfg.decide.int8_agreement
            )
            candidates["dynamic"] = {**other.validation, "margin": other.margin}
        record = {
            "agreement": guard.validation["agreement"],
            "unguarded_agreement": guard.validation["unguarded_agreement"],
            "rescored_share": guard.validation["rescored_share"],
            "margin": guard.margin,
        }
        graph = graph.model_copy(
            update={"validation": record, "candidates": candidates, "fallback_reason": fallback}
        )
        chosen = trial.model_copy(update={"int8_guard": guard, "int8": graph})
        notes["int8_guard"] = guard.model_dump()
        notes["int8"] = graph.model_dump()
        break
    spare.unlink(missing_ok=True)
    if chosen is None:  # unreachable: the dynamic graph is always accepted
        raise RuntimeError("no int8 graph chosen")
    return chosen, notes


def _eval_inputs(
    splits: dict[str, Split], taxonomy: Taxonomy, cfg: Config, with_realworld: bool
) -> dict[str, tuple[list[str], NDArray[np.int64], list[str]]]:
    sets = {s: (splits[s].texts, splits[s].y, [""] * len(splits[s].texts)) for s in ("val", "test")}
    for path in paths.heldout_files():
        data = load_labelled(path, taxonomy, max_chars=cfg.model.max_chars)
        sets[f"heldout/{path.stem}"] = (data.texts, data.y, data.sources)
    rw = paths.realworld_dir() if with_realworld else None
    if rw is not None:
        for path in sorted(rw.glob("*.jsonl")):
            data = load_labelled(path, taxonomy, max_chars=cfg.model.max_chars)
            sets[f"realworld/{path.stem}"] = (data.texts, data.y, data.sources)
    return sets


def _install(tmp: Path, final: Path) -> None:
    """Replace `final` with `tmp` so a reader never sees a half-written artifact."""
    old = final.with_name(final.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def run_training(cfg: Config, console: Any = None, baseline: bool = True) -> RunResult:
    """Train, package, evaluate, report, track and register one model.

    Args:
        cfg: validated config.
        console: rich Console for progress (None: quiet).
        baseline: with a transformer, also fit and report the TF-IDF baseline.

    Returns:
        Where the artifact and report are, and every evaluation figure.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    taxonomy_path = _resolve(cfg.data.taxonomy)
    taxonomy = load_taxonomy(taxonomy_path)
    splits, data_info = load_data(cfg, taxonomy)
    version = dt.datetime.now(dt.UTC).strftime("%Y%m%d.%H%M%S")
    name = cfg.track.model_name
    out_dir = _resolve(cfg.track.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    suffix = "" if cfg.profile == "default" else f"-{cfg.profile}"
    final = out_dir / (
        f"{name}{suffix}" if cfg.model.kind == "transformer" else f"{name}{suffix}-tfidf"
    )
    tmp = out_dir / f".tmp-{final.name}-{version}"
    report_dir = _resolve(cfg.track.report_dir) / f"{final.name}-{version}"
    report_dir.mkdir(parents=True, exist_ok=True)
    mlflow = None
    run = None
    if cfg.track.mlflow:
        from training.registry import flatten, setup_mlflow

        mlflow = setup_mlflow()
        mlflow.set_experiment(cfg.track.experiment)
        run = mlflow.start_run(run_name=f"{cfg.profile}-{cfg.model.kind}-{version}")
        mlflow.log_params(flatten(cfg.model_dump(mode="json")))
        mlflow.log_params(
            {
                "data.train_rows": data_info["train_rows"],
                "data.reviewed_labels": data_info["reviewed_labels"],
                "data.corpus_hash": data_info["corpus_hash"],
            }
        )

    def on_epoch(row: dict[str, float]) -> None:
        if mlflow is not None:
            mlflow.log_metrics(
                {k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"])
            )

    try:
        if console is not None:
            console.print(
                f"training {cfg.model.kind} ({cfg.profile}) on "
                f"{data_info['train_rows']} rows, {len(splits['val'].rows)} val, "
                f"{len(splits['test'].rows)} test"
            )
        main, info = _package(
            cfg,
            cfg.model.kind,
            taxonomy,
            taxonomy_path,
            splits,
            data_info,
            version,
            name,
            tmp,
            console,
            on_epoch,
        )
        sets = _eval_inputs(splits, taxonomy, cfg, cfg.track.realworld)
        metrics, probs = evaluate_sets(main.backend, main.manifest, sets)
        results: dict[str, dict[str, dict[str, Any]]] = {
            s: {cfg.model.kind: m} for s, m in metrics.items()
        }
        baseline_folder = None
        if baseline and cfg.model.kind == "transformer":
            bcfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"kind": "tfidf"})})
            bfinal = out_dir / f"{name}{suffix}-tfidf"
            btmp = out_dir / f".tmp-{bfinal.name}-{version}"
            base, binfo = _package(
                bcfg,
                "tfidf",
                taxonomy,
                taxonomy_path,
                splits,
                data_info,
                version,
                f"{name}-tfidf",
                btmp,
                None,
            )
            bmetrics, _ = evaluate_sets(base.backend, base.manifest, sets)
            for s, m in bmetrics.items():
                results[s]["tfidf"] = m
            if cfg.model.kind == "transformer" and cfg.track.export_onnx:
                val_codes = decision_codes(probs["val"], splits["val"].texts, main.manifest)
                cascade_metrics = attach_cascade(
                    main,
                    base,
                    splits["train"],
                    splits["val"],
                    sets,
                    options=cfg.cascade,
                    val_caught=val_codes >= 1,
                )
                for s, m in cascade_metrics.items():
                    results[s]["cascade"] = m
            _finish_artifact(base, binfo, bmetrics, "", bfinal)
            baseline_folder = bfinal
        report_md = write_report(report_dir, main, info, results, probs, sets)
        _finish_artifact(main, info, metrics, report_md, final)
        manifest = main.manifest
        registered = None
        if mlflow is not None:
            from training.registry import log_run_outputs, register_version

            flat = _flat_metrics(metrics, info)
            log_run_outputs(mlflow, final, report_dir, flat)
            registered = register_version(name, run)
            mlflow.set_tag("artifact_version", version)
        if console is not None:
            console.print(format_metrics_table(results))
            console.print(
                f"artifact: {final}\nreport:   {report_dir / 'report.md'}"
                + (f"\nregistered {name} v{registered} as candidate" if registered else "")
            )
        return RunResult(
            final, manifest, report_dir / "report.md", results, registered, baseline_folder
        )
    finally:
        if mlflow is not None:
            mlflow.end_run()
        for leftover in out_dir.glob(".tmp-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def _flat_metrics(metrics: dict[str, Any], info: dict[str, Any]) -> dict[str, float]:
    flat: dict[str, float] = {}
    for set_name, m in metrics.items():
        key = set_name.replace("/", ".")
        for k in ("macro_f1", "micro_f1", "review_rate", "ece", "clear_rate"):
            flat[f"{key}.{k}"] = float(m[k])
        for k, v in m["any_label"].items():
            if isinstance(v, float | int) and v is not None:
                flat[f"{key}.any_label_{k}"] = float(v)
    for k in (
        "train_seconds",
        "train_items_per_second",
        "epochs_run",
        "stopped_by_time_budget",
        "added_tokens",
        "val.ece_before",
        "val.ece_after",
    ):
        if isinstance(info.get(k), float | int):
            flat[k] = float(info[k])
    for k, v in info.get("vocab_mapping", {}).items():
        if isinstance(v, float | int):
            flat[f"vocab_mapping.{k}"] = float(v)
    return flat


def _finish_artifact(
    p: Packaged, info: dict[str, Any], metrics: dict[str, Any], report_md: str, final: Path
) -> None:
    from training.export import write_model_card

    summary = {
        s: {k: m[k] for k in ("n", "macro_f1", "micro_f1", "any_label", "review_rate", "ece")}
        for s, m in metrics.items()
    }
    summary["training"] = {k: v for k, v in info.items() if k != "history"}
    manifest = p.manifest.model_copy(update={"metrics": summary})
    write_model_card(
        p.folder,
        manifest,
        report_md or format_metrics_table({s: {manifest.kind: m} for s, m in metrics.items()}),
    )
    p.manifest = write_manifest(p.folder, manifest)
    _install(p.folder, final)
    p.folder = final
