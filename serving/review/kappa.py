"""Agreement between two reviewers: Cohen's kappa per label and exact agreement.

kappa = (p_o - p_e) / (1 - p_e): observed agreement corrected for the agreement two raters with
the same label frequencies would reach by chance. Undefined (None) when p_e is 1, that is when
both reviewers gave every item the same answer for a label; exact agreement is reported then.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


def cohens_kappa(a: Sequence[bool], b: Sequence[bool]) -> float | None:
    """Cohen's kappa of two raters' yes/no answers on the same items (None if undefined)."""
    if len(a) != len(b):
        raise ValueError("both raters must answer the same items")
    n = len(a)
    if n == 0:
        return None
    both_yes = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    both_no = sum(1 for x, y in zip(a, b, strict=True) if not x and not y)
    p_o = (both_yes + both_no) / n
    p_a, p_b = sum(map(bool, a)) / n, sum(map(bool, b)) / n
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    if p_e >= 1.0:
        return None
    return (p_o - p_e) / (1 - p_e)


@dataclass(frozen=True)
class LabelAgreement:
    """Agreement on one label over the double-reviewed items."""

    label: str
    n: int
    kappa: float | None
    agreement: float | None
    positives_a: int
    positives_b: int


def agreement_per_label(
    pairs: Sequence[tuple[Sequence[str], Sequence[str]]], labels: Sequence[str]
) -> list[LabelAgreement]:
    """Kappa and raw agreement per label from (first reviewer's labels, second's) pairs."""
    out = []
    for label in labels:
        a = [label in first for first, _ in pairs]
        b = [label in second for _, second in pairs]
        n = len(pairs)
        agree = sum(1 for x, y in zip(a, b, strict=True) if x == y)
        out.append(
            LabelAgreement(
                label=label,
                n=n,
                kappa=None if n == 0 else cohens_kappa(a, b),
                agreement=agree / n if n else None,
                positives_a=sum(a),
                positives_b=sum(b),
            )
        )
    return out
