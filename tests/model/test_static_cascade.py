"""The static-embedding first stage of the cascade (issue 14): distilled from the fine-tuned smoke
model with model2vec, served by numpy and `tokenizers` alone.

One static cascade is built per module on a copy of the smoke model: real distillation, real
router fit, real files, the artifact written and verified as the training pipeline does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("model2vec", reason="model2vec (training extra) is not installed")

from serving.backends import load_backend  # noqa: E402
from serving.backends.cascade import CascadeBackend  # noqa: E402
from serving.backends.static import STATIC_FILE, StaticRouter  # noqa: E402
from serving.backends.tfidf import TfidfBackend  # noqa: E402
from serving.contract.artifact import verify_artifact, write_manifest  # noqa: E402
from serving.contract.decide import decision_codes, sigmoid  # noqa: E402
from serving.contract.errors import ChecksumError  # noqa: E402
from serving.predictor import Predictor  # noqa: E402

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
RETAIL = ROOT.parent / "shared" / "realworld" / "retail.jsonl"
EDGE_TEXTS = [
    "",
    "   ",
    "x" * 5000,
    "[SEP] [CLS] [PAD] [UNK] [MASK] hello",
    "無人機 GNSS アンテナ 模块",
    "LWIR thermal imaging core 640x512 | uncooled VOx microbolometer, NETD < 40 mK",
    "Cotton crew-neck T-shirt, pack of 3 | machine washable, sizes S to XXL",
    "Ünïcödé àccents — em dash “quotes” 😀 emoji",
]


def _texts(val_texts: list[str]) -> list[str]:
    texts = list(val_texts[:200]) + EDGE_TEXTS
    if RETAIL.exists():
        from training.corpus import text_of

        rows = [json.loads(line) for line in RETAIL.read_text().splitlines()[:200]]
        texts += [text_of(r) for r in rows]
    return texts


@pytest.fixture(scope="module")
def static_cascade(smoke_model: Path, tfidf_model: Path, taxonomy, tmp_path_factory):
    """A copy of the smoke model with a static first stage, written as the pipeline writes it."""
    from training.cascade_fit import attach_cascade
    from training.config import CascadeConfig, load_config
    from training.pipeline import Packaged, load_data
    from training.static_distill import distill_static

    folder = tmp_path_factory.mktemp("static") / "model"
    shutil.copytree(smoke_model, folder)
    manifest = verify_artifact(folder)
    cfg = load_config(ROOT / "training" / "configs" / "smoke.toml")
    splits, _ = load_data(cfg, taxonomy)
    train, val = splits["train"], splits["val"]
    distilled = distill_static(folder, train.texts + val.texts + EDGE_TEXTS)
    main = Packaged(folder, manifest, load_backend(folder, manifest))
    base_manifest = verify_artifact(tfidf_model)
    base = Packaged(tfidf_model, base_manifest, TfidfBackend(tfidf_model, base_manifest))
    sets = {"val": (val.texts, val.y, [""] * len(val.texts))}
    options = CascadeConfig(first_stage="static")
    metrics = attach_cascade(main, base, train, val, sets, options=options, distilled=distilled)
    write_manifest(folder, main.manifest)
    return SimpleNamespace(
        folder=folder, distilled=distilled, train=train, val=val, metrics=metrics, options=options
    )


def test_serving_encoder_equals_model2vec(static_cascade):
    stage = verify_artifact(static_cascade.folder).cascade
    assert stage is not None and stage.static is not None
    router = StaticRouter(static_cascade.folder, stage.static)
    texts = _texts(static_cascade.val.texts)
    assert len(texts) >= 200  # 200 validation texts and the edge cases (+ retail when present)
    ours = router.encoder.encode(texts)
    theirs = static_cascade.distilled.model.encode(texts)
    assert ours.dtype == np.float32 and ours.shape == (len(texts), stage.static.dims)
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)
    # Split or merged batches give the same rows.
    np.testing.assert_array_equal(router.encoder.encode(texts[:7]), ours[:7])


def test_stage_in_manifest_and_clear_rule_on_validation(static_cascade):
    manifest = verify_artifact(static_cascade.folder)
    stage = manifest.cascade
    assert stage is not None and stage.router == "static"
    assert stage.static is not None and stage.static.dims == 256
    assert stage.static.distilled_from.startswith("model.safetensors")
    assert STATIC_FILE in manifest.files and "cascade.skops" in manifest.files
    limit = static_cascade.options.max_clear_share_labelled
    assert stage.validation["cleared_share_labelled"] <= limit + 1e-9
    assert {"tfidf_cleared_share", "static_cleared_share"} <= set(stage.validation)
    val = static_cascade.val
    cleared, _, risk = CascadeBackend(static_cascade.folder, manifest).route(val.texts)
    positive = val.y.any(axis=1).astype(bool)
    assert float(cleared[positive].mean()) <= limit + 1e-9
    assert np.all((risk >= 0) & (risk <= 1))
    assert "cascade_cleared_share" in static_cascade.metrics["val"]


def test_artifact_checksums_cover_the_static_table(static_cascade, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(static_cascade.folder, folder)
    verify_artifact(folder)
    path = folder / STATIC_FILE
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=STATIC_FILE):
        verify_artifact(folder)


def test_forwarded_items_equal_the_transformer(static_cascade):
    folder = static_cascade.folder
    predictor = Predictor.load(folder, backend="cascade")
    backend = predictor.backend
    assert isinstance(backend, CascadeBackend) and backend.static is not None
    texts = _texts(static_cascade.val.texts)
    _, _, risk = backend.route(texts)
    # A cut in the middle, so that both paths are exercised on the smoke model.
    backend.stage = backend.stage.model_copy(update={"clear_below": float(np.median(risk))})
    cleared, _, _ = backend.route(texts)
    assert 0 < cleared.sum() < len(texts)
    transformer = Predictor.load(folder)
    ours = backend.logits(texts)
    reference = transformer.backend.logits(texts)
    forwarded = ~cleared
    np.testing.assert_array_equal(ours[forwarded], reference[forwarded])
    codes = decision_codes(predictor.probabilities(texts), texts, predictor.manifest)
    ref_codes = decision_codes(transformer.probabilities(texts), texts, transformer.manifest)
    np.testing.assert_array_equal(codes[forwarded], ref_codes[forwarded])
    assert (codes[cleared] == 0).all()


def test_router_logit_matches_stored_calibration(static_cascade):
    """The stored stage reproduces the validation cut: its risk on validation clears as recorded."""
    manifest = verify_artifact(static_cascade.folder)
    stage = manifest.cascade
    assert stage is not None and stage.static is not None
    val = static_cascade.val
    raw = TfidfBackend(static_cascade.folder, manifest, stage.model_file).raw(val.texts)
    logit = StaticRouter(static_cascade.folder, stage.static).logit(val.texts, raw[:, -1])
    risk = sigmoid(logit * stage.any_a + stage.any_b)
    share = round(float((risk < stage.clear_below).mean()), 4)
    assert share == pytest.approx(stage.validation["cleared_share"], abs=1e-4)


def test_serving_static_stage_imports_no_torch_nor_model2vec(static_cascade):
    # The static router alone, then the whole cascade. The cascade's TF-IDF part loads
    # scikit-learn, whose array-API shim imports torch when torch is installed (a training
    # install); a serving-only install has no torch, so only model2vec and transformers are
    # checked there.
    code = (
        "import sys; from pathlib import Path\n"
        "from serving.contract.artifact import verify_artifact\n"
        "from serving.backends.static import StaticRouter\n"
        f"folder = Path({str(static_cascade.folder)!r})\n"
        "stage = verify_artifact(folder).cascade\n"
        "StaticRouter(folder, stage.static).logit(['GNSS anti-jam antenna module'], [0.0])\n"
        "bad = [m for m in ('torch', 'transformers', 'model2vec') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from serving.backends.cascade import CascadeBackend\n"
        "CascadeBackend(folder, verify_artifact(folder)).route(['cotton socks, 5 pairs'])\n"
        "bad = [m for m in ('transformers', 'model2vec') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
