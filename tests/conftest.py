"""Shared fixtures: the project paths, and one real smoke model trained once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def taxonomy():
    from serving.contract.taxonomy import load_taxonomy

    return load_taxonomy(ROOT / "data" / "taxonomy.yaml")


@pytest.fixture(scope="session")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real SQLite MLflow store for the session (never the project's mlflow.db)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    uri = f"sqlite:///{path}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    return uri


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, mlflow_store: str):
    """Train the smoke profile once (real MiniLM, real ONNX export, real MLflow registration)."""
    from training.config import load_config
    from training.pipeline import run_training

    out = tmp_path_factory.mktemp("models")
    cfg = load_config(
        ROOT / "training" / "configs" / "smoke.toml",
        [f"track.output_dir='{out}'", f"track.report_dir='{out / 'reports'}'"],
    )
    return run_training(cfg, console=None, baseline=True)


def _reused(variable: str) -> Path | None:
    """Developer shortcut: DUALSCREEN_TEST_SMOKE_MODEL / _TFIDF_MODEL name trained folders.

    Only for iterating on a few tests locally; CI and `make test` leave them unset, so the session
    trains its own smoke model.
    """
    value = os.environ.get(variable)
    return Path(value) if value else None


@pytest.fixture(scope="session")
def smoke_model(request: pytest.FixtureRequest) -> Path:
    return _reused("DUALSCREEN_TEST_SMOKE_MODEL") or request.getfixturevalue("smoke_run").folder


@pytest.fixture(scope="session")
def tfidf_model(request: pytest.FixtureRequest) -> Path:
    reused = _reused("DUALSCREEN_TEST_TFIDF_MODEL")
    return reused or request.getfixturevalue("smoke_run").baseline_folder
