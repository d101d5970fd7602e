"""The scikit-learn TF-IDF baseline, loaded with skops and an explicit list of trusted types."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import Manifest
from serving.contract.errors import ArtifactError

# Types beyond skops' own safe defaults that the baseline may hold, by exact name. The baseline
# (HashingVectorizer, TfidfTransformer, LogisticRegression) needs none. Never prefixes: trusting
# "builtins." and "numpy." let a crafted file build FunctionTransformer(numpy.vectorize(eval)),
# a model that runs every input text as Python.
EXTRA_TRUSTED_TYPES: frozenset[str] = frozenset()


def load_skops(path: Path) -> object:
    """Load a skops file after checking that every type in it is a trusted one."""
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=str(path))
    refused = [t for t in untrusted if t not in EXTRA_TRUSTED_TYPES]
    if refused:
        raise ArtifactError(f"{path}: refuses to load untrusted types: {', '.join(refused)}")
    return sio.load(str(path), trusted=untrusted)


class TfidfBackend:
    """TF-IDF word and character n-grams with one-vs-rest logistic regression."""

    name = "tfidf"

    def __init__(self, folder: Path, manifest: Manifest, file: str = "model.skops") -> None:
        path = folder / file
        if not path.exists():
            raise ArtifactError(f"{folder}: the artifact has no {file}")
        self.pipeline = load_skops(path)
        self.n_labels = len(manifest.labels)

    def raw(self, texts: list[str]) -> NDArray[np.float32]:
        """Every decision-function column: the labels, then any extra ones (a cascade router)."""
        if not texts:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        scores = self.pipeline.decision_function(texts)  # type: ignore[attr-defined]
        return np.asarray(scores, dtype=np.float32).reshape(len(texts), -1)

    def encode(self, texts: list[str]) -> list[str]:
        """The texts themselves: the pipeline's vectoriser does the rest."""
        return list(texts)

    def run(self, texts: list[str]) -> NDArray[np.float32]:
        """Decision-function values (logits of the logistic regressions), one per label."""
        return self.raw(texts)[:, : self.n_labels]

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Decision-function values for built texts."""
        return self.run(texts)


def same_label_columns(a: TfidfBackend, b: TfidfBackend) -> bool:
    """Whether two loaded TF-IDF pipelines compute the same label columns (the first n).

    True only when both are a FeatureUnion of (HashingVectorizer, TfidfTransformer) branches with
    equal settings and equal idf_ weights, followed by a one-vs-rest classifier whose first n
    estimators have equal coefficients: then every text gets the same n columns from both, and one
    of them can stand in for the other. Any other shape answers False.
    """
    if a.n_labels != b.n_labels:
        return False
    try:
        fa, fb = (x.pipeline.named_steps["features"] for x in (a, b))  # type: ignore[attr-defined]
        branches_a, branches_b = fa.transformer_list, fb.transformer_list
        if [n for n, _ in branches_a] != [n for n, _ in branches_b]:
            return False
        for (_, pa), (_, pb) in zip(branches_a, branches_b, strict=True):
            if repr(pa.named_steps["hash"].get_params()) != repr(
                pb.named_steps["hash"].get_params()
            ):
                return False
            ta, tb = pa.named_steps["tfidf"], pb.named_steps["tfidf"]
            if ta.get_params() != tb.get_params() or not np.array_equal(ta.idf_, tb.idf_):
                return False
        ea = a.pipeline.named_steps["classifier"].estimators_  # type: ignore[attr-defined]
        eb = b.pipeline.named_steps["classifier"].estimators_  # type: ignore[attr-defined]
        if len(ea) < a.n_labels or len(eb) < b.n_labels:
            return False
        return all(
            np.array_equal(ea[j].coef_, eb[j].coef_)
            and np.array_equal(ea[j].intercept_, eb[j].intercept_)
            for j in range(a.n_labels)
        )
    except (AttributeError, KeyError, TypeError, ValueError):
        return False
