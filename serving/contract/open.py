"""Open a model reference for scoring: resolve, verify, apply review settings, read its taxonomy.

The one path from a folder or `models:/` URI to a usable (folder, manifest, taxonomy): the
predictor, the Ray engine and `dualscreen evaluate` all call it.
"""

from __future__ import annotations

from pathlib import Path

from serving.contract.artifact import (
    Manifest,
    load_artifact_taxonomy,
    resolve_model_ref,
    verify_artifact,
)
from serving.contract.decide import with_review_settings
from serving.contract.taxonomy import Taxonomy


def open_artifact(
    ref: str | Path,
    cache_dir: str | Path | None = None,
    review_budget: float | None = None,
    review_ceiling: float | None = None,
) -> tuple[Path, Manifest, Taxonomy]:
    """Resolve a folder or MLflow URI and verify it: its folder, manifest and taxonomy.

    `review_budget` and `review_ceiling` (see `decide.parse_review_budget` and
    `decide.parse_review_ceiling`) recompute the review thresholds from the model's stored review
    searches; None keeps the model's own.
    """
    folder = resolve_model_ref(ref, cache_dir=cache_dir)
    manifest = with_review_settings(verify_artifact(folder), review_budget, review_ceiling)
    return folder, manifest, load_artifact_taxonomy(folder, manifest)
