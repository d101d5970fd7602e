"""The words that drove each label: occlusion, the method of `/v1/classify?explain=true`.

Each distinct word is dropped in turn and the text re-scored; a word's weight for a label is how
far that label's calibrated probability falls without it. Results are cached per (model version,
text), so an item page costs one batch of model calls the first time it is opened.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

ProbFn = Callable[[list[str]], NDArray[np.float64]]
_STRIP = " |:,.;()[]"


@dataclass(frozen=True)
class Term:
    """A word and how much removing it lowered a label's probability."""

    term: str
    weight: float


def occlusion(
    probabilities: ProbFn,
    text: str,
    labels: Sequence[str],
    targets: Sequence[str],
    max_words: int = 48,
    top: int = 8,
) -> dict[str, list[Term]]:
    """Per target label, the words whose removal lowers its probability most (best first)."""
    words = text.split(" ")
    distinct = list(dict.fromkeys(w for w in words if w.strip(_STRIP)))[:max_words]
    if not distinct or not targets:
        return {}
    variants = [text] + [" ".join(w for w in words if w != drop) for drop in distinct]
    probs = probabilities(variants)
    out: dict[str, list[Term]] = {}
    for label in targets:
        j = list(labels).index(label)
        base = float(probs[0, j])
        drops = [(distinct[k], base - float(probs[k + 1, j])) for k in range(len(distinct))]
        kept = sorted((d for d in drops if d[1] > 1e-4), key=lambda d: -d[1])[:top]
        out[label] = [Term(w, round(v, 4)) for w, v in kept]
    return out


@dataclass(frozen=True)
class Segment:
    """A piece of the text, marked with the label it drove most (or None)."""

    text: str
    label: str | None = None
    weight: float = 0.0


def highlight(text: str, terms: dict[str, list[Term]]) -> list[Segment]:
    """Split `text` into segments; words that drove a label carry that label (escaped later)."""
    best: dict[str, tuple[str, float]] = {}
    for label, found in terms.items():
        for t in found:
            if t.term not in best or t.weight > best[t.term][1]:
                best[t.term] = (label, t.weight)
    segments: list[Segment] = []
    plain: list[str] = []
    for i, word in enumerate(text.split(" ")):
        sep = " " if i else ""
        if word in best:
            if plain or sep:
                segments.append(Segment("".join(plain) + sep))
                plain = []
            label, weight = best[word]
            segments.append(Segment(word, label, weight))
        else:
            plain.append(sep + word)
    if plain:
        segments.append(Segment("".join(plain)))
    return segments


class ExplainCache:
    """A small LRU of occlusion results keyed by (model version, text)."""

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
