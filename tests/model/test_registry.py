"""Alias promotion and refusal against a real SQLite MLflow store (issue 3)."""

from __future__ import annotations

import pytest

from training import registry


@pytest.fixture()
def store(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'registry.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow = registry.setup_mlflow()
    mlflow.set_experiment("registry-test")
    return mlflow, tmp_path


def _register(store, macro_f1: float, recall: float) -> str:
    mlflow, tmp = store
    folder = tmp / f"artifact-{macro_f1}-{recall}"
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    with mlflow.start_run() as run:
        mlflow.log_metrics({"test.macro_f1": macro_f1, "test.any_label_recall": recall})
        mlflow.log_artifacts(str(folder), artifact_path="model")
        return registry.register_version("dualscreen", run)


def test_first_candidate_becomes_champion(store):
    version = _register(store, 0.80, 0.97)
    result = registry.promote("dualscreen")
    assert result.promoted and result.candidate == version and "first champion" in result.reason


def test_worse_candidate_is_refused_with_reason(store):
    _register(store, 0.80, 0.97)
    assert registry.promote("dualscreen").promoted
    _register(store, 0.70, 0.98)
    result = registry.promote("dualscreen")
    assert not result.promoted
    assert "test.macro_f1 0.7000 < champion 0.8000" in result.reason
    _register(store, 0.81, 0.90)
    result = registry.promote("dualscreen")
    assert not result.promoted and "test.any_label_recall" in result.reason


def test_equal_within_tolerance_and_better_are_promoted(store):
    first = _register(store, 0.80, 0.97)
    registry.promote("dualscreen")
    second = _register(store, 0.797, 0.968)
    result = registry.promote("dualscreen", tolerance=0.005)
    assert result.promoted and result.champion == first and result.candidate == second
    third = _register(store, 0.90, 0.99)
    assert registry.promote("dualscreen").candidate == third
    versions = {v["version"]: v["aliases"] for v in registry.list_versions("dualscreen")}
    assert versions[third] == ["candidate", "champion"]


def test_promoting_the_champion_again_is_refused(store):
    _register(store, 0.8, 0.97)
    registry.promote("dualscreen")
    result = registry.promote("dualscreen")
    assert not result.promoted and "already champion" in result.reason


def test_no_candidate_is_a_clear_error(store):
    with pytest.raises(registry.RegistryError, match="no 'candidate' version"):
        registry.promote("dualscreen")
