"""Prometheus metrics of one app instance (its own registry, so tests can build many apps).

Under `serve --workers N` each worker process counts its own requests: `serve` points
`PROMETHEUS_MULTIPROC_DIR` at a fresh folder before the workers start, prometheus_client then
keeps every value in a per-process file there, and `/metrics` (answered by whichever worker
gets the request) adds up all the workers' files. The queue-depth gauge is summed over live
workers; a worker that crashes leaves its last value until the server restarts.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """Request counts, latencies, batch sizes, queue depth and decisions by label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = os.environ.get(MULTIPROCESS_DIR) or None
        self.requests = Counter(
            "dualscreen_requests_total",
            "HTTP requests",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dualscreen_request_seconds",
            "request latency",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.015, 0.025, 0.04, 0.06, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "dualscreen_batch_size",
            "texts per model batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.queue_depth = Gauge(
            "dualscreen_queue_depth",
            "texts waiting for the model",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.items = Counter(
            "dualscreen_items_total", "items classified", ["decision"], registry=self.registry
        )
        self.label_decisions = Counter(
            "dualscreen_label_decisions_total",
            "label decisions (flag or review)",
            ["label", "decision"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "dualscreen_rejected_total",
            "requests refused as saturated",
            ["reason"],
            registry=self.registry,
        )

    def on_batch(self, size: int, depth: int) -> None:
        """Record one model batch."""
        self.batch_size.observe(size)
        self.queue_depth.set(depth)

    def render(self) -> bytes:
        """The Prometheus text exposition: of this app, or of all workers' files."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        merged = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(  # type: ignore[no-untyped-call]
            merged, path=self.multiprocess_dir
        )
        return generate_latest(merged)

    def close(self) -> None:
        """Drop this process's live gauges from the shared folder (a worker shutting down)."""
        if self.multiprocess_dir is not None:
            prometheus_multiprocess.mark_process_dead(  # type: ignore[no-untyped-call]
                os.getpid(), self.multiprocess_dir
            )
