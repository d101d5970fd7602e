"""Static int8 (issue 14): a calibrated graph with fixed activation scales, batched at serving,
chosen over dynamic int8 only when its guarded decisions agree with fp32 on validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from serving.backends import load_backend
from serving.backends.onnx import POOLED_BATCH
from serving.contract.artifact import read_manifest, verify_artifact, write_manifest
from serving.contract.decide import calibrate, decision_codes
from training import export
from training.config import load_config
from training.export import STATIC_SPARE, freeze_activation_scales, quantize_dynamic_int8
from training.pipeline import _calibration_texts, _choose_int8, load_data


@pytest.fixture(scope="module")
def smoke_splits(root: Path, taxonomy):
    cfg = load_config(root / "training" / "configs" / "smoke.toml", [])
    splits, _ = load_data(cfg, taxonomy)
    return cfg, splits


def _static_copy(smoke_model: Path, tmp: Path, cfg, splits) -> tuple[Path, dict]:
    """The smoke model with a static model.int8.onnx and its dynamic graph as the spare."""
    folder = tmp / "model"
    shutil.copytree(smoke_model, folder)
    # The smoke model may already ship a static graph: start from a fresh dynamic one.
    quantize_dynamic_int8(folder / "model.onnx", folder / "model.int8.onnx")
    backend = load_backend(folder, read_manifest(folder), "onnx-int8-fast")
    ids = backend.encode(_calibration_texts(splits["train"].texts, cfg.train.seed))  # type: ignore[attr-defined]
    int8 = folder / "model.int8.onnx"
    static = tmp / "static.onnx"
    notes = freeze_activation_scales(int8, static, ids)
    int8.replace(folder / STATIC_SPARE)
    static.replace(int8)
    return folder, {"int8": "static", "int8_static": notes}


def _choose(folder: Path, notes: dict, cfg, splits):
    manifest, _ = _choose_int8(cfg, read_manifest(folder), folder, splits, None, notes)
    write_manifest(folder, manifest)
    return verify_artifact(folder)


def test_static_graph_has_fixed_scales_and_loads(smoke_model, smoke_splits, tmp_path):
    cfg, splits = smoke_splits
    folder, notes = _static_copy(smoke_model, tmp_path, cfg, splits)
    assert notes["int8_static"]["frozen_tensors"] > 0
    assert notes["int8_static"]["fused_matmuls"] > 0
    ops = {n.op_type for n in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" not in ops
    assert {"QuantizeLinear", "MatMulIntegerToFloat", "QAttention"} <= ops
    # The embedding lookup stays fp32 (a per-tensor uint8 scale is too coarse for its table).
    assert "QEmbedLayerNormalization" not in ops and "EmbedLayerNormalization" in ops
    backend = load_backend(folder, read_manifest(folder), "onnx-int8-fast")
    assert np.isfinite(backend.logits(splits["val"].texts[:8])).all()


def test_static_decisions_agree_with_fp32_at_the_recorded_rate(smoke_model, smoke_splits, tmp_path):
    cfg, splits = smoke_splits
    folder, notes = _static_copy(smoke_model, tmp_path, cfg, splits)
    manifest = _choose(folder, notes, cfg, splits)
    assert manifest.int8 is not None and manifest.int8.method == "static"
    assert manifest.int8.fallback_reason is None
    assert not (folder / STATIC_SPARE).exists()
    assert set(manifest.int8.candidates) == {"static", "dynamic"}
    recorded = manifest.int8.validation
    assert recorded["agreement"] >= export.MIN_INT8_AGREEMENT
    assert 0.0 <= recorded["rescored_share"] <= 1.0
    texts = splits["val"].texts
    guarded = load_backend(folder, manifest, "onnx-int8")
    assert guarded.pooled and not guarded.per_item  # type: ignore[attr-defined]
    fp32 = load_backend(folder, manifest, "onnx").logits(texts)
    ref = decision_codes(calibrate(fp32, manifest), texts, manifest)
    got = decision_codes(calibrate(guarded.logits(texts), manifest), texts, manifest)
    # The guarded backend batches differently from validation; fp32 rounding may move one item.
    assert abs(float((got == ref).mean()) - recorded["agreement"]) <= 1.0 / len(texts)
    assert guarded.rescored / len(texts) == pytest.approx(recorded["rescored_share"], abs=0.01)  # type: ignore[attr-defined]


def test_batched_static_int8_equals_one_item_per_run(smoke_model, smoke_splits, tmp_path):
    cfg, splits = smoke_splits
    folder, notes = _static_copy(smoke_model, tmp_path, cfg, splits)
    manifest = _choose(folder, notes, cfg, splits)
    for name in ("onnx-int8-fast", "onnx-int8"):
        backend = load_backend(folder, manifest, name, threads=2)
        ids = backend.encode(splits["val"].texts[:64])  # type: ignore[attr-defined]
        batched = backend.run(ids)  # type: ignore[attr-defined]
        single = np.vstack([backend.run([i]) for i in ids])  # type: ignore[attr-defined]
        np.testing.assert_allclose(batched, single, atol=1e-4)


def test_pooled_runs_are_cut_where_the_lengths_jump(smoke_model, smoke_splits, tmp_path):
    # An API micro-batch mixes titles and long descriptions; fixed runs of 16 would pad the
    # titles to the descriptions' length. The backend cuts them apart (padding_aware_batches).
    cfg, splits = smoke_splits
    folder, notes = _static_copy(smoke_model, tmp_path, cfg, splits)
    manifest = _choose(folder, notes, cfg, splits)
    backend = load_backend(folder, manifest, "onnx-int8-fast", threads=1)
    assert backend.pooled  # type: ignore[attr-defined]
    titles = backend.encode([r["title"] for r in splits["val"].rows])  # type: ignore[attr-defined]
    texts = backend.encode(splits["val"].texts)  # type: ignore[attr-defined]
    short = [i for i in titles if len(i) <= 12][:10]
    long = [i for i in texts if len(i) >= 40][:6]
    assert len(short) == 10 and len(long) == 6
    mixed = [row for pair in zip(short, long, strict=False) for row in pair] + short[6:]
    runs: list[list[int]] = []
    real_run = backend._run  # type: ignore[attr-defined]

    def recording(rows, session=None):
        runs.append([len(r) for r in rows])
        return real_run(rows, session)

    backend._run = recording  # type: ignore[attr-defined]
    out = backend.run(mixed)  # type: ignore[attr-defined]
    padded = sum(max(r) * len(r) for r in runs)
    real = sum(len(i) for i in mixed)
    assert sorted(n for r in runs for n in r) == sorted(len(i) for i in mixed)
    assert all(len(r) <= POOLED_BATCH for r in runs)
    # No run holds both a title and a description.
    assert all(max(r) <= 12 or min(r) >= 40 for r in runs)
    assert padded <= 1.3 * real < 16 * max(len(i) for i in mixed)
    np.testing.assert_allclose(out, np.vstack([real_run([i]) for i in mixed]), atol=1e-4)


def test_the_guard_target_comes_from_the_config(smoke_model, smoke_splits, tmp_path, root):
    cfg, splits = smoke_splits
    strict_folder, notes = _static_copy(smoke_model, tmp_path / "strict", cfg, splits)
    strict = _choose(strict_folder, notes, cfg, splits)
    loose_cfg = load_config(root / "training/configs/smoke.toml", ["decide.int8_agreement=0.97"])
    loose_folder, notes = _static_copy(smoke_model, tmp_path / "loose", loose_cfg, splits)
    loose = _choose(loose_folder, notes, loose_cfg, splits)
    assert strict.int8_guard is not None and loose.int8_guard is not None
    assert strict.int8_guard.target_agreement == cfg.decide.int8_agreement
    assert loose.int8_guard.target_agreement == 0.97
    assert loose.int8_guard.validation["agreement"] >= 0.97
    assert loose.int8_guard.margin < strict.int8_guard.margin
    assert (
        loose.int8_guard.validation["rescored_share"]
        < strict.int8_guard.validation["rescored_share"]
    )


def test_low_agreement_falls_back_to_the_dynamic_graph(
    smoke_model, smoke_splits, tmp_path, monkeypatch
):
    cfg, splits = smoke_splits
    folder, notes = _static_copy(smoke_model, tmp_path, cfg, splits)
    monkeypatch.setattr(export, "MIN_INT8_AGREEMENT", 1.01)  # no graph can reach it
    manifest = _choose(folder, notes, cfg, splits)
    assert manifest.int8 is not None and manifest.int8.method == "dynamic"
    assert manifest.int8.fallback_reason and "agreement" in manifest.int8.fallback_reason
    assert set(manifest.int8.candidates) == {"static", "dynamic"}
    assert not (folder / STATIC_SPARE).exists()
    ops = {n.op_type for n in onnx.load(str(folder / "model.int8.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops
    backend = load_backend(folder, manifest, "onnx-int8")
    assert backend.per_item  # type: ignore[attr-defined]
    texts = splits["val"].texts
    fp32 = load_backend(folder, manifest, "onnx").logits(texts)
    ref = decision_codes(calibrate(fp32, manifest), texts, manifest)
    got = decision_codes(calibrate(backend.logits(texts), manifest), texts, manifest)
    assert float((got == ref).mean()) >= manifest.int8.validation["agreement"] - 1.0 / len(texts)


def test_a_failed_static_export_keeps_dynamic(smoke_model, smoke_splits, tmp_path):
    cfg, splits = smoke_splits
    folder = tmp_path / "model"
    shutil.copytree(smoke_model, folder)
    with pytest.raises(ValueError, match="DynamicQuantizeLinear"):
        freeze_activation_scales(folder / "model.onnx", tmp_path / "x.onnx", [[101, 102]])
    notes = {"int8": "dynamic", "int8_static": {"error": "no DynamicQuantizeLinear node"}}
    manifest = _choose(folder, notes, cfg, splits)
    assert manifest.int8 is not None and manifest.int8.method == "dynamic"
    assert manifest.int8.fallback_reason is not None
    assert manifest.int8.fallback_reason.startswith("static export failed")
    assert set(manifest.int8.candidates) == {"dynamic"}
