"""An artifact trained with spec hints is served with them, by every transformer backend."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.contract.artifact import read_manifest, write_manifest
from serving.contract.errors import ArtifactError
from serving.contract.specs import spec_hint
from serving.predictor import Predictor

TEXTS = [
    "Sabrix 12-bit 6.4 GSPS RF-sampling ADC, 9 GHz input bandwidth",
    "benchtop oscilloscope 200 MHz 1 GSa/s 4 channels",
    "ceramic coffee mug 350 ml",
]


def _copy(smoke_model: Path, folder: Path, spec_hints: bool, version: int = 1) -> Path:
    shutil.copytree(smoke_model, folder)
    manifest = read_manifest(folder)
    rules = manifest.rules.model_copy(
        update={"spec_hints": spec_hints, "spec_hints_version": version}
    )
    write_manifest(folder, manifest.model_copy(update={"rules": rules}))
    return folder


@pytest.fixture(scope="module")
def hinted(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the smoke model whose manifest says its transformer reads spec hints."""
    return _copy(smoke_model, tmp_path_factory.mktemp("hints") / "model", True)


@pytest.fixture(scope="module")
def plain(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same weights, read without spec hints."""
    return _copy(smoke_model, tmp_path_factory.mktemp("plain") / "model", False)


@pytest.mark.parametrize("name", ["onnx", "onnx-int8-fast", "torch"])
def test_every_transformer_backend_puts_the_hint_before_the_text(hinted, plain, name):
    with_hints = Predictor.load(hinted, backend=name)
    without = Predictor.load(plain, backend=name)
    got = with_hints.run(with_hints.prepare_texts(TEXTS).inputs)
    want = without.run(without.prepare_texts([spec_hint(t) + t for t in TEXTS]).inputs)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # The hint changes what the model reads where a text states figures, and nothing else.
    unhinted = without.run(without.prepare_texts(TEXTS).inputs)
    assert not np.allclose(got[:2], unhinted[:2], atol=1e-4)
    np.testing.assert_allclose(got[2], unhinted[2], atol=1e-4)


def test_predicting_a_record_reads_the_hint(hinted, plain):
    record = {"title": TEXTS[0], "description": "JESD204B outputs"}
    with_hints = Predictor.load(hinted, backend="onnx").predict([record])[0]
    without = Predictor.load(plain, backend="onnx").predict([record])[0]
    assert with_hints.text == without.text  # the hint is the model's input, not the built text
    assert with_hints.result.probabilities != without.result.probabilities


@pytest.mark.parametrize("name", ["onnx", "onnx-int8", "torch"])
def test_a_model_trained_on_other_hints_is_refused_at_load(smoke_model, tmp_path, name):
    folder = _copy(smoke_model, tmp_path / "model", True, version=99)
    with pytest.raises(ArtifactError, match="spec hints version 99"):
        Predictor.load(folder, backend=name)
