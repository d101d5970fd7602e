"""Give a WordPiece base model tokens for the Chinese and Japanese characters it reads as [UNK].

all-MiniLM-L6-v2's vocabulary (English BERT) holds few Han characters: about two thirds of the
Chinese characters in the training listings become [UNK], so "多旋翼" (multi-rotor) and "望远镜"
(telescope) reach the transformer as the same three unknown tokens. Adding each unknown character
that the training texts use often enough as a token of its own (the standard `add_tokens` plus
`resize_token_embeddings`) lets fine-tuning learn them. A new row starts as the [UNK] row plus a
little noise, so before training the model reads these texts exactly as before.

Or (`model.extend_vocab_from`) a new row starts where a multilingual model that knows the
character puts it, carried into the base model's embedding space: a ridge regression from the
source model's word embeddings to the base model's, fitted on the English words of 3+ letters
both vocabularies hold as single tokens (5,445 for MiniLM and multilingual-e5-small; 77 % of the
held-out eighth land nearest their own row), maps the source row of each new character. On
MiniLM from e5 the mapped rows of 飞, 翼, 热, 钛 and 船 lie nearest "flying", "wing", "heat",
"titanium" and "boats", so fine-tuning starts from a reading of the character rather than from
[UNK].

The tokenizer is saved with the artifact (tokenizer.json holds the added tokens), so every backend
tokenizes alike with no change to serving. Sentence-piece vocabularies such as multilingual-e5's
already cover these scripts and are left alone.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.contract.errors import ConfigError

log = logging.getLogger(__name__)

# Han ideographs (with extension A and compatibility ideographs), kana and Hangul syllables.
EAST_ASIAN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002a6df]"
)
NOISE = 0.02  # std of the noise added to each new row, relative to the [UNK] row's std
ANCHOR = re.compile(r"[a-z]{3,}")  # base-vocabulary words used to fit the map between tables
RIDGE = 1.0
MIN_ANCHORS = 500


def unknown_characters(tokenizer: Any, texts: list[str], min_count: int) -> list[str]:
    """East Asian characters the tokenizer maps to its unknown token, used >= min_count times.

    Most frequent first, ties in code-point order (a fixed order gives fixed token ids).
    """
    counts = Counter(ch for text in texts for ch in EAST_ASIAN.findall(text))
    unk = tokenizer.unk_token
    found = [ch for ch, n in counts.items() if n >= min_count and tokenizer.tokenize(ch) == [unk]]
    return sorted(found, key=lambda ch: (-counts[ch], ch))


def _source_ids(source_tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """The source tokenizer's ids per text, without special tokens or a bare word marker."""
    bare = {source_tokenizer.convert_tokens_to_ids(m) for m in ("\u2581", "\u0120")}
    bare.discard(source_tokenizer.unk_token_id)
    encoded: list[list[int]] = source_tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [[i for i in ids if i not in bare] if len(ids) > 1 else ids for ids in encoded]


def _ridge(x: NDArray[np.float64], y: NDArray[np.float64]) -> NDArray[np.float64]:
    """Ridge regression weights (lambda RIDGE) from rows of `x` to rows of `y`."""
    return np.asarray(np.linalg.solve(x.T @ x + RIDGE * np.eye(x.shape[1]), x.T @ y), np.float64)


def mapped_rows(
    tokenizer: Any, table: NDArray[np.float32], chars: list[str], source: str
) -> tuple[NDArray[np.float32], dict[str, Any]]:
    """Rows for `chars` in the base table `table`, mapped from the `source` model's embeddings.

    Anchors are the base vocabulary's whole words of 3+ letters that the source tokenizer also
    reads as one token. A ridge regression from centred source rows to centred base rows is fitted
    on them, its outputs rescaled to the anchors' mean norm (a ridge fit shrinks them). A
    character the source reads as unknown, or as several tokens, takes the mean of its pieces
    (the [UNK] row when it has none).

    Returns the rows and notes (source, anchors, held-out nearest-row accuracy, unknown count).
    """
    from transformers import AutoModel, AutoTokenizer

    src_tok = AutoTokenizer.from_pretrained(source)
    src_table = AutoModel.from_pretrained(source).get_input_embeddings().weight.detach().numpy()
    src_table = src_table.astype(np.float64)
    base = table.astype(np.float64)
    words = sorted(w for w in tokenizer.get_vocab() if ANCHOR.fullmatch(w))
    pairs = []
    for word, ids in zip(words, _source_ids(src_tok, words), strict=True):
        if len(ids) == 1 and ids[0] != src_tok.unk_token_id:
            pairs.append((tokenizer.convert_tokens_to_ids(word), ids[0]))
    if len(pairs) < MIN_ANCHORS:
        raise ConfigError(
            f"model.extend_vocab_from={source!r}: only {len(pairs)} words are single tokens in "
            f"both vocabularies ({MIN_ANCHORS} needed to map one embedding table onto the other)"
        )
    anchors = np.array(pairs)
    x_mean, y_mean = src_table.mean(axis=0), base.mean(axis=0)
    x = src_table[anchors[:, 1]] - x_mean
    y = base[anchors[:, 0]] - y_mean
    weights = _ridge(x, y)
    scale = float(np.linalg.norm(y, axis=1).mean() / np.linalg.norm(x @ weights, axis=1).mean())
    # How well the map carries a word it was not fitted on: refit without every 8th anchor and
    # ask whether each held-out word lands nearest its own base row (cosine, centred).
    held = np.arange(len(anchors)) % 8 == 0
    pred = x[held] @ _ridge(x[~held], y[~held])
    rows = base - y_mean
    rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-12)
    nearest = np.argmax(pred @ rows.T, axis=1)
    accuracy = float((nearest == anchors[held, 0]).mean())
    out = np.empty((len(chars), base.shape[1]), dtype=np.float64)
    unknown = 0
    for k, pieces in enumerate(_source_ids(src_tok, chars)):
        ids = [i for i in pieces if i != src_tok.unk_token_id]
        if not ids:
            unknown += 1
            out[k] = base[tokenizer.unk_token_id]
            continue
        out[k] = y_mean + scale * ((src_table[ids].mean(axis=0) - x_mean) @ weights)
    notes = {
        "from": source,
        "anchors": len(anchors),
        "held_out_nearest": round(accuracy, 3),
        "unknown_to_source": unknown,
    }
    return out.astype(table.dtype), notes


def extend_vocabulary(
    tokenizer: Any,
    model: Any,
    texts: list[str],
    min_count: int,
    freeze_embeddings: bool,
    init_from: str | None = None,
    notes: dict[str, Any] | None = None,
) -> list[str]:
    """Add the characters of `unknown_characters` as tokens; returns them (empty: nothing added).

    `init_from`: a model folder or id whose vocabulary holds the characters; the new rows start
    from its embeddings, mapped (`mapped_rows`); None: from the [UNK] row.
    `notes`: when given, receives `mapped_rows`' notes (source, anchors, held-out accuracy,
    characters unknown to the source), for the run's parameters and report.

    Raises ConfigError when the embeddings are frozen: the new rows could not learn anything.
    """
    import torch

    if min_count <= 0:
        return []
    backend = getattr(tokenizer, "backend_tokenizer", None)
    wordpiece = backend is not None and type(backend.model).__name__ == "WordPiece"
    if not wordpiece or tokenizer.unk_token is None:
        log.info("vocabulary extension skipped: the base tokenizer is not WordPiece")
        return []
    chars = unknown_characters(tokenizer, texts, min_count)
    if not chars:
        return []
    if freeze_embeddings:
        raise ConfigError(
            f"model.extend_vocab_min_count would add {len(chars)} tokens, but "
            "train.freeze_embeddings keeps their embeddings from training; set one of them off"
        )
    added = tokenizer.add_tokens(chars)
    if added != len(chars):
        raise ConfigError(f"the tokenizer took {added} of {len(chars)} new tokens")
    ids = torch.tensor(tokenizer.convert_tokens_to_ids(chars))
    rows = model.get_input_embeddings().weight.shape[0]
    if int(ids.max()) >= rows:
        model.resize_token_embeddings(int(ids.max()) + 1, mean_resizing=False)
    weight = model.get_input_embeddings().weight
    generator = torch.Generator().manual_seed(len(chars))
    with torch.no_grad():
        unk_row = weight[tokenizer.unk_token_id].detach().clone()
        noise = torch.randn((len(chars), weight.shape[1]), generator=generator)
        start = unk_row.expand(len(chars), -1)
        if init_from is not None:
            base_rows = weight[: int(ids.min())].detach().cpu().numpy()
            mapped, mapping = mapped_rows(tokenizer, base_rows, chars, init_from)
            start = torch.from_numpy(mapped).to(weight.device, weight.dtype)
            log.info("new token rows mapped from %s: %s", init_from, mapping)
            if notes is not None:
                notes.update(mapping)
        weight[ids] = start + noise.to(weight.device, weight.dtype) * (NOISE * float(unk_row.std()))
    return chars


def split_embeddings(model: Any, start: int) -> Any:
    """Keep the input embeddings in two parameters while training: the base model's rows and the
    rows from `start` on (the added tokens, which start from [UNK] and learn from nothing, so they
    can take a larger learning rate than the pretrained body). Returns the added rows' parameter.
    `merge_embeddings` puts the table back into one ordinary embedding before saving.
    """
    import torch

    table = model.get_input_embeddings()

    class SplitEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            weight = table.weight.detach()
            self.base = torch.nn.Parameter(weight[:start].clone())
            self.extra = torch.nn.Parameter(weight[start:].clone())
            self.padding_idx = table.padding_idx

        @property
        def weight(self) -> torch.Tensor:
            return torch.cat([self.base, self.extra])

        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.embedding(ids, self.weight, self.padding_idx)

    split = SplitEmbedding()
    model.set_input_embeddings(split)
    return split.extra


def merge_embeddings(model: Any) -> None:
    """Undo `split_embeddings` (nothing to do for an ordinary embedding table)."""
    import torch

    table = model.get_input_embeddings()
    if not hasattr(table, "extra"):
        return
    weight = torch.cat([table.base.detach(), table.extra.detach()])
    merged = torch.nn.Embedding.from_pretrained(  # type: ignore[no-untyped-call]
        weight, freeze=False, padding_idx=table.padding_idx
    )
    model.set_input_embeddings(merged)
