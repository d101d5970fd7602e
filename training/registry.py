"""MLflow tracking and the model registry: every run logged, every model registered.

The tracking store defaults to a SQLite file in the project (`mlflow.db`), overridable with
MLFLOW_TRACKING_URI. Registration uses `create_model_version` on the run's logged artifact folder
(`register_model` on a `log_artifacts` folder fails in MLflow 3). Aliases: each run's version gets
`candidate`; `promote` moves `champion` only when the candidate is not worse.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.contract.errors import DualscreenError
from training import paths

CANDIDATE = "candidate"
CHAMPION = "champion"


class RegistryError(DualscreenError):
    """The registry cannot do what was asked."""


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the project's SQLite store."""
    return (
        os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{paths.project_root() / 'mlflow.db'}"
    )


def setup_mlflow() -> Any:
    """Point MLflow at the tracking store (called by commands, never at import)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into dotted MLflow params."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list | type(None)) else str(value)
    return out


def register_version(model_name: str, run: Any, artifact_path: str = "model") -> str:
    """Register the run's logged artifact folder as a new version with alias `candidate`."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    version = client.create_model_version(
        model_name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run.info.run_id
    )
    client.set_registered_model_alias(model_name, CANDIDATE, version.version)
    return str(version.version)


@dataclass
class PromotionResult:
    """Whether the candidate was promoted, and why."""

    promoted: bool
    reason: str
    candidate: str | None
    champion: str | None


def _version_metrics(client: Any, model_name: str, version: str) -> dict[str, float]:
    mv = client.get_model_version(model_name, version)
    run = client.get_run(mv.run_id)
    return {k: float(v) for k, v in run.data.metrics.items()}


def promote(
    model_name: str = "dualscreen",
    tolerance: float = 0.005,
    keys: tuple[str, ...] = ("test.macro_f1", "test.any_label_recall"),
) -> PromotionResult:
    """Move alias `champion` to the candidate unless it is worse than the champion.

    Args:
        model_name: registered model name.
        tolerance: how much lower a metric may be and still count as not worse.
        keys: run metrics compared (test split macro F1 and any-label recall).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    setup_mlflow()
    client = MlflowClient()
    try:
        candidate = client.get_model_version_by_alias(model_name, CANDIDATE)
    except MlflowException:
        raise RegistryError(
            f"model {model_name!r} has no {CANDIDATE!r} version; train first"
        ) from None
    try:
        champion = client.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        champion = None
    cand_v = str(candidate.version)
    champ_v = str(champion.version) if champion is not None else None
    if champion is not None and champion.version == candidate.version:
        return PromotionResult(
            False,
            f"version {candidate.version} is already champion",
            cand_v,
            champ_v,
        )
    if champion is not None:
        new = _version_metrics(client, model_name, candidate.version)
        old = _version_metrics(client, model_name, champion.version)
        worse = []
        for key in keys:
            if key not in new or key not in old:
                worse.append(f"{key} missing on {'candidate' if key not in new else 'champion'}")
            elif new[key] < old[key] - tolerance:
                worse.append(f"{key} {new[key]:.4f} < champion {old[key]:.4f} - {tolerance}")
        if worse:
            return PromotionResult(
                False,
                f"candidate v{candidate.version} is worse than champion "
                f"v{champion.version}: " + "; ".join(worse),
                cand_v,
                champ_v,
            )
    client.set_registered_model_alias(model_name, CHAMPION, candidate.version)
    was = f"(was v{champion.version})" if champion is not None else "(first champion)"
    return PromotionResult(
        True,
        f"champion -> v{candidate.version} {was}",
        cand_v,
        champ_v,
    )


def list_versions(model_name: str = "dualscreen") -> list[dict[str, Any]]:
    """Registered versions with aliases and headline metrics."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    setup_mlflow()
    client = MlflowClient()
    try:
        versions = client.search_model_versions(f"name='{model_name}'")
        aliases = client.get_registered_model(model_name).aliases or {}
    except MlflowException:
        return []
    by_version: dict[str, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(str(version), []).append(alias)
    out = []
    for mv in sorted(versions, key=lambda v: int(v.version)):
        metrics = _version_metrics(client, model_name, mv.version)
        out.append(
            {
                "version": str(mv.version),
                "aliases": sorted(by_version.get(str(mv.version), [])),
                "run_id": mv.run_id,
                "test.macro_f1": metrics.get("test.macro_f1"),
                "test.any_label_recall": metrics.get("test.any_label_recall"),
            }
        )
    return out


def log_run_outputs(mlflow: Any, folder: Path, report_dir: Path, metrics: dict[str, float]) -> None:
    """Log final metrics, the report folder and the artifact folder to the active run."""
    mlflow.log_metrics(metrics)
    mlflow.log_artifacts(str(report_dir), artifact_path="report")
    mlflow.log_artifacts(str(folder), artifact_path="model")
