"""Cascade routing and int8/fp32 agreement (issue 7)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serving.backends.cascade import CascadeBackend
from serving.contract.decide import decision_codes
from serving.predictor import Predictor
from training.corpus import read_jsonl, text_of

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
SHIRT = "Cotton crew-neck T-shirt, pack of 3 | machine washable, sizes S to XXL"
THERMAL = "LWIR thermal imaging core 640x512 | uncooled VOx microbolometer, NETD < 40 mK"
VAGUE = "module"


def test_smoke_artifact_carries_a_cascade_stage(smoke_run):
    stage = smoke_run.manifest.cascade
    assert stage is not None and stage.model_file == "cascade.skops"
    assert "cascade.skops" in smoke_run.manifest.files
    assert stage.validation["cleared_share_labelled"] <= 0.005 + 1e-9
    assert "cascade" in smoke_run.results["test"]


def test_routing_on_known_cases_and_forwarded_equal_transformer(smoke_model):
    predictor = Predictor.load(smoke_model, backend="cascade")
    backend = predictor.backend
    assert isinstance(backend, CascadeBackend)
    texts = [SHIRT, THERMAL, VAGUE]
    assert backend.stage.router == "any_label"
    _, p1, risk = backend.route(texts)
    assert risk[0] < risk[1]
    backend.stage = backend.stage.model_copy(update={"clear_below": float(risk[0] + risk[1]) / 2})
    cleared, _, _ = backend.route(texts)
    assert cleared.tolist() == [True, False, False]  # the vague item is always forwarded
    logits = backend.logits(texts)
    transformer = Predictor.load(smoke_model).backend.logits(texts)
    np.testing.assert_array_equal(logits[1:], transformer[1:])
    probs = predictor.probabilities(texts)
    cap = [predictor.manifest.thresholds[lb].review * 0.999 for lb in predictor.labels]
    np.testing.assert_allclose(probs[0], np.minimum(p1[0], cap), rtol=1e-4, atol=1e-6)
    assert decision_codes(probs, texts, predictor.manifest)[0] == 0


def _agreement(model: Path) -> float:
    rows = [r for r in read_jsonl(ROOT / "data/corpus/corpus.jsonl") if r["split"] == "test"]
    texts = [text_of(r) for r in rows]
    fp32 = Predictor.load(model, backend="onnx")
    int8 = Predictor.load(model, backend="onnx-int8")
    a = decision_codes(fp32.probabilities(texts), texts, fp32.manifest)
    b = decision_codes(int8.probabilities(texts), texts, int8.manifest)
    return float((a == b).mean())


# Unguarded int8 agreed with fp32 on 96.4 % (smoke) and 95.8 % (default) of test decisions: dynamic
# int8 on this AVX2 CPU moves calibrated logits by 0.08 at the median, and items near a threshold
# change decision. The guarded backend (the default) re-scores those items with fp32.
def test_int8_agrees_with_fp32_on_the_test_split_smoke(smoke_model):
    assert Predictor.load(smoke_model).manifest.int8_guard is not None
    assert _agreement(smoke_model) >= 0.995


@pytest.mark.default_model
def test_int8_agrees_with_fp32_on_the_test_split_default():
    model = ROOT / "models" / "dualscreen"
    if not (model / "manifest.json").exists():
        pytest.skip("models/dualscreen is not trained here (run `make train`)")
    assert _agreement(model) >= 0.995
