"""Inference backends: each turns built texts into raw logits of shape [n, labels].

In two steps, so that callers can merge the inputs of several requests into one model run:
`encode` makes one model input per text (token ids, or the text itself for TF-IDF), `run` turns
any list of such inputs into logits; `logits(texts)` is the two in one.

onnx-int8  ONNX Runtime on the int8 graph (default on CPU; no torch import): static scales,
           batched, or dynamic (manifest `int8`); items near a threshold are re-scored with
           fp32 when the manifest has an int8 guard
onnx-int8-fast  the int8 graph without the guard (faster; decisions agree with fp32 less often)
onnx       ONNX Runtime on the fp32 graph
torch      transformers + torch on model.safetensors
tfidf      the scikit-learn baseline stored with skops (the only backend of a tfidf artifact)
cascade    a cheap first stage clears obvious non-matches, int8 scores the rest

A blended artifact (manifest `blend`) adds w x its TF-IDF part's logits in every transformer
backend (`serving.backends.blend`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import Manifest
from serving.contract.errors import ArtifactError

BACKENDS = ("onnx-int8", "onnx-int8-fast", "onnx", "torch", "tfidf", "cascade")


class Backend(Protocol):
    """Turns texts into logits."""

    name: str

    def encode(self, texts: list[str]) -> list[Any]:
        """One model input per text; inputs of several calls may be concatenated for `run`."""
        ...

    def run(self, inputs: list[Any]) -> NDArray[np.float32]:
        """Raw (uncalibrated) logits, one row per input, columns in manifest label order.

        A row depends on its own input only (padded fp32 batches: to float rounding), so any
        split or merge of the inputs gives the same rows.
        """
        ...

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits for built texts: `run(encode(texts))`."""
        ...


def default_backend(manifest: Manifest) -> str:
    """The backend a model kind uses when none is chosen."""
    return "tfidf" if manifest.kind == "tfidf" else "onnx-int8"


def backend_name(manifest: Manifest, name: str | None = None) -> str:
    """The backend that serves this model when `name` is asked for; ArtifactError if none can."""
    name = name or default_backend(manifest)
    if manifest.kind == "tfidf":
        if name not in ("tfidf", "onnx-int8", "onnx-int8-fast", "onnx"):
            raise ArtifactError(f"a tfidf model is served by the tfidf backend, not {name!r}")
        return "tfidf"
    if name not in BACKENDS or name == "tfidf":
        raise ArtifactError(f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
    return name


def load_backend(
    folder: Path,
    manifest: Manifest,
    name: str | None = None,
    threads: int = 0,
    batch_size: int = 64,
) -> Backend:
    """Create the named backend for an artifact folder (already verified).

    A blended artifact (manifest `blend`) wraps every transformer backend in `BlendBackend`;
    the cascade adds the TF-IDF part to the items it forwards itself.
    """
    name = backend_name(manifest, name)
    if manifest.blend is not None and name not in ("tfidf", "cascade"):
        from serving.backends.blend import BlendBackend

        inner = _load(folder, manifest, name, threads, batch_size)
        return BlendBackend(inner, folder, manifest)
    return _load(folder, manifest, name, threads, batch_size)


def _load(folder: Path, manifest: Manifest, name: str, threads: int, batch_size: int) -> Backend:
    if name == "tfidf":
        from serving.backends.tfidf import TfidfBackend

        return TfidfBackend(folder, manifest)
    if name in ("onnx-int8", "onnx-int8-fast", "onnx"):
        from serving.backends.onnx import OnnxBackend

        file = "model.onnx" if name == "onnx" else "model.int8.onnx"
        return OnnxBackend(
            folder,
            manifest,
            file,
            threads=threads,
            batch_size=batch_size,
            guard=name == "onnx-int8",
        )
    if name == "cascade":
        from serving.backends.cascade import CascadeBackend

        return CascadeBackend(folder, manifest, threads=threads, batch_size=batch_size)
    from serving.backends.torch import TorchBackend

    return TorchBackend(folder, manifest, threads=threads, batch_size=batch_size)
