"""Highlighting for the review item page: which words of the model's text drove which label.

The words and their weights come from `serving.explain` (the same occlusion as
`/v1/classify?explain=true`); this module only cuts the text into segments for the template,
which escapes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from serving.contract.schemas import Term
from serving.explain import clean_word


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
        key = clean_word(word)
        if key in best:
            if plain or sep:
                segments.append(Segment("".join(plain) + sep))
                plain = []
            label, weight = best[key]
            segments.append(Segment(word, label, weight))
        else:
            plain.append(sep + word)
    if plain:
        segments.append(Segment("".join(plain)))
    return segments
