"""Open a model reference for scoring: resolve, verify, apply a review budget, read its taxonomy.

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
from serving.contract.decide import with_review_budget
from serving.contract.taxonomy import Taxonomy


def open_artifact(
    ref: str | Path,
    cache_dir: str | Path | None = None,
    review_budget: float | None = None,
) -> tuple[Path, Manifest, Taxonomy]:
    """Resolve a folder or MLflow URI and verify it: its folder, manifest and taxonomy.

    `review_budget` (see `decide.parse_review_budget`) recomputes the review thresholds from the
    model's stored review path; None keeps the model's own.
    """
    folder = resolve_model_ref(ref, cache_dir=cache_dir)
    manifest = with_review_budget(verify_artifact(folder), review_budget)
    return folder, manifest, load_artifact_taxonomy(folder, manifest)
