"""Ray Data engine: the same scoring, with model inference spread over a pool of Ray actors.

The driver keeps what must be exact and ordered (reading through the shared reader, rejects,
output order, checkpoints: `serving.batch.score.Scorer`), and hands each chunk's texts to a Ray
Data pipeline: `from_items -> map_batches` with an actor pool, each actor loading the model once.
Calibration and decisions run on the driver with the same code as the local engine, so both
engines give the same numbers (the int8 backend scores one item per run, independent of batching).

On a cluster (`--ray-address ray://head:10001` or `auto`), the model reference must resolve on
every node: a shared folder or an MLflow URI (`models:/dualscreen@champion`) that each actor
downloads. With GPUs, pass `--backend torch` and give actors `num_gpus` (see README).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from serving.contract.artifact import Manifest
from serving.contract.decide import ItemDecision, calibrate, decide
from serving.contract.taxonomy import Taxonomy
from serving.predictor import Predictor


class _LogitsActor:
    """Loads the model once; returns raw logits for a batch of texts."""

    def __init__(self, model: str, backend: str | None, threads: int) -> None:
        self.predictor = Predictor.load(model, backend=backend, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        logits = self.predictor.backend.logits([str(t) for t in batch["text"]])
        return {"i": batch["i"], "logits": list(logits)}


class RayPredictor:
    """Predictor-shaped object whose inference runs on Ray actors."""

    def __init__(
        self,
        local: Predictor,
        model_ref: str,
        backend: str | None = None,
        address: str | None = None,
        actors: int | None = None,
        temp_dir: str | Path | None = None,
        batch_size: int = 256,
    ) -> None:
        import ray

        self.local = local
        self.manifest: Manifest = local.manifest
        self.taxonomy: Taxonomy = local.taxonomy
        self.backend = local.backend
        self.batch_size = batch_size
        if not ray.is_initialized():
            kwargs: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": False,
                "ignore_reinit_error": True,
            }
            if address:
                kwargs["address"] = address
            else:
                # A private local Ray: no token file in the home folder.
                os.environ.setdefault("RAY_AUTH_MODE", "disabled")
                kwargs["num_cpus"] = os.cpu_count() or 1
                tmp = Path(temp_dir or Path("var") / "ray").resolve()
                tmp.mkdir(parents=True, exist_ok=True)
                kwargs["_temp_dir"] = str(tmp)
            ray.init(**kwargs)
        cpus = int(ray.cluster_resources().get("CPU", 1))  # type: ignore[no-untyped-call]
        self.actors = actors or max(1, cpus)
        self.model_ref = model_ref
        self.backend_name = backend
        # Each actor scores one item per run on one thread; half a CPU each avoids the
        # backpressure deadlock of a full-CPU actor pool on a 2-CPU Ray (STACK.md).
        self.threads_per_actor = 1

    @property
    def labels(self) -> list[str]:
        """Output labels in order."""
        return self.manifest.labels

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits computed by the actor pool, in input order."""
        import ray.data

        if not texts:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
        scored = ds.map_batches(
            _LogitsActor,
            fn_constructor_kwargs={
                "model": self.model_ref,
                "backend": self.backend_name,
                "threads": self.threads_per_actor,
            },
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=0.5,
            batch_size=self.batch_size,
            batch_format="numpy",
        )
        out = np.zeros((len(texts), len(self.labels)), dtype=np.float32)
        for row in scored.iter_rows():
            out[int(row["i"])] = np.asarray(row["logits"], dtype=np.float32)
        return out

    def probabilities(self, texts: list[str]) -> NDArray[np.float64]:
        """Calibrated probabilities (calibration on the driver)."""
        return calibrate(self.logits(texts), self.manifest)

    def predict_texts(
        self, texts: list[str], truncated: list[bool] | None = None
    ) -> list[ItemDecision]:
        """Decisions for built texts, exactly as the local predictor makes them."""
        return decide(self.probabilities(texts), texts, self.manifest, truncated)
