"""Distil the fine-tuned transformer into a static embedding table (model2vec) for the cascade.

model2vec runs the transformer once over every token of its vocabulary, mean-pools the outputs,
reduces them with PCA and weights them by an estimated token frequency (SIF); a listing is then
the normalised mean of its tokens' rows, about a hundred times cheaper than the transformer.

The table is distilled from the artifact's own fine-tuned weights (not the base model), so it
carries what fine-tuning taught, and it is indexed by the artifact's own tokenizer: distillation
keeps the whole vocabulary (`token_remove_pattern=None`) and `distill_static` checks that every
token keeps its id. It is stored as `static.safetensors` (float32, no pickle), together with the
router's coefficients when the cascade adds them (`training.cascade_fit`).

Compromise: model2vec 0.10's `[distill]` extra caps transformers below 5.4, which our pin
(5.24) does not meet. We install model2vec and skeletoken without that extra (both pinned in
constraints.txt) and use `distill_from_model`, which works with transformers 5.24 here; the test
in tests/model/test_static_cascade.py compares our serving encoder with model2vec's own.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends.static import (
    STATIC_FILE,
    TABLE_TENSOR,
    StaticEncoder,
    static_tokenizer,
)
from serving.contract.artifact import StaticTable
from serving.contract.errors import ArtifactError

log = logging.getLogger(__name__)


@dataclass
class Distilled:
    """A distilled table, its settings as the manifest records them, and model2vec's model."""

    table: NDArray[np.float32]
    settings: StaticTable
    model: Any  # model2vec.StaticModel: the reference the serving encoder must equal


def distill_static(
    folder: Path,
    probe_texts: list[str],
    pca_dims: int = 256,
    sif_coefficient: float | None = 1e-4,
) -> Distilled:
    """Distil the transformer in an artifact folder into a static table aligned with its tokenizer.

    Args:
        folder: an artifact folder holding the fine-tuned `model.safetensors` and tokenizer.
        probe_texts: texts on which the serving tokenizer must give model2vec's tokens (checked).
        pca_dims: PCA dimensions of the table (model2vec's `pca_dims`).
        sif_coefficient: model2vec's SIF weighting coefficient (None: no weighting).

    Returns:
        The float32 table (rows by the artifact's token ids), its manifest settings, and
        model2vec's StaticModel.

    Raises:
        ArtifactError: the distilled tokenizer does not match the artifact's.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    model = AutoModel.from_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder), use_fast=True)
    static = distill_from_model(
        model=model,
        tokenizer=tokenizer,  # type: ignore[arg-type]
        device="cpu",
        pca_dims=pca_dims,
        sif_coefficient=sif_coefficient,
        # Keep every token: removing some would renumber the rest away from the artifact's ids.
        token_remove_pattern=None,
        quantize_to="float32",
    )
    added = sorted(t.content for t in static.tokenizer.get_added_tokens_decoder().values())
    settings = StaticTable(
        file=STATIC_FILE,
        dims=int(static.embedding.shape[1]),
        pca_dims=pca_dims,
        sif_coefficient=sif_coefficient,
        max_tokens=int(static.max_length) if static.max_length is not None else None,
        median_token_length=int(static.median_token_length),
        normalize=bool(static.normalize),
        added_tokens=added,
        distilled_from="model.safetensors (fine-tuned)",
    )
    own = static_tokenizer(folder, settings)
    table = _reindex(static.embedding, static.tokenizer.get_vocab(), own.get_vocab(True), folder)
    _check_tokens(StaticEncoder(own, table, settings), static, probe_texts, folder)
    return Distilled(table, settings, static)


def _reindex(
    embedding: NDArray[np.floating],
    distilled_vocab: dict[str, int],
    own_vocab: dict[str, int],
    folder: Path,
) -> NDArray[np.float32]:
    """The distilled rows renumbered by the artifact's token ids (tokens it dropped: zeros).

    model2vec drops special tokens such as [CLS] from its vocabulary, which renumbers the rest.
    """
    missing = sorted(t for t in distilled_vocab if t not in own_vocab)
    if missing:
        raise ArtifactError(
            f"{folder}: {len(missing)} distilled tokens are not in the artifact's tokenizer "
            f"(first: {missing[:5]})"
        )
    table = np.zeros((max(own_vocab.values()) + 1, embedding.shape[1]), dtype=np.float32)
    source = np.fromiter(distilled_vocab.values(), dtype=np.int64, count=len(distilled_vocab))
    target = np.fromiter(
        (own_vocab[t] for t in distilled_vocab), dtype=np.int64, count=len(distilled_vocab)
    )
    table[target] = np.asarray(embedding, dtype=np.float32)[source]
    return table


def _check_tokens(encoder: StaticEncoder, static: Any, texts: list[str], folder: Path) -> None:
    """The serving tokenizer must give model2vec's tokens on every probe text."""
    if encoder.char_cut is not None:  # model2vec cuts characters in `encode`, not `tokenize`
        texts = [t[: encoder.char_cut] for t in texts]
    id_to_token = {i: t for t, i in static.tokenizer.get_vocab().items()}
    own_id = encoder.tokenizer.get_vocab(True)
    theirs = static.tokenize(texts)
    ours = encoder.tokenize(texts)
    for text, a, b in zip(texts, theirs, ours, strict=True):
        if [own_id[id_to_token[i]] for i in a] != b:
            raise ArtifactError(
                f"{folder}: the static tokenizer differs from model2vec's on {text[:80]!r}"
            )


def save_static(
    folder: Path, table: NDArray[np.float32], extra: dict[str, NDArray[np.float32]] | None = None
) -> Path:
    """Write the table (and any router arrays) as `static.safetensors`."""
    from safetensors.numpy import save_file

    tensors = {TABLE_TENSOR: np.ascontiguousarray(table, dtype=np.float32)}
    for name, value in (extra or {}).items():
        tensors[name] = np.ascontiguousarray(value, dtype=np.float32)
    path = folder / STATIC_FILE
    save_file(tensors, str(path))
    return path


def encoder_for(folder: Path, settings: StaticTable, table: NDArray[np.float32]) -> StaticEncoder:
    """The serving encoder over an in-memory table (before the file is written)."""
    return StaticEncoder.from_table(folder, settings, table)
