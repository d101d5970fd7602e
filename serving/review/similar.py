"""Already-decided items most like a listing: TF-IDF cosine over word tokens.

Compromise: the index is rebuilt from the most recent decided items (at most a few thousand)
whenever their count changes, in pure Python; enough for a review team's pace, not for millions.
"""

from __future__ import annotations

import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_TOKEN_RE = re.compile(r"[a-z0-9][a-z0-9.\-/]*[a-z0-9]|[a-z0-9]|[\u3040-\u30ff\u4e00-\u9fff]")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "the",
        "of",
        "for",
        "to",
        "in",
        "on",
        "with",
        "by",
        "from",
        "at",
        "or",
        "is",
        "are",
        "be",
        "as",
        "it",
        "this",
        "that",
        "brand",
        "category",
    ]
)


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens without stop words."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOP]


@dataclass(frozen=True)
class Doc:
    """One decided item in the index."""

    item_id: int
    text: str


class SimilarIndex:
    """A TF-IDF index of decided items."""

    def __init__(self, docs: Sequence[Doc]) -> None:
        self.docs = list(docs)
        counts = [Counter(tokens(d.text)) for d in self.docs]
        df: Counter[str] = Counter()
        for c in counts:
            df.update(c.keys())
        n = len(self.docs)
        self.idf = {t: math.log((1 + n) / (1 + f)) + 1.0 for t, f in df.items()}
        self.vectors = [self._weigh(c) for c in counts]

    def _weigh(self, counts: Counter[str]) -> dict[str, float]:
        vec = {t: (1 + math.log(c)) * self.idf.get(t, 0.0) for t, c in counts.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        return {t: v / norm for t, v in vec.items() if v}

    def query(self, text: str, k: int = 5, exclude: int | None = None) -> list[tuple[int, float]]:
        """The k most similar (item id, cosine) pairs, best first, cosine above 0.05."""
        q = self._weigh(Counter(tokens(text)))
        scored = []
        for doc, vec in zip(self.docs, self.vectors, strict=True):
            if doc.item_id == exclude:
                continue
            small, large = (q, vec) if len(q) < len(vec) else (vec, q)
            score = sum(v * large.get(t, 0.0) for t, v in small.items())
            if score > 0.05:
                scored.append((doc.item_id, round(score, 4)))
        scored.sort(key=lambda s: (-s[1], s[0]))
        return scored[:k]


class SimilarCache:
    """Keeps one index and rebuilds it when the set of decided items changes."""

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._index: SimilarIndex | None = None
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int], docs: Sequence[Doc] | None) -> SimilarIndex | None:
        """The index for `key` (count and newest id); build it from `docs` when given and stale."""
        with self._lock:
            if self._key == key and self._index is not None:
                return self._index
            if docs is None:
                return None
            self._index = SimilarIndex(docs)
            self._key = key
            return self._index
