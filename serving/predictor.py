"""The predictor: an artifact folder plus a backend, from listing fields to decisions.

Loading verifies the artifact (format version, checksums, no pickle files) and its taxonomy; every
prediction carries the model's name, version and taxonomy version.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends import Backend, load_backend
from serving.contract.artifact import (
    Manifest,
    load_artifact_taxonomy,
    resolve_model_ref,
    verify_artifact,
)
from serving.contract.decide import ItemDecision, calibrate, decide
from serving.contract.taxonomy import Taxonomy
from serving.contract.text import BuiltText, build_text_from_record


@dataclass
class Prediction:
    """A decision with the text it was made on."""

    text: str
    truncated: bool
    result: ItemDecision


class Predictor:
    """Scores listings with a verified artifact."""

    def __init__(
        self, folder: Path, manifest: Manifest, taxonomy: Taxonomy, backend: Backend
    ) -> None:
        self.folder = folder
        self.manifest = manifest
        self.taxonomy = taxonomy
        self.backend = backend

    @classmethod
    def load(
        cls,
        ref: str | Path,
        backend: str | None = None,
        threads: int = 0,
        batch_size: int = 64,
        cache_dir: str | Path | None = None,
    ) -> Predictor:
        """Resolve a folder or MLflow URI, verify it and create the backend."""
        folder = resolve_model_ref(ref, cache_dir=cache_dir)
        manifest = verify_artifact(folder)
        taxonomy = load_artifact_taxonomy(folder, manifest)
        return cls(
            folder,
            manifest,
            taxonomy,
            load_backend(folder, manifest, backend, threads=threads, batch_size=batch_size),
        )

    @property
    def labels(self) -> list[str]:
        """Output labels in order."""
        return self.manifest.labels

    def build(
        self,
        record: Mapping[str, Any],
        text_cols: Sequence[str] = (
            "title",
            "description",
            "brand",
            "seller_category",
            "attributes",
        ),
    ) -> BuiltText:
        """Build the model input of one record with the artifact's length cap."""
        return build_text_from_record(
            record, tuple(text_cols), max_chars=self.manifest.rules.max_chars
        )

    def probabilities(self, texts: list[str]) -> NDArray[np.float64]:
        """Calibrated probabilities for built texts, shape [n, labels]."""
        return calibrate(self.backend.logits(texts), self.manifest)

    def predict_texts(
        self, texts: list[str], truncated: list[bool] | None = None
    ) -> list[ItemDecision]:
        """Decisions for built texts."""
        return decide(self.probabilities(texts), texts, self.manifest, truncated)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Decisions for listing records (title, description, brand, category, attributes)."""
        built = [self.build(r) for r in records]
        texts = [b.text for b in built]
        results = self.predict_texts(texts, [b.truncated for b in built])
        return [Prediction(b.text, b.truncated, r) for b, r in zip(built, results, strict=True)]
