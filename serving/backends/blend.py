"""A blended artifact (manifest `blend`, issue 12): transformer logits plus w x TF-IDF logits.

The TF-IDF part reads catalog words and part-number shapes that the transformer, fitted on a few
thousand listings, weighs too lightly; the sum is what the manifest's calibration and thresholds
were fitted on, so every transformer backend serves the sum. Each model input carries its text
(for TF-IDF) and the inner backend's input (token ids), so callers that merge inputs across
requests (the API's micro-batcher, the Ray engine) merge both. The int8 guard judges decisions
on the sum (`OnnxBackend.run(..., offset=)`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends.onnx import OnnxBackend
from serving.backends.tfidf import TfidfBackend
from serving.contract.artifact import Blend, Manifest
from serving.contract.errors import ArtifactError
from serving.contract.text import detect_lang


def blend_weights(blend: Blend, texts: list[str]) -> NDArray[np.float32]:
    """Each text's TF-IDF weight as a column: `weight_by_lang` for its language, else `weight`."""
    if not blend.weight_by_lang:
        return np.full((len(texts), 1), blend.weight, dtype=np.float32)
    by_lang = blend.weight_by_lang
    got = [by_lang.get(detect_lang(t), blend.weight) for t in texts]
    return np.asarray(got, dtype=np.float32).reshape(-1, 1)


class BlendPart:
    """The TF-IDF half of a blend: each text's weight x its label columns."""

    def __init__(self, folder: Path, manifest: Manifest) -> None:
        if manifest.blend is None:
            raise ArtifactError(f"{folder}: this model is not a blend")
        self.blend = manifest.blend
        self.tfidf = TfidfBackend(folder, manifest, file=manifest.blend.model_file)

    def offset(
        self, texts: list[str], tfidf: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """What the TF-IDF part adds to the transformer's raw logits for these texts.

        `tfidf`: the part's logits for these texts when the caller already has them (the cascade,
        whose router computes the same columns).
        """
        columns = self.tfidf.run(texts) if tfidf is None else tfidf
        return (blend_weights(self.blend, texts) * columns).astype(np.float32)


class BlendBackend:
    """Wraps a transformer backend (onnx, onnx-int8, onnx-int8-fast, torch)."""

    def __init__(self, inner: Any, folder: Path, manifest: Manifest) -> None:
        self.inner = inner
        self.part = BlendPart(folder, manifest)
        self.name: str = inner.name

    def __getattr__(self, attr: str) -> Any:
        # Counters and settings of the inner backend (rescored, threads, ...).
        return getattr(self.inner, attr)

    def __setattr__(self, attr: str, value: Any) -> None:
        # Resetting a counter (`backend.rescored = 0`) resets the inner backend's.
        if attr in ("inner", "part", "name"):
            object.__setattr__(self, attr, value)
        else:
            setattr(self.inner, attr, value)

    def encode(self, texts: list[str]) -> list[tuple[str, Any]]:
        """Each text with the inner backend's input for it."""
        return list(zip(texts, self.inner.encode(texts), strict=True))

    def run(self, inputs: list[tuple[str, Any]]) -> NDArray[np.float32]:
        """The inner backend's logits plus the TF-IDF part."""
        if not inputs:
            return np.zeros((0, self.part.tfidf.n_labels), dtype=np.float32)
        offset = self.part.offset([t for t, _ in inputs])
        ids = [i for _, i in inputs]
        if isinstance(self.inner, OnnxBackend):  # its int8 guard judges the sum
            out = self.inner.run(ids, offset=offset)
        else:
            out = self.inner.run(ids)
        return np.asarray(out + offset, dtype=np.float32)

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Blended raw logits for built texts."""
        return self.run(self.encode(texts))
