"""Ray Data engine: the same scoring, with the backend run by a pool of Ray actors.

The driver keeps what must be exact and ordered (reading through the shared reader, rejects,
output order, checkpoints: `serving.batch.score.Scorer`) and the predictor's own text building,
calibration and decisions. Only its backend is swapped: `RayBackend` hands each chunk's texts to a
Ray Data pipeline, `from_items -> map_batches` with an actor pool, and each actor loads the real
backend once and runs it. So both engines give the same numbers (the int8 backend scores one item
per run, independent of batching), and the driver never loads the model's weights.

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

from serving.backends import backend_name, load_backend
from serving.contract.artifact import Manifest
from serving.contract.open import open_artifact
from serving.predictor import Predictor


class _BackendActor:
    """Loads the backend once; returns raw logits for a batch of texts."""

    def __init__(
        self,
        model: str,
        backend: str | None,
        threads: int,
        review_budget: float | None,
        review_ceiling: float | None = None,
    ) -> None:
        folder, manifest, _ = open_artifact(model, None, review_budget, review_ceiling)
        self.backend = load_backend(folder, manifest, backend, threads=threads)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        logits = self.backend.logits([str(t) for t in batch["text"]])
        return {"i": batch["i"], "logits": list(logits)}


class RayBackend:
    """A backend whose model runs on Ray actors; its inputs are the texts themselves."""

    def __init__(
        self,
        model_ref: str,
        manifest: Manifest,
        backend: str | None = None,
        address: str | None = None,
        actors: int | None = None,
        temp_dir: str | Path | None = None,
        batch_size: int = 256,
        review_budget: float | None = None,
        review_ceiling: float | None = None,
    ) -> None:
        import ray

        self.name = backend_name(manifest, backend)
        self.n_labels = len(manifest.labels)
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
        # Each actor scores one item per run on one thread; half a CPU each avoids the
        # backpressure deadlock of a full-CPU actor pool on a 2-CPU Ray (STACK.md).
        self.actor_kwargs = {
            "model": model_ref,
            "backend": backend,
            "threads": 1,
            "review_budget": review_budget,
            "review_ceiling": review_ceiling,
        }

    def encode(self, texts: list[str]) -> list[str]:
        """The texts themselves: the actors tokenise."""
        return list(texts)

    def run(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits computed by the actor pool, in input order."""
        import ray.data

        if not texts:
            return np.zeros((0, self.n_labels), dtype=np.float32)
        ds = ray.data.from_items([{"i": i, "text": t} for i, t in enumerate(texts)])
        scored = ds.map_batches(
            _BackendActor,
            fn_constructor_kwargs=self.actor_kwargs,
            compute=ray.data.ActorPoolStrategy(size=self.actors),
            num_cpus=0.5,
            batch_size=self.batch_size,
            batch_format="numpy",
        )
        out = np.zeros((len(texts), self.n_labels), dtype=np.float32)
        for row in scored.iter_rows():
            out[int(row["i"])] = np.asarray(row["logits"], dtype=np.float32)
        return out

    def logits(self, texts: list[str]) -> NDArray[np.float32]:
        """Raw logits for built texts."""
        return self.run(texts)


def ray_predictor(
    model_ref: str,
    backend: str | None = None,
    address: str | None = None,
    actors: int | None = None,
    temp_dir: str | Path | None = None,
    review_budget: float | None = None,
    review_ceiling: float | None = None,
) -> Predictor:
    """A predictor whose backend runs on Ray actors (verified and calibrated on the driver)."""
    folder, manifest, taxonomy = open_artifact(model_ref, None, review_budget, review_ceiling)
    remote = RayBackend(
        model_ref,
        manifest,
        backend,
        address=address,
        actors=actors,
        temp_dir=temp_dir,
        review_budget=review_budget,
        review_ceiling=review_ceiling,
    )
    return Predictor(folder, manifest, taxonomy, remote)
