"""The predictor: an artifact folder plus a backend, from listings to scored listings.

Loading verifies the artifact (format version, checksums, no pickle files) and its taxonomy; every
prediction carries the model's name, version and taxonomy version.

Scoring is three steps so that callers can batch across requests: `prepare` (text building and
the backend's tokenisation, per request), `run` (the backend, on any merge of prepared inputs) and
`finish` (calibration and decisions, per request). `score` is the three in one. The API's
micro-batcher merges the `run` step of concurrent requests; the Ray engine runs it on actors
(`serving.batch.ray_engine.RayBackend`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends import Backend, load_backend
from serving.contract.artifact import Manifest
from serving.contract.decide import ItemDecision, calibrate, decide
from serving.contract.listing import CONTENT_FIELDS, Listing, ScoredListing
from serving.contract.open import open_artifact
from serving.contract.taxonomy import Taxonomy
from serving.contract.text import BuiltText, build_listing_text, build_text_from_record


@dataclass(frozen=True)
class Prepared:
    """Listings made ready for the backend: their built texts and one model input each."""

    listings: list[Listing]
    built: list[BuiltText]
    inputs: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def texts(self) -> list[str]:
        """The built model input texts."""
        return [b.text for b in self.built]


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
        review_budget: float | None = None,
        review_ceiling: float | None = None,
    ) -> Predictor:
        """Resolve a folder or MLflow URI, verify it and create the backend.

        `review_budget` and `review_ceiling` (see `open_artifact`) recompute the review
        thresholds from the model's stored review searches; None keeps the model's own.
        """
        folder, manifest, taxonomy = open_artifact(ref, cache_dir, review_budget, review_ceiling)
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
        self, record: Mapping[str, Any], text_cols: Sequence[str] = CONTENT_FIELDS
    ) -> BuiltText:
        """Build the model input of one record with the artifact's length cap."""
        return build_text_from_record(
            record, tuple(text_cols), max_chars=self.manifest.rules.max_chars
        )

    def prepare(
        self,
        listings: Sequence[Listing],
        extra: Sequence[Mapping[str, str]] | None = None,
    ) -> Prepared:
        """Build each listing's text (with `extra` text columns per listing) and encode it."""
        cap = self.manifest.rules.max_chars
        built = [
            build_listing_text(listing, cap, extra[i] if extra is not None else None)
            for i, listing in enumerate(listings)
        ]
        return Prepared(list(listings), built, self.backend.encode([b.text for b in built]))

    def prepare_texts(self, texts: list[str]) -> Prepared:
        """Encode texts that are already built (explanations: a text with a word left out)."""
        built = [BuiltText(t, False) for t in texts]
        return Prepared([], built, self.backend.encode(texts))

    def run(self, inputs: list[Any]) -> NDArray[np.float32]:
        """Raw logits for prepared inputs (of one or several `Prepared`, concatenated)."""
        return self.backend.run(inputs)

    def calibrate(self, logits: NDArray[np.floating]) -> NDArray[np.float64]:
        """Calibrated probabilities from raw logits, shape [n, labels]."""
        return calibrate(logits, self.manifest)

    def finish(self, prepared: Prepared, logits: NDArray[np.floating]) -> list[ScoredListing]:
        """Calibrate the logits of `prepared` and decide each listing."""
        texts = prepared.texts
        truncated = [b.truncated for b in prepared.built]
        decisions = decide(self.calibrate(logits), texts, self.manifest, truncated)
        m = self.manifest
        return [
            ScoredListing(
                listing=listing,
                text=b.text,
                truncated=b.truncated,
                decision=d.decision,
                risk=d.risk,
                probabilities=d.probabilities,
                label_decisions=d.label_decisions,
                reasons=d.reasons,
                model_name=m.name,
                model_version=m.version,
                taxonomy_version=m.taxonomy_version,
            )
            for listing, b, d in zip(prepared.listings, prepared.built, decisions, strict=True)
        ]

    def score(
        self,
        listings: Sequence[Listing],
        extra: Sequence[Mapping[str, str]] | None = None,
    ) -> list[ScoredListing]:
        """Scored listings: `finish(prepare(listings), run(...))`."""
        prepared = self.prepare(listings, extra)
        return self.finish(prepared, self.run(prepared.inputs))

    def probabilities(self, texts: list[str]) -> NDArray[np.float64]:
        """Calibrated probabilities for built texts, shape [n, labels]."""
        return self.calibrate(self.backend.logits(texts))

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
