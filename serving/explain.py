"""The words that drove each label: occlusion, the one implementation behind
`/v1/classify?explain=true` and the review item page.

Each distinct word (surrounding punctuation stripped) is dropped in turn and the text re-scored;
a word's weight for a label is how far that label's calibrated probability falls without it,
measured against the unchanged text scored in the same batch. Both callers go through
`plan_occlusion` and `Occlusion.terms`, so one model and one text show the same words in the API
and in the review UI; the API scores the texts through its micro-batcher, the review UI calls the
predictor directly (`explain_text`).

Compromise: only the first `max_words` distinct words are tried (one scored text per word), so a
word that first appears late in a long description is never weighed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from serving.contract.schemas import Term

ProbFn = Callable[[list[str]], NDArray[np.float64]]
PUNCTUATION = " |:,.;()[]{}\"'!?"
MIN_WEIGHT = 1e-4


def clean_word(word: str) -> str:
    """A word as explanations name it: surrounding punctuation stripped."""
    return word.strip(PUNCTUATION)


@dataclass(frozen=True)
class Occlusion:
    """The texts to score for one explanation: the text itself, then one per dropped word."""

    words: tuple[str, ...]
    texts: tuple[str, ...]

    def terms(
        self, probabilities: NDArray[np.float64], labels: Sequence[str], top: int = 8
    ) -> dict[str, list[Term]]:
        """Per label, the words whose removal lowers its probability most (best first).

        Args:
            probabilities: calibrated probabilities of `texts`, shape [len(texts), len(labels)].
            labels: the model's labels, in column order.
            top: at most this many words per label.

        Returns:
            Every label, each with its words (an empty list when no word lowers it).
        """
        out: dict[str, list[Term]] = {}
        for j, label in enumerate(labels):
            base = float(probabilities[0, j])
            drops = [(w, base - float(probabilities[k + 1, j])) for k, w in enumerate(self.words)]
            kept = sorted((d for d in drops if d[1] > MIN_WEIGHT), key=lambda d: -d[1])[:top]
            out[label] = [Term(term=w, weight=round(v, 4)) for w, v in kept]
        return out


def plan_occlusion(text: str, max_words: int = 48) -> Occlusion:
    """The texts to score to explain `text`: itself, then without each of its distinct words."""
    words = text.split(" ")
    cleaned = [clean_word(w) for w in words]
    distinct = tuple(dict.fromkeys(c for c in cleaned if c))[:max_words]
    variants = [
        " ".join(w for w, c in zip(words, cleaned, strict=True) if c != drop) for drop in distinct
    ]
    return Occlusion(distinct, (text, *variants))


def explain_text(
    probabilities: ProbFn, text: str, labels: Sequence[str], max_words: int = 48, top: int = 8
) -> dict[str, list[Term]]:
    """Occlusion terms of every label for `text`, scored with `probabilities` ({} without words)."""
    plan = plan_occlusion(text, max_words)
    if not plan.words:
        return {}
    return plan.terms(probabilities(list(plan.texts)), labels, top)


class ExplainCache:
    """A small LRU of explanations keyed by (model version, text)."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self._data: OrderedDict[tuple[str, str], dict[str, list[Term]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> dict[str, list[Term]] | None:
        """A cached result, or None."""
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: tuple[str, str], value: dict[str, list[Term]]) -> None:
        """Cache a result."""
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
