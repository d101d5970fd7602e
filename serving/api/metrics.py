"""Prometheus metrics of one app instance (its own registry, so tests can build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Request counts, latencies, batch sizes, queue depth and decisions by label."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
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
            "dualscreen_queue_depth", "texts waiting for the model", registry=self.registry
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
