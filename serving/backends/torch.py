"""transformers + torch backend on model.safetensors (slower start; exact fp32 reference)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from serving.backends.batching import run_sorted
from serving.backends.pooling import check_poolable, classifier_logits
from serving.contract.artifact import Manifest
from serving.contract.specs import model_input


class TorchBackend:
    """Runs the fp32 transformer with length-sorted batches."""

    name = "torch"

    def __init__(
        self, folder: Path, manifest: Manifest, threads: int = 0, batch_size: int = 64
    ) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.torch = torch
        self.batch_size = batch_size
        self.max_tokens = manifest.rules.max_tokens
        self.model_input = model_input(manifest.rules)
        self.n_labels = len(manifest.labels)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            str(folder), local_files_only=True, use_safetensors=True
        )
        self.pooling = manifest.rules.pooling
        check_poolable(self.model, self.pooling)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device)
        self.model.eval()
        # A fast tokenizer call sets truncation and padding on the shared Rust tokenizer:
        # concurrent calls (API requests preparing while the model runs) fail with "Already
        # borrowed" without this lock.
        self._encode_lock = threading.Lock()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, truncated to the model's limit."""
        if not texts:
            return []
        with self._encode_lock:
            texts = self.model_input.many(texts)
            enc = self.tokenizer(texts, truncation=True, max_length=self.max_tokens)
        ids: list[list[int]] = enc["input_ids"]
        return ids

    def run(self, ids: list[list[int]]) -> NDArray[np.float32]:
        """Logits for pre-tokenised inputs, in length-sorted batches."""
        if not ids:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        lengths = [len(i) for i in ids]

        def infer(idx: NDArray[np.intp]) -> NDArray[np.float32]:
            with self._encode_lock:
                batch = self.tokenizer.pad(
                    {"input_ids": [ids[i] for i in idx]}, return_tensors="pt"
                )
            with self.torch.inference_mode():
                out = classifier_logits(
                    self.model,
                    batch["input_ids"].to(self.device),
                    batch["attention_mask"].to(self.device),
                    self.pooling,
                )
            return np.asarray(out.float().cpu().numpy(), dtype=np.float32)

        return run_sorted(lengths, self.batch_size, self.n_labels, infer)

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits for built texts."""
        return self.run(self.encode(texts))
