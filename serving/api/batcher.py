"""Micro-batching: concurrent requests are coalesced into model batches off the event loop.

Each request prepares its own listings (`Predictor.prepare`: text building and tokenisation), puts
the prepared model inputs on a bounded queue and awaits a future. One worker collects jobs until
the batch is full or the oldest job has waited `max_wait_ms`, runs the backend once on the merged
inputs in a single worker thread (the backend sorts each batch by length, so padding stays
small), and hands each job its rows of raw logits; the request then calibrates and decides its
own items (`Predictor.finish`). When the queue holds `max_queue_items` items, `submit` raises
`QueueFull` at once (the API answers 429) instead of queueing forever. A job whose caller gave up
(timeout) is skipped, not computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

Run = Callable[[list[Any]], NDArray[np.float32]]


class QueueFull(Exception):
    """The batching queue is at capacity."""


@dataclass
class _Job:
    inputs: list[Any]
    future: asyncio.Future[NDArray[np.float32]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Coalesces concurrent inference requests into batches."""

    def __init__(
        self,
        run: Run,
        max_batch: int,
        max_wait_ms: float,
        max_queue_items: int,
        on_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue_items = max_queue_items
        self.on_batch = on_batch
        self._jobs: deque[_Job] = deque()
        self._queued = 0
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dualscreen-model")
        self._task: asyncio.Task[None] | None = None
        self._last_batch: tuple[float, int] = (0.0, 0)

    def _busy_recently(self) -> bool:
        """True when the last batch held more than one item: there is concurrent traffic."""
        return self._last_batch[1] > 1

    @property
    def depth(self) -> int:
        """Items waiting for the model."""
        return self._queued

    def start(self) -> None:
        """Start the worker on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker and fail anything still queued."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        while self._jobs:
            job = self._jobs.popleft()
            if not job.future.done():
                job.future.set_exception(RuntimeError("service shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, inputs: list[Any]) -> NDArray[np.float32]:
        """Queue prepared model inputs and wait for their raw logits (one row per input)."""
        if self._queued + len(inputs) > self.max_queue_items:
            raise QueueFull
        future: asyncio.Future[NDArray[np.float32]] = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(inputs, future))
        self._queued += len(inputs)
        self._wakeup.set()
        return await future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._jobs:
                # Let requests that arrived in the same tick join, then wait at most max_wait
                # for more only while the batch is small; at low load a lone request goes at
                # once, under load requests pile up while the model runs and go together.
                await asyncio.sleep(0)
                oldest = self._jobs[0].enqueued
                while self._queued < self.max_batch and self._busy_recently():
                    left = self.max_wait - (time.perf_counter() - oldest)
                    if left <= 0:
                        break
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), timeout=left)
                    self._wakeup.clear()
                batch: list[_Job] = []
                count = 0
                while self._jobs and (
                    not batch or count + len(self._jobs[0].inputs) <= self.max_batch
                ):
                    job = self._jobs.popleft()
                    self._queued -= len(job.inputs)
                    if job.future.done():
                        continue  # the caller timed out or went away
                    batch.append(job)
                    count += len(job.inputs)
                if not batch:
                    continue
                inputs = [x for job in batch for x in job.inputs]
                try:
                    logits = await loop.run_in_executor(self._executor, self.run, inputs)
                except Exception as exc:  # noqa: BLE001 - every waiter must hear of it
                    for job in batch:
                        if not job.future.done():
                            job.future.set_exception(exc)
                    continue
                self._last_batch = (time.perf_counter(), len(inputs))
                if self.on_batch is not None:
                    self.on_batch(len(inputs), self._queued)
                start = 0
                for job in batch:
                    end = start + len(job.inputs)
                    if not job.future.done():
                        job.future.set_result(logits[start:end])
                    start = end
