"""The smoke training run end to end, seeding, and the evaluate command (issue 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from serving.contract.artifact import verify_artifact
from serving.predictor import Predictor

pytestmark = pytest.mark.slow


def test_smoke_run_produces_a_complete_verified_artifact(smoke_run):
    folder = smoke_run.folder
    manifest = verify_artifact(folder)
    for name in (
        "config.json",
        "model.safetensors",
        "model.onnx",
        "model.int8.onnx",
        "tokenizer.json",
        "taxonomy.yaml",
        "README.md",
    ):
        assert name in manifest.files, name
    config = json.loads((folder / "config.json").read_text())
    assert list(config["id2label"].values()) == manifest.labels
    assert manifest.kind == "transformer" and manifest.calibration.method == "platt"
    assert manifest.rules.spec_hints  # the smoke profile trains with them, as the default does
    for t in manifest.thresholds.values():
        assert t.review <= t.flag
    assert manifest.onnx_agreement["argmax_agreement"] >= 0.9
    assert manifest.onnx_agreement["max_prob_diff"] < 0.2
    assert manifest.metrics["test"]["n"] > 0
    assert (
        manifest.metrics["training"]["val.ece_after"]
        <= manifest.metrics["training"]["val.ece_before"] + 1e-9
    )
    assert "screening aid" in (folder / "README.md").read_text()


def test_smoke_run_writes_report_with_plots(smoke_run):
    report = smoke_run.report
    text = report.read_text()
    assert "| test | transformer |" in text and "| test | tfidf |" in text
    pngs = list(report.parent.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "test_pr_curves.png",
        "test_reliability.png",
        "test_decisions.png",
    }


def test_smoke_run_is_registered_as_candidate(smoke_run, mlflow_store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_store)
    version = client.get_model_version_by_alias("dualscreen", "candidate")
    assert str(version.version) == smoke_run.registered_version
    run = client.get_run(version.run_id)
    assert "test.macro_f1" in run.data.metrics and "val_loss" in run.data.metrics
    assert run.data.params["model.kind"] == "transformer"
    arts = {a.path for a in client.list_artifacts(version.run_id)}
    assert {"model", "report"} <= arts


def test_registry_uri_loads_the_same_model(smoke_run, mlflow_store, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_store)
    # By version, not alias: later tests (the review loop) register newer candidates.
    uri = f"models:/dualscreen/{smoke_run.registered_version}"
    predictor = Predictor.load(uri, cache_dir=tmp_path)
    assert predictor.manifest.version == smoke_run.manifest.version


def test_tfidf_baseline_serves_through_the_same_contract(tfidf_model):
    predictor = Predictor.load(tfidf_model)
    assert predictor.manifest.kind == "tfidf" and predictor.backend.name == "tfidf"
    assert "model.skops" in predictor.manifest.files
    [pred] = predictor.predict(
        [
            {
                "title": "Cotton crew-neck T-shirt, pack of 3",
                "description": "soft cotton, machine washable",
            }
        ]
    )
    assert set(pred.result.probabilities) == set(predictor.labels)


def test_backends_agree_and_batch_equals_single(smoke_model):
    records = [
        {"title": "LWIR thermal core 640x512", "description": "uncooled VOx, 12 um"},
        {"title": "Cotton T-shirt"},
        {"title": "IC FPGA 285 I/O 484FBGA", "description": "Artix family"},
    ]
    fp32 = Predictor.load(smoke_model, backend="onnx")
    torch_p = Predictor.load(smoke_model, backend="torch")
    texts = [fp32.build(r).text for r in records]
    a = fp32.probabilities(texts)
    b = torch_p.probabilities(texts)
    assert np.abs(a - b).max() < 1e-3
    single = np.vstack([fp32.probabilities([t]) for t in texts])
    assert np.abs(single - a).max() < 1e-4


def test_same_seed_gives_same_metrics(root):
    from serving.contract.taxonomy import load_taxonomy
    from training.config import load_config
    from training.pipeline import load_data

    cfg = load_config(
        root / "training/configs/smoke.toml",
        [
            "data.max_train_rows=48",
            "data.max_eval_rows=40",
            "train.epochs=1",
            "model.max_tokens=32",
            "train.batch_size=16",
        ],
    )
    splits, _ = load_data(cfg, load_taxonomy(root / "data/taxonomy.yaml"))
    labels = load_taxonomy(root / "data/taxonomy.yaml").labels
    runs = [_train(cfg, splits, labels).history[-1] for _ in range(2)]
    assert round(runs[0]["val_loss"], 3) == round(runs[1]["val_loss"], 3)
    assert round(runs[0]["val_macro_pr_auc"], 3) == round(runs[1]["val_macro_pr_auc"], 3)


def test_time_budget_stop_is_recorded(root):
    # A budget smaller than one epoch stops training after the first epoch of three and says
    # so; without a binding budget all epochs run and the flag stays off.
    from serving.contract.taxonomy import load_taxonomy
    from training.config import load_config
    from training.pipeline import load_data

    small = [
        "data.max_train_rows=32",
        "data.max_eval_rows=24",
        "model.max_tokens=24",
        "train.batch_size=16",
        "train.epochs=3",
        "train.patience=5",
    ]
    taxonomy = load_taxonomy(root / "data/taxonomy.yaml")
    for extra, epochs, stopped in (("train.max_minutes=0.00001", 1, True), (None, 3, False)):
        cfg = load_config(root / "training/configs/smoke.toml", small + ([extra] if extra else []))
        splits, _ = load_data(cfg, taxonomy)
        result = _train(cfg, splits, taxonomy.labels)
        assert (len(result.history), result.stopped_by_time_budget) == (epochs, stopped)
    from training.report import time_budget_line

    line = time_budget_line({"epochs_run": 1, "epochs_planned": 3})
    assert "Stopped by the time budget** after 1 of 3 epochs" in line


def _train(cfg, splits, labels):
    from training.train import train_transformer

    train, val = splits["train"], splits["val"]
    return train_transformer(cfg, train.rows, train.y, val.texts, val.y, labels)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dualscreen.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=dict(os.environ),
    )


def test_evaluate_json_on_a_user_csv_with_label_columns(smoke_model, tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text(
        "sku,name,notes,uav,electronics\n"
        "1,Quadcopter aerial platform 55 min endurance,RTK mapping,1,0\n"
        "2,IC FPGA 285 I/O 484FBGA,programmable logic,0,1\n"
        "3,Cotton T-shirt,crew neck,0,0\n"
        "4,Garden hose 20 m,green,0,0\n"
    )
    done = _cli(
        "evaluate",
        "--model",
        str(smoke_model),
        "--data",
        str(path),
        "--json",
        "--id-col",
        "sku",
        "--text-cols",
        "name,notes",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {
        "macro_f1",
        "micro_f1",
        "per_label",
        "any_label",
        "review_rate",
        "flag_rate",
        "ece",
        "n",
        "by_lang",
        "review",
    }
    # The smoke profile's own review ceiling (1: none) and budget (none).
    assert result["review"] == {"ceiling": 1.0, "budget": None}
    assert result["n"] == 4
    assert set(result["any_label"]) >= {"recall", "flag_precision", "clear_rate_negatives"}
    # No lang column: detected from the script; all four rows are English.
    assert list(result["by_lang"]) == ["en"] and result["by_lang"]["en"]["n"] == 4


def test_evaluate_split_and_by_lang_on_the_corpus(smoke_model, root):
    done = _cli(
        "evaluate",
        "--model",
        str(smoke_model),
        "--data",
        str(root / "data" / "corpus" / "corpus.jsonl"),
        "--split",
        "test",
        "--json",
        "--review-budget",
        "none",
        "--review-ceiling",
        "0.2",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["review"] == {"ceiling": 0.2, "budget": None}
    corpus = [json.loads(line) for line in (root / "data" / "corpus" / "corpus.jsonl").open()]
    test = [r for r in corpus if r["split"] == "test"]
    assert result["n"] == len(test)
    expected = {lang: sum(r["lang"] == lang for r in test) for lang in ("en", "zh", "ja", "mixed")}
    assert {k: v["n"] for k, v in result["by_lang"].items()} == {
        k: v for k, v in expected.items() if v
    }


def test_evaluate_reports_per_source_on_realworld(smoke_model, root):
    path = root.parent / "shared" / "realworld" / "components.jsonl"
    if not path.exists():
        pytest.skip("../shared/realworld is not present (evaluation data only)")
    done = _cli("evaluate", "--model", str(smoke_model), "--data", str(path))
    assert done.returncode == 0, done.stderr
    assert "source kicad" in done.stdout or "source digikey" in done.stdout


def test_evaluate_bad_model_is_a_clear_error(tmp_path):
    done = _cli("evaluate", "--model", str(tmp_path), "--data", str(tmp_path / "x.csv"))
    assert done.returncode == 2 and "no manifest.json" in done.stderr
