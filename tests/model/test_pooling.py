"""Mean pooling: one definition for training, the ONNX graph and the torch backend.

The smoke model is re-exported with `pooling = "mean"` into a copy, and the two serving backends
must then agree with each other and differ from the [CLS] head they replaced.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from serving.backends import load_backend
from serving.backends.pooling import check_poolable, classifier_logits, pooled_module
from serving.contract.artifact import read_manifest, verify_artifact, write_manifest
from serving.predictor import Predictor

TEXTS = [
    "Quadcopter drone with 4K gimbal camera and 10 km video link",
    "Cotton T-shirt, crew neck, size M",
    "Ring laser gyroscope inertial measurement unit for aircraft navigation, tactical grade",
    "FPGA development board with PCIe and DDR4",
    "AES-256 hardware encrypted USB flash drive FIPS 140-3",
]


@pytest.fixture(scope="module")
def mean_model(smoke_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_onnx

    folder = tmp_path_factory.mktemp("mean") / "model"
    shutil.copytree(smoke_model, folder)
    manifest = read_manifest(folder)
    export_onnx(folder, manifest.rules.max_tokens, "mean")
    rules = manifest.rules.model_copy(update={"pooling": "mean"})
    write_manifest(folder, manifest.model_copy(update={"rules": rules}))
    return folder


def test_mean_pooled_artifact_verifies_and_records_its_pooling(mean_model: Path) -> None:
    assert verify_artifact(mean_model).rules.pooling == "mean"


def test_onnx_graph_and_torch_backend_agree_under_mean_pooling(mean_model: Path) -> None:
    manifest = read_manifest(mean_model)
    torch_logits = load_backend(mean_model, manifest, "torch").logits(TEXTS)
    onnx_logits = load_backend(mean_model, manifest, "onnx").logits(TEXTS)
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)


def test_mean_pooling_changes_the_logits_of_the_same_weights(
    smoke_model: Path, mean_model: Path
) -> None:
    cls = load_backend(smoke_model, read_manifest(smoke_model), "torch").logits(TEXTS)
    mean = load_backend(mean_model, read_manifest(mean_model), "torch").logits(TEXTS)
    assert np.abs(cls - mean).max() > 0.05


def test_padding_does_not_change_a_mean_pooled_item(mean_model: Path) -> None:
    """Padded positions are masked out of the mean: an item scores the same alone or batched."""
    backend = load_backend(mean_model, read_manifest(mean_model), "torch")
    together = backend.logits(TEXTS)
    for i, text in enumerate(TEXTS):
        np.testing.assert_allclose(backend.logits([text])[0], together[i], atol=1e-5)


def test_predictor_serves_the_mean_pooled_artifact(mean_model: Path) -> None:
    onnx = Predictor.load(mean_model, backend="onnx").probabilities(TEXTS)
    torch = Predictor.load(mean_model, backend="torch").probabilities(TEXTS)
    assert onnx.shape == (len(TEXTS), len(read_manifest(mean_model).labels))
    np.testing.assert_allclose(onnx, torch, atol=1e-4)


def test_masked_mean_matches_a_hand_computation(mean_model: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(str(mean_model)).eval()
    tok = AutoTokenizer.from_pretrained(str(mean_model))
    batch = tok(TEXTS[:2], padding=True, return_tensors="pt")
    with torch.inference_mode():
        got = classifier_logits(model, batch["input_ids"], batch["attention_mask"], "mean")
        hidden = model.base_model(**batch).last_hidden_state
        rows = []
        for i in range(2):
            n = int(batch["attention_mask"][i].sum())
            rows.append(hidden[i, :n].mean(dim=0))
        want = model.classifier(torch.stack(rows))
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_mean_pooling_refuses_a_model_without_a_linear_classifier() -> None:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    config = RobertaConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    model = RobertaForSequenceClassification(config)
    check_poolable(model, "cls")
    with pytest.raises(ValueError, match="one linear layer"):
        check_poolable(model, "mean")
    with pytest.raises(ValueError, match="one linear layer"):
        pooled_module(model, "mean")
    with pytest.raises(ValueError, match="unknown pooling"):
        check_poolable(model, "max")


def test_config_accepts_mean_and_rejects_unknown_pooling() -> None:
    from serving.contract.errors import ConfigError
    from training.config import load_config

    root = Path(__file__).resolve().parents[2]
    cfg = load_config(root / "training" / "configs" / "smoke.toml", ["model.pooling='mean'"])
    assert cfg.model.pooling == "mean"
    with pytest.raises(ConfigError):
        load_config(root / "training" / "configs" / "smoke.toml", ["model.pooling='max'"])


def test_training_with_mean_pooling_learns_and_its_validation_logits_use_the_mean(
    root: Path, taxonomy
) -> None:
    """One short epoch through `train_transformer` with pooling "mean" (the training path)."""
    from training.config import load_config
    from training.pipeline import load_data
    from training.train import cfg_model_input, predict_logits, train_transformer

    cfg = load_config(
        root / "training" / "configs" / "smoke.toml",
        [
            "model.pooling='mean'",
            "data.max_train_rows=48",
            "data.max_eval_rows=32",
            "train.epochs=1",
            "model.max_tokens=32",
        ],
    )
    splits, _ = load_data(cfg, taxonomy)
    train, val = splits["train"], splits["val"]
    result = train_transformer(cfg, train.rows, train.y, val.texts, val.y, taxonomy.labels)
    assert len(result.history) == 1 and np.isfinite(result.history[0]["train_loss"])
    texts = val.texts[:8]
    mean = predict_logits(result.model, result.tokenizer, texts, 32, pooling="mean")
    cls = predict_logits(result.model, result.tokenizer, texts, 32, pooling="cls")
    assert mean.shape == (len(texts), len(taxonomy.labels))
    assert np.abs(mean - cls).max() > 1e-3
    # The epoch's validation score was computed on mean-pooled logits, not the [CLS] head's.
    from sklearn.metrics import average_precision_score

    def macro_pr_auc(logits: np.ndarray) -> float:
        cols = [j for j in range(val.y.shape[1]) if val.y[:, j].sum() > 0]
        return float(np.mean([average_precision_score(val.y[:, j], logits[:, j]) for j in cols]))

    # As training read them: the smoke profile puts spec hints before the texts.
    reads = cfg_model_input(cfg)
    full_mean = predict_logits(
        result.model, result.tokenizer, val.texts, 32, model_input=reads, pooling="mean"
    )
    full_cls = predict_logits(
        result.model, result.tokenizer, val.texts, 32, model_input=reads, pooling="cls"
    )
    recorded = result.history[0]["val_macro_pr_auc"]
    assert recorded == pytest.approx(macro_pr_auc(full_mean), abs=1e-6)
    assert recorded != pytest.approx(macro_pr_auc(full_cls), abs=1e-6)
