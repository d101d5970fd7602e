"""ONNX Runtime backend with the `tokenizers` library: no torch import, fast cold start.

Three ways to run, chosen by graph:

- fp32 (`model.onnx`): length-sorted, dynamically padded batches; one session using all threads.
- static int8 (`model.int8.onnx` with manifest `int8.method == "static"`, issue 14): activation
  scales are constants, so an item's result does not depend on its batch (equal to one item per
  run up to float rounding). Length-sorted batches of up to `POOLED_BATCH` items, cut where the
  lengths jump (`padding_aware_batches`), are spread over `threads` one-thread sessions: batching
  without a thread barrier after every operator, and little padding even in a small API batch.
- dynamic int8 (older artifacts, or when the static graph missed its agreement target): one
  item per run, items spread over `threads` sessions of one thread each. Dynamic quantisation
  picks one activation scale per tensor, so in a padded batch an item's result would depend on
  its neighbours (measured: up to 0.36 in logits on the smoke model).

In both int8 modes a batch of one runs on a session with all threads, for the latency of a lone
API request.

The int8 guard: int8 moves calibrated logits a little (median 0.08 on the smoke model), which is
enough to change the decision of items that sit near a threshold. When the manifest has an
`int8_guard`, every item whose decision could change within the guard's margin is re-scored with
the fp32 graph (in length-sorted batches, like static int8), so int8 decisions equal fp32
decisions at the rate measured on validation. The `onnx-int8-fast` backend skips the guard.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.backends.batching import padding_aware_batches, run_sorted
from serving.contract.artifact import Manifest
from serving.contract.decide import unstable_decisions
from serving.contract.errors import ArtifactError
from serving.contract.specs import model_input


def load_tokenizer(folder: Path, max_tokens: int) -> Any:
    """The artifact's `tokenizers` tokenizer: no padding, truncated to `max_tokens`."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_tokens)
    return tokenizer


def model_feeds(rows: list[list[int]], input_names: set[str]) -> dict[str, Any]:
    """Padded inputs for token-id rows: ids, attention mask and (if the graph takes them) types."""
    width = max(len(r) for r in rows)
    input_ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = ids
        mask[row, : len(ids)] = 1
    feeds = {"input_ids": input_ids, "attention_mask": mask}
    if "token_type_ids" in input_names:
        feeds["token_type_ids"] = np.zeros_like(input_ids)
    return feeds


POOLED_BATCH = 16  # items per run on a one-thread session; larger batches pad more
# A run on a one-thread session costs about RUN_COST token steps plus one per padded token, and a
# token costs more once a run holds over about POOLED_TOKENS padded tokens (measured on MiniLM
# int8, one quiet core: 97 us per token at 16 x 16, 120 us at 16 x 128; bench/batching.json).
POOLED_TOKENS = 512
RUN_COST = 6


class OnnxBackend:
    """Runs model.onnx (batched) or model.int8.onnx (static: batched, dynamic: one item per run)."""

    def __init__(
        self,
        folder: Path,
        manifest: Manifest,
        file: str,
        threads: int = 0,
        batch_size: int = 64,
        guard: bool = True,
        per_item: bool | None = None,
        pooled: bool | None = None,
    ) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort

        path = folder / file
        if not path.exists():
            raise ArtifactError(f"{folder}: the artifact has no {file}")
        int8 = "int8" in file
        static = int8 and manifest.int8 is not None and manifest.int8.method == "static"
        self.per_item = (int8 and not static) if per_item is None else per_item
        self.pooled = (static if pooled is None else pooled) and not self.per_item
        one_thread = self.per_item or self.pooled
        self.name = ("onnx-int8" if guard else "onnx-int8-fast") if int8 else "onnx"
        self.batch_size = batch_size
        self.n_labels = len(manifest.labels)
        self.threads = threads or max(1, os.cpu_count() or 1)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.inter_op_num_threads = 1
        opts.intra_op_num_threads = 1 if one_thread else self.threads
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.wide = self.session
        if one_thread and self.threads > 1:
            # A lone item (an API request at low load) is faster on all threads at once.
            wide_opts = ort.SessionOptions()
            wide_opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            wide_opts.inter_op_num_threads = 1
            wide_opts.intra_op_num_threads = self.threads
            self.wide = ort.InferenceSession(
                str(path), wide_opts, providers=["CPUExecutionProvider"]
            )
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.pool = (
            ThreadPoolExecutor(self.threads, thread_name_prefix="dualscreen-ort")
            if one_thread and self.threads > 1
            else None
        )
        self.manifest = manifest
        # Built once: a model trained on other spec hints is refused at load, not at first use.
        self.model_input = model_input(manifest.rules)
        self.fallback: OnnxBackend | None = None
        self.rescored = 0
        if int8 and guard and manifest.int8_guard is not None:
            # fp32 rows depend on their own input only (to float rounding): batch them.
            self.fallback = OnnxBackend(
                folder, manifest, "model.onnx", threads=self.threads, per_item=False, pooled=True
            )
        self.tokenizer = load_tokenizer(folder, manifest.rules.max_tokens)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to the model's limit."""
        texts = self.model_input.many(texts)
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def _run(self, rows: list[list[int]], session: Any = None) -> NDArray[np.float32]:
        session = session or self.session
        return np.asarray(
            session.run(["logits"], model_feeds(rows, self.input_names))[0], dtype=np.float32
        )

    def run(
        self, ids: list[list[int]], offset: NDArray[np.float32] | None = None
    ) -> NDArray[np.float32]:
        """Logits for pre-tokenised inputs.

        `offset` (a blended artifact's TF-IDF part, `serving.backends.blend`) is what will be
        added to these logits before calibration: the guard judges decisions on the sum. The
        returned logits never include it.
        """
        if not ids:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        if self.per_item:
            if len(ids) == 1:
                out = self._run(ids, self.wide)
            elif self.pool is None:
                out = np.vstack([self._run([i]) for i in ids])
            else:
                out = np.vstack(list(self.pool.map(lambda i: self._run([i]), ids)))
            return self._guarded(ids, out, offset)
        if self.pooled:
            return self._guarded(ids, self._run_pooled(ids), offset)
        lengths = [len(i) for i in ids]
        return run_sorted(
            lengths, self.batch_size, self.n_labels, lambda idx: self._run([ids[i] for i in idx])
        )

    def _run_pooled(self, ids: list[list[int]]) -> NDArray[np.float32]:
        """Length-sorted batches spread over the one-thread sessions; results in input order."""
        if len(ids) == 1:
            return self._run(ids, self.wide)
        size = max(1, min(POOLED_BATCH, -(-len(ids) // self.threads)))
        batches = padding_aware_batches([len(i) for i in ids], size, POOLED_TOKENS, RUN_COST)
        infer = lambda idx: self._run([ids[i] for i in idx])  # noqa: E731
        results = map(infer, batches) if self.pool is None else self.pool.map(infer, batches)
        out = np.zeros((len(ids), self.n_labels), dtype=np.float32)
        for idx, rows in zip(batches, results, strict=True):
            out[idx] = rows
        return out

    def _guarded(
        self,
        ids: list[list[int]],
        out: NDArray[np.float32],
        offset: NDArray[np.float32] | None = None,
    ) -> NDArray[np.float32]:
        """Re-score with fp32 the items whose decision int8 error could change."""
        guard = self.manifest.int8_guard
        if self.fallback is None or guard is None:
            return out
        judged = out if offset is None else out + offset
        unstable = np.flatnonzero(unstable_decisions(judged, self.manifest, guard.margin))
        if unstable.size:
            out[unstable] = self.fallback.run([ids[i] for i in unstable])
            self.rescored += int(unstable.size)
        return out

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits for built texts."""
        if not texts:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        return self.run(self.encode(texts))
