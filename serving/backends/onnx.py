"""ONNX Runtime backend with the `tokenizers` library: no torch import, fast cold start."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from serving.backends.batching import run_sorted
from serving.contract.artifact import Manifest
from serving.contract.errors import ArtifactError


class OnnxBackend:
    """Runs model.onnx or model.int8.onnx on length-sorted, dynamically padded batches."""

    def __init__(
        self, folder: Path, manifest: Manifest, file: str, threads: int = 0, batch_size: int = 64
    ) -> None:
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        import onnxruntime as ort
        from tokenizers import Tokenizer

        path = folder / file
        if not path.exists():
            raise ArtifactError(f"{folder}: the artifact has no {file}")
        self.name = "onnx-int8" if "int8" in file else "onnx"
        self.batch_size = batch_size
        self.n_labels = len(manifest.labels)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=manifest.rules.max_tokens)

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to the model's limit."""
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def logits_from_ids(self, ids: list[list[int]]) -> NDArray[np.float32]:
        """Logits for pre-tokenised inputs."""
        lengths = [len(i) for i in ids]

        def infer(idx: NDArray[np.intp]) -> NDArray[np.float32]:
            width = max(lengths[i] for i in idx)
            input_ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for row, i in enumerate(idx):
                input_ids[row, : lengths[i]] = ids[i]
                mask[row, : lengths[i]] = 1
            feeds = {"input_ids": input_ids, "attention_mask": mask}
            if "token_type_ids" in self.input_names:
                feeds["token_type_ids"] = np.zeros_like(input_ids)
            result = self.session.run(["logits"], feeds)[0]
            return np.asarray(result, dtype=np.float32)

        return run_sorted(lengths, self.batch_size, self.n_labels, infer)

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits for built texts."""
        if not texts:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        return self.logits_from_ids(self.encode(texts))
