"""Give a WordPiece base model tokens for the Chinese and Japanese characters it reads as [UNK].

all-MiniLM-L6-v2's vocabulary (English BERT) holds few Han characters: about two thirds of the
Chinese characters in the training listings become [UNK], so "多旋翼" (multi-rotor) and "望远镜"
(telescope) reach the transformer as the same three unknown tokens. Adding each unknown character
that the training texts use often enough as a token of its own (the standard `add_tokens` plus
`resize_token_embeddings`) lets fine-tuning learn them. A new row starts as the [UNK] row plus a
little noise, so before training the model reads these texts exactly as before.

The tokenizer is saved with the artifact (tokenizer.json holds the added tokens), so every backend
tokenizes alike with no change to serving. Sentence-piece vocabularies such as multilingual-e5's
already cover these scripts and are left alone.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from typing import Any

from serving.contract.errors import ConfigError

log = logging.getLogger(__name__)

# Han ideographs (with extension A and compatibility ideographs), kana and Hangul syllables.
EAST_ASIAN = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\U00020000-\U0002a6df]"
)
NOISE = 0.02  # std of the noise added to each new row, relative to the [UNK] row's std


def unknown_characters(tokenizer: Any, texts: list[str], min_count: int) -> list[str]:
    """East Asian characters the tokenizer maps to its unknown token, used >= min_count times.

    Most frequent first, ties in code-point order (a fixed order gives fixed token ids).
    """
    counts = Counter(ch for text in texts for ch in EAST_ASIAN.findall(text))
    unk = tokenizer.unk_token
    found = [ch for ch, n in counts.items() if n >= min_count and tokenizer.tokenize(ch) == [unk]]
    return sorted(found, key=lambda ch: (-counts[ch], ch))


def extend_vocabulary(
    tokenizer: Any, model: Any, texts: list[str], min_count: int, freeze_embeddings: bool
) -> list[str]:
    """Add the characters of `unknown_characters` as tokens; returns them (empty: nothing added).

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
        weight[ids] = unk_row + noise.to(weight.dtype) * (NOISE * float(unk_row.std()))
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
