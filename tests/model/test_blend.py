"""Blended artifacts (issue 12): transformer logits plus w x TF-IDF logits in every backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.backends.blend import BlendBackend
from serving.backends.tfidf import TfidfBackend, load_skops
from serving.contract.artifact import Blend, read_manifest, write_manifest
from serving.contract.errors import ArtifactError
from serving.predictor import Predictor
from training.config import load_config
from training.pipeline import BLEND_FILE, _fit_blend, choose_blend_weight, load_data

pytestmark = pytest.mark.slow
TEXTS = [
    "Cotton crew-neck T-shirt, pack of 3 | machine washable, sizes S to XXL",
    "LWIR thermal imaging core 640x512 | uncooled VOx microbolometer, NETD < 40 mK",
    "Survey GNSS receiver, multi-band RTK | L1/L2/L5, 1 cm + 1 ppm",
    "Quadcopter frame kit 450 mm with 30 min flight time and 5 km video link",
    "module",
]
WEIGHT = 0.7


@pytest.fixture(scope="module")
def blended(smoke_model: Path, tfidf_model: Path, tmp_path_factory) -> Path:
    """A copy of the smoke model whose blend part is the smoke run's TF-IDF baseline."""
    folder = tmp_path_factory.mktemp("blend") / "model"
    shutil.copytree(smoke_model, folder)
    shutil.copy(tfidf_model / "model.skops", folder / "extra.skops")
    manifest = read_manifest(folder).model_copy(
        update={"blend": Blend(model_file="extra.skops", weight=WEIGHT)}
    )
    write_manifest(folder, manifest)
    return folder


def _part(tfidf_model: Path) -> np.ndarray:
    backend = TfidfBackend(tfidf_model, read_manifest(tfidf_model))
    return WEIGHT * backend.run(TEXTS)


@pytest.mark.parametrize("name", ["onnx", "onnx-int8-fast", "torch"])
def test_every_transformer_backend_adds_the_weighted_tfidf_logits(
    blended, smoke_model, tfidf_model, name
):
    plain = Predictor.load(smoke_model, backend=name)
    mixed = Predictor.load(blended, backend=name)
    assert isinstance(mixed.backend, BlendBackend) and mixed.backend.name == plain.backend.name
    got = mixed.run(mixed.prepare_texts(TEXTS).inputs)
    want = plain.run(plain.prepare_texts(TEXTS).inputs) + _part(tfidf_model)
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_merged_inputs_give_the_rows_of_separate_runs(blended):
    """The API's micro-batcher concatenates the inputs of several requests."""
    predictor = Predictor.load(blended, backend="onnx")
    a = predictor.prepare_texts(TEXTS[:2]).inputs
    b = predictor.prepare_texts(TEXTS[2:]).inputs
    merged = predictor.run(a + b)
    apart = np.vstack([predictor.run(a), predictor.run(b)])
    np.testing.assert_allclose(merged, apart, atol=1e-4)


def test_the_int8_guard_judges_the_blended_logits(blended, tfidf_model):
    """An item is re-scored with fp32 when the *sum* sits near a threshold: with a guard margin
    wide enough to cover everything, guarded int8 equals fp32 plus the TF-IDF part."""
    manifest = read_manifest(blended)
    assert manifest.int8_guard is not None
    wide = manifest.model_copy(
        update={"int8_guard": manifest.int8_guard.model_copy(update={"margin": 50.0})}
    )
    write_manifest(blended, wide)
    try:
        guarded = Predictor.load(blended, backend="onnx-int8")
        fp32 = Predictor.load(blended, backend="onnx")
        got = guarded.run(guarded.prepare_texts(TEXTS).inputs)
        assert guarded.backend.rescored == len(TEXTS)
        np.testing.assert_allclose(got, fp32.run(fp32.prepare_texts(TEXTS).inputs), atol=1e-4)
    finally:
        write_manifest(blended, manifest)


def test_counters_set_on_the_blend_are_the_inner_backends(blended):
    """`backend.rescored = 0` (benchmarks, metrics) must reset the guard's own counter."""
    predictor = Predictor.load(blended, backend="onnx-int8")
    predictor.backend.rescored = 7
    assert predictor.backend.inner.rescored == 7 and predictor.backend.rescored == 7
    assert "rescored" not in vars(predictor.backend)


def test_cascade_forwards_blended_logits(blended):
    cascade = Predictor.load(blended, backend="cascade")
    cascade.backend.stage = cascade.backend.stage.model_copy(update={"clear_below": 0.0})
    int8 = Predictor.load(blended, backend="onnx-int8")
    # The blend part is the smoke run's baseline, whose label columns the router shares.
    assert cascade.backend.shared_tfidf
    got = cascade.backend.logits(TEXTS)
    np.testing.assert_allclose(got, int8.backend.logits(TEXTS), atol=1e-4)


def test_cascade_runs_a_blend_part_that_differs_from_its_router(blended, tmp_path):
    import skops.io

    folder = tmp_path / "model"
    shutil.copytree(blended, folder)
    pipeline = load_skops(folder / "extra.skops")
    first = pipeline.named_steps["classifier"].estimators_[0]
    first.intercept_ = first.intercept_ + 0.5
    skops.io.dump(pipeline, folder / "extra.skops")
    write_manifest(folder, read_manifest(folder))  # checksums of the changed file
    cascade = Predictor.load(folder, backend="cascade")
    assert not cascade.backend.shared_tfidf
    cascade.backend.stage = cascade.backend.stage.model_copy(update={"clear_below": 0.0})
    int8 = Predictor.load(folder, backend="onnx-int8")
    got = cascade.backend.logits(TEXTS)
    np.testing.assert_allclose(got, int8.backend.logits(TEXTS), atol=1e-4)
    # The changed intercept reaches the first label's column: the part was run, not reused.
    shared = Predictor.load(blended, backend="cascade")
    shared.backend.stage = shared.backend.stage.model_copy(update={"clear_below": 0.0})
    delta = got - shared.backend.logits(TEXTS)
    np.testing.assert_allclose(delta[:, 0], WEIGHT * 0.5, atol=1e-3)


def test_a_blend_without_its_tfidf_file_is_refused(blended, tmp_path):
    folder = tmp_path / "broken"
    shutil.copytree(blended, folder)
    (folder / "extra.skops").unlink()
    write_manifest(folder, read_manifest(folder))
    with pytest.raises(ArtifactError, match="extra.skops"):
        Predictor.load(folder, backend="onnx")


def test_blend_weight_is_chosen_by_validation_ranking():
    rng = np.random.default_rng(0)
    y = (rng.random((400, 3)) < 0.3).astype(np.int64)
    noise = rng.normal(size=y.shape).astype(np.float32)
    signal = (y * 2.0 + rng.normal(scale=0.5, size=y.shape)).astype(np.float32)
    weights = [0.0, 0.5, 1.0, 2.0]
    # A TF-IDF part that carries the signal the transformer lacks gets the largest weight ...
    (w, c), scores = choose_blend_weight(noise, signal, y, weights)
    assert w == c == 2.0 and scores[(2.0, 2.0)] > scores[(0.0, 0.0)]
    # ... and one that is only noise gets none.
    (w, c), scores = choose_blend_weight(signal, noise, y, weights)
    assert w == c == 0.0 and set(scores) == {(x, x) for x in weights}
    # Ties go to the smaller weight.
    (w, _), _ = choose_blend_weight(signal, np.zeros_like(signal), y, weights)
    assert w == 0.0


def test_chinese_and_japanese_rows_get_their_own_weight():
    """Where the TF-IDF part is signal on Latin rows and noise on CJK rows (and the transformer
    the reverse), validation gives it a large weight on the first and none on the second."""
    rng = np.random.default_rng(1)
    y = (rng.random((600, 3)) < 0.3).astype(np.int64)
    cjk = rng.random(600) < 0.4
    signal = y * 2.0 + rng.normal(scale=0.5, size=y.shape)
    noise = rng.normal(size=y.shape)
    transformer = np.where(cjk[:, None], signal, noise).astype(np.float32)
    tfidf = np.where(cjk[:, None], noise, signal).astype(np.float32)
    weights = [0.0, 1.0, 2.0]
    (w, c), scores = choose_blend_weight(transformer, tfidf, y, weights, cjk, weights)
    assert (w, c) == (2.0, 0.0) and len(scores) == 9
    assert scores[(2.0, 0.0)] > max(scores[(x, x)] for x in weights)


def test_a_per_language_weight_applies_to_the_texts_of_that_language(
    blended, smoke_model, tfidf_model, tmp_path
):
    """`weight_by_lang` {zh: 0, ja: 2w}: Chinese texts get the transformer alone, Japanese texts
    twice the part, the rest `weight` x the part."""
    folder = tmp_path / "model"
    shutil.copytree(blended, folder)
    by_lang = {"zh": 0.0, "ja": 2 * WEIGHT}
    manifest = read_manifest(folder)
    assert manifest.blend is not None
    blend = manifest.blend.model_copy(update={"weight_by_lang": by_lang})
    write_manifest(folder, manifest.model_copy(update={"blend": blend}))
    texts = [*TEXTS, "四旋翼无人机 机架 450mm 图传 5 公里", "サーマルカメラ 赤外線 640x512 非冷却"]
    plain = Predictor.load(smoke_model, backend="onnx")
    mixed = Predictor.load(folder, backend="onnx")
    part = TfidfBackend(tfidf_model, read_manifest(tfidf_model)).run(texts)
    scale = np.array([WEIGHT] * len(TEXTS) + [0.0, 2 * WEIGHT], dtype=np.float32)[:, None]
    want = plain.run(plain.prepare_texts(texts).inputs) + scale * part
    np.testing.assert_allclose(mixed.run(mixed.prepare_texts(texts).inputs), want, atol=1e-4)


def test_a_run_without_blend_weights_writes_no_blend(smoke_run):
    """The smoke profile leaves `model.blend_weights` empty: no blend part, no choice recorded."""
    manifest = smoke_run.manifest
    assert manifest.blend is None and "blend.skops" not in manifest.files
    assert "blend" not in manifest.metrics["training"]


def test_fit_blend_writes_the_part_it_chose_and_nothing_when_it_chose_none(
    root, taxonomy, tmp_path
):
    """On the smoke splits: a transformer with no signal gets a TF-IDF part whose stored file
    reproduces the validation logits the weight was chosen on; a perfect one gets none."""
    cfg = load_config(root / "training/configs/smoke.toml", ["model.blend_weights=[0, 1, 2]"])
    splits, _ = load_data(cfg, taxonomy)
    val = splits["val"]
    blend, tfidf_val, notes = _fit_blend(cfg, tmp_path, splits, np.zeros(val.y.shape, "float32"))
    assert blend is not None and tfidf_val is not None
    assert blend.weight == notes["weight"] > 0 and blend.model_file == BLEND_FILE
    assert blend.validation["mean_ap"] > blend.validation["mean_ap_transformer"]
    stored = load_skops(tmp_path / BLEND_FILE).decision_function(val.texts)
    np.testing.assert_allclose(stored[:, : val.y.shape[1]], tfidf_val, atol=1e-5)

    perfect = (val.y * 20.0 - 10.0).astype("float32")
    out = tmp_path / "none"
    out.mkdir()
    blend, tfidf_val, notes = _fit_blend(cfg, out, splits, perfect)
    assert blend is None and tfidf_val is None and notes["weight"] == 0.0
    assert not (out / BLEND_FILE).exists()


def test_int8_is_chosen_and_guarded_on_the_blended_logits(root, taxonomy, smoke_model, tmp_path):
    """The pipeline's int8 step on a blended copy of the smoke model: the graph it keeps (and,
    with a static graph, its dynamic fallback) is judged against blended fp32 logits, and the
    guarded graph agrees with blended fp32 decisions on validation."""
    from serving.backends import load_backend
    from serving.backends.blend import blend_weights
    from serving.contract.decide import decision_codes
    from training.export import MIN_INT8_AGREEMENT, export_onnx
    from training.pipeline import _calibration_texts, _choose_int8

    cfg = load_config(root / "training/configs/smoke.toml", ["model.blend_weights=[1]"])
    splits, _ = load_data(cfg, taxonomy)
    val = splits["val"]
    folder = tmp_path / "model"
    shutil.copytree(smoke_model, folder)
    calibration = _calibration_texts(splits["train"].texts, cfg.train.seed)
    onnx_notes = export_onnx(folder, cfg.model.max_tokens, cfg.model.pooling, calibration)
    manifest = read_manifest(folder)
    fp32 = load_backend(folder, manifest, "onnx").logits(val.texts)
    blend, tfidf_val, _ = _fit_blend(cfg, folder, splits, fp32)
    assert blend is not None and tfidf_val is not None and blend.weight == 1.0
    manifest = write_manifest(folder, manifest.model_copy(update={"blend": blend}))
    reference = fp32 + blend_weights(blend, val.texts) * tfidf_val

    chosen, _ = _choose_int8(cfg, manifest, folder, splits, reference, onnx_notes)
    assert chosen.int8 is not None and chosen.int8_guard is not None
    if onnx_notes.get("int8") == "static":
        assert set(chosen.int8.candidates) == {"static", "dynamic"}
    write_manifest(folder, chosen)
    guarded, full = (Predictor.load(folder, backend=b) for b in ("onnx-int8", "onnx"))
    assert isinstance(guarded.backend, BlendBackend)
    codes = [
        decision_codes(p.calibrate(p.run(p.prepare_texts(val.texts).inputs)), val.texts, chosen)
        for p in (guarded, full)
    ]
    np.testing.assert_allclose(full.run(full.prepare_texts(val.texts).inputs), reference, atol=1e-3)
    assert float(np.mean(codes[0] == codes[1])) >= MIN_INT8_AGREEMENT
