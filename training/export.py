"""Write artifact files: weights, tokenizer, ONNX graphs (fp32 and int8), taxonomy, model card.

ONNX: the TorchScript exporter (`dynamo=False`, opset 18) on a model loaded with eager attention,
then ONNX Runtime's transformer optimiser fuses attention, layer norm and GELU, then dynamic int8
quantisation with per-channel weights. Each step that fails falls back to the plainer graph and
says so; the manifest records how close int8 stays to torch.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)


def save_transformer(model: Any, tokenizer: Any, folder: Path) -> None:
    """Write config.json (with id2label), model.safetensors and tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder), safe_serialization=True)
    tokenizer.save_pretrained(str(folder))
    for path in folder.iterdir():
        if path.is_file():
            path.chmod(0o644)  # save_pretrained writes 0600; a service user must read them


def export_onnx(folder: Path, max_tokens: int) -> dict[str, Any]:
    """Export model.onnx (fused where possible) and model.int8.onnx from the saved weights.

    Returns:
        Notes on what was done (fused or not, file sizes).
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import warnings

    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        str(folder), attn_implementation="eager", use_safetensors=True
    )
    model.config.return_dict = False
    model.eval()
    fp32 = folder / "model.onnx"
    raw = folder / "model.raw.onnx.tmp"
    example = torch.ones((2, 16), dtype=torch.long)
    axes = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        # The tracer warns about Python-side shape checks and index ops; the graph is checked
        # against torch afterwards (onnx_agreement in the manifest).
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example, torch.ones_like(example), torch.zeros_like(example)),
            str(raw),
            dynamo=False,
            opset_version=18,
            input_names=["input_ids", "attention_mask", "token_type_ids"],
            output_names=["logits"],
            dynamic_axes={
                "input_ids": axes,
                "attention_mask": axes,
                "token_type_ids": axes,
                "logits": {0: "batch"},
            },
        )
    notes: dict[str, Any] = {"fused": False}
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        cfg = model.config
        optimized = optimize_model(
            str(raw),
            model_type="bert",
            num_heads=cfg.num_attention_heads,
            hidden_size=cfg.hidden_size,
            opt_level=1,
        )
        optimized.save_model_to_file(str(fp32))
        fused = optimized.get_fused_operator_statistics()
        notes["fused"] = bool(fused.get("Attention", 0) or fused.get("MultiHeadAttention", 0))
        notes["fused_ops"] = {k: v for k, v in fused.items() if v}
        raw.unlink()
    except Exception as exc:  # noqa: BLE001 - the optimiser is best effort
        log.warning("ONNX graph fusion failed (%s); keeping the unfused graph", exc)
        os.replace(raw, fp32)
    int8 = folder / "model.int8.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a pre-processing hint on the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=True,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)
    for leftover in folder.glob("*.tmp"):
        leftover.unlink()
    for leftover in folder.glob("*-opt.onnx"):
        leftover.unlink()
    notes["onnx_mb"] = round(fp32.stat().st_size / 1e6, 1)
    notes["int8_mb"] = round(int8.stat().st_size / 1e6, 1)
    return notes


def agreement(reference: NDArray[np.floating], other: NDArray[np.floating]) -> dict[str, float]:
    """Argmax agreement and largest probability difference between two logit matrices."""
    from serving.contract.decide import sigmoid

    if len(reference) == 0:
        return {"argmax_agreement": 1.0, "max_prob_diff": 0.0}
    pa, pb = sigmoid(reference), sigmoid(other)
    return {
        "argmax_agreement": round(float((pa.argmax(1) == pb.argmax(1)).mean()), 5),
        "max_prob_diff": round(float(np.abs(pa - pb).max()), 5),
        "mean_prob_diff": round(float(np.abs(pa - pb).mean()), 6),
    }


GUARD_STEP = 0.01
GUARD_MAX = 3.0


def choose_int8_guard(
    fp32_logits: NDArray[np.floating],
    int8_logits: NDArray[np.floating],
    texts: list[str],
    manifest: Any,
    target_agreement: float = 0.998,
) -> Any:
    """The smallest guard margin whose expected decision agreement with fp32 reaches the target.

    Counting disagreements on a few hundred validation items is too coarse for a 99.9 % target,
    so the estimate uses every label's int8 error: an item is only at risk when its distance to
    a decision change (the smallest margin at which `unstable_decisions` marks it) is larger than
    the guard margin and smaller than its int8 error. The chance of that is the share of
    validation errors (all items, all labels, calibrated-logit units) above that distance.
    Returns an `Int8Guard` with the estimate and the figures actually seen on validation.
    """
    from serving.contract.artifact import Int8Guard
    from serving.contract.decide import calibrate, decision_codes, unstable_decisions

    a = np.array([manifest.calibration.a[lb] for lb in manifest.labels], dtype=np.float64)
    errors = np.sort(np.abs((np.asarray(fp32_logits) - np.asarray(int8_logits)) * a).ravel())
    margins = np.arange(0.0, GUARD_MAX + GUARD_STEP / 2, GUARD_STEP)
    distance = np.full(len(texts), np.inf)
    for m in margins[::-1]:  # the smallest margin at which each item turns unstable
        distance[unstable_decisions(int8_logits, manifest, float(m))] = m
    beyond = 1.0 - np.searchsorted(errors, distance, side="right") / max(len(errors), 1)
    chosen = float(margins[-1])
    expected = 0.0
    for m in margins:
        expected = 1.0 - float(np.mean(np.where(distance > m, beyond, 0.0))) if len(texts) else 1.0
        if expected >= target_agreement:
            chosen = float(m)
            break
    reference = decision_codes(calibrate(fp32_logits, manifest), texts, manifest)
    unguarded = decision_codes(calibrate(int8_logits, manifest), texts, manifest)
    unstable = unstable_decisions(int8_logits, manifest, chosen)
    mixed = np.where(unstable[:, None], fp32_logits, int8_logits)
    guarded = decision_codes(calibrate(mixed, manifest), texts, manifest)
    n = max(len(texts), 1)
    return Int8Guard(
        margin=round(chosen, 2),
        target_agreement=target_agreement,
        validation={
            "items": float(len(texts)),
            "unguarded_agreement": round(float((unguarded == reference).sum() / n), 5),
            "expected_agreement": round(expected, 5),
            "agreement": round(float((guarded == reference).sum() / n), 5),
            "rescored_share": round(float(unstable.sum() / n), 4),
            "error_p50": round(float(np.quantile(errors, 0.5)), 4) if errors.size else 0.0,
            "error_p99": round(float(np.quantile(errors, 0.99)), 4) if errors.size else 0.0,
        },
    )


def copy_taxonomy(taxonomy_path: Path, folder: Path) -> None:
    """Copy the taxonomy into the artifact (the artifact is self-describing)."""
    shutil.copyfile(taxonomy_path, folder / "taxonomy.yaml")


def write_model_card(folder: Path, manifest: Any, report_md: str) -> None:
    """Write the generated model card README.md."""
    m = manifest
    thresholds = "\n".join(
        f"| {lb} | {m.thresholds[lb].flag:.3f} | {m.thresholds[lb].review:.3f} |" for lb in m.labels
    )
    extra = m.training_data.get("reviewed_labels", 0)
    text = f"""# {m.name} {m.version}

A dualscreen screening model ({m.kind}, base `{m.base_model}`) that says which export-control
categories a product listing likely falls under. **It is a screening aid that routes items to
people, not a legal classification**: control depends on parameters listings often omit.

- Labels ({len(m.labels)}): {", ".join(m.labels)}; taxonomy {m.taxonomy_version}
- Training data: corpus sha256 `{m.corpus_hash[:16]}…`, {m.training_data.get("train_rows", "?")}
  training rows, of which {extra} reviewed labels from the review queue
- Git revision: `{m.git_revision}`; created {m.created_at}
- Decisions: a label is **flagged** at or above its flag threshold, sent to **review** at or above
  its review threshold; an item takes its strongest label decision; items with fewer than
  {m.rules.min_words} content words go to review (`insufficient_detail`).

| label | flag at | review at |
|---|---:|---:|
{thresholds}

## Evaluation
{report_md}

## Limits
- Trained on a hand-written corpus of listings; real catalogs are messier. Check the real-world
  rows above before trusting a figure.
- Listings rarely state the parameters (accuracy, frequency, power, range) that decide legal
  control; a flag means "a person should check", never "a licence is required".
"""
    (folder / "README.md").write_text(text, encoding="utf-8")
