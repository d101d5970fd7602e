"""The static embedding encoder and router of the cascade's first stage (no torch, no model2vec).

A listing is encoded exactly as model2vec's `StaticModel.encode` encodes it (checked against
model2vec itself in tests/model/test_static_cascade.py): its first `median_token_length *
max_tokens` characters are tokenised with the artifact's tokenizer without special tokens, the
ids cut to `max_tokens`, unknown-token ids dropped, their table rows averaged (float32) and the
mean scaled to unit length. A text without any known token encodes as zeros.

The tokenizer is the artifact's `tokenizer.json` as model2vec's distillation left it: no
post-processor (so no [CLS]/[SEP]), no padding, and only the added tokens model2vec kept
(`StaticTable.added_tokens`) matched as whole tokens; the vocabulary and its ids are unchanged,
so the table is indexed by the artifact's own token ids.

The router is a logistic regression on the embedding plus the TF-IDF any-label column; its
coefficients sit next to the table in the same safetensors file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import StaticTable
from serving.contract.errors import ArtifactError

STATIC_FILE = "static.safetensors"
TABLE_TENSOR = "embeddings"
ROUTER_WEIGHT = "router_weight"  # [dims + 1]: the embedding, then the TF-IDF any-label logit
ROUTER_BIAS = "router_bias"  # [1]
CHUNK = 2048  # texts per gather, so memory stays bounded on a large batch


def static_tokenizer(folder: Path, settings: StaticTable) -> Any:
    """The artifact's tokenizer as model2vec uses it (see the module docstring)."""
    from tokenizers import Tokenizer

    path = folder / "tokenizer.json"
    if not path.exists():
        raise ArtifactError(f"{folder}: the static first stage needs tokenizer.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    keep = set(settings.added_tokens)
    data["added_tokens"] = [t for t in data.get("added_tokens", []) if t["content"] in keep]
    data["post_processor"] = None
    data["padding"] = None
    data["truncation"] = None
    tokenizer = Tokenizer.from_str(json.dumps(data))
    if settings.max_tokens is not None:
        tokenizer.enable_truncation(settings.max_tokens)
    return tokenizer


def _unk_id(tokenizer: Any) -> int | None:
    """The unknown token's id (WordPiece, BPE and WordLevel name it; Unigram numbers it)."""
    token = getattr(tokenizer.model, "unk_token", None)
    if token is not None:
        found = tokenizer.token_to_id(token)
        return int(found) if found is not None else None
    unk = json.loads(tokenizer.to_str())["model"].get("unk_id")
    return int(unk) if unk is not None else None


class StaticEncoder:
    """Texts to normalised mean static embeddings, with a table indexed by the artifact's ids."""

    def __init__(self, tokenizer: Any, table: NDArray[np.float32], settings: StaticTable) -> None:
        if table.ndim != 2 or table.shape[1] != settings.dims:
            raise ArtifactError(
                f"static table has shape {table.shape}; the manifest says {settings.dims} dims"
            )
        if tokenizer.get_vocab_size(with_added_tokens=True) > table.shape[0]:
            raise ArtifactError(
                f"static table has {table.shape[0]} rows for a vocabulary of "
                f"{tokenizer.get_vocab_size(with_added_tokens=True)} tokens"
            )
        self.tokenizer = tokenizer
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.settings = settings
        self.unk = _unk_id(tokenizer)
        self.char_cut = (
            settings.max_tokens * settings.median_token_length
            if settings.max_tokens is not None
            else None
        )

    @classmethod
    def from_table(
        cls, folder: Path, settings: StaticTable, table: NDArray[np.float32]
    ) -> StaticEncoder:
        """An encoder over an in-memory table and the artifact's tokenizer."""
        return cls(static_tokenizer(folder, settings), table, settings)

    def tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text as the encoder uses them (cut, unknown tokens dropped)."""
        if self.char_cut is not None:
            texts = [t[: self.char_cut] for t in texts]
        encodings = self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)
        return [[i for i in e.ids if i != self.unk] for e in encodings]

    def encode(self, texts: list[str]) -> NDArray[np.float32]:
        """One unit-length (or zero) row per text."""
        out = np.zeros((len(texts), self.settings.dims), dtype=np.float32)
        for start in range(0, len(texts), CHUNK):
            out[start : start + CHUNK] = self._encode_chunk(texts[start : start + CHUNK])
        return out

    def _encode_chunk(self, texts: list[str]) -> NDArray[np.float32]:
        ids = self.tokenize(texts)
        out = np.zeros((len(texts), self.settings.dims), dtype=np.float32)
        # Texts of one length share one gather and one mean over the token axis (as model2vec).
        buckets: dict[int, list[int]] = defaultdict(list)
        for i, row in enumerate(ids):
            if row:
                buckets[len(row)].append(i)
        for indices in buckets.values():
            matrix = np.array([ids[i] for i in indices], dtype=np.int64)
            out[indices] = self.table[matrix].mean(axis=1)
        if not self.settings.normalize:
            return out
        norm = np.linalg.norm(out, axis=1, keepdims=True) + 1e-32
        return np.asarray(out / norm, dtype=np.float32)


class StaticRouter:
    """The static table's encoder plus the router's logistic regression, from one file."""

    def __init__(self, folder: Path, settings: StaticTable) -> None:
        from safetensors.numpy import load_file

        path = folder / settings.file
        if not path.exists():
            raise ArtifactError(f"{folder}: the artifact has no {settings.file}")
        tensors = load_file(str(path))
        missing = [k for k in (TABLE_TENSOR, ROUTER_WEIGHT, ROUTER_BIAS) if k not in tensors]
        if missing:
            raise ArtifactError(f"{path}: missing tensors {', '.join(missing)}")
        self.encoder = StaticEncoder.from_table(folder, settings, tensors[TABLE_TENSOR])
        self.weight = np.asarray(tensors[ROUTER_WEIGHT], dtype=np.float64).reshape(-1)
        self.bias = float(np.asarray(tensors[ROUTER_BIAS]).reshape(-1)[0])
        if self.weight.size != settings.dims + 1:
            raise ArtifactError(
                f"{path}: router has {self.weight.size} weights; expected {settings.dims + 1}"
            )

    def logit(self, texts: list[str], any_label: NDArray[np.floating]) -> NDArray[np.float64]:
        """The router's logit per text, given the TF-IDF any-label column for the same texts."""
        emb = self.encoder.encode(texts).astype(np.float64)
        dims = self.encoder.settings.dims
        column = np.asarray(any_label, dtype=np.float64).reshape(-1)
        logit: NDArray[np.float64] = emb @ self.weight[:dims] + column * self.weight[dims]
        return logit + self.bias
