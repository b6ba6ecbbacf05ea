"""The development server's Prometheus metrics, served at GET /monitoring/prometheus/metrics on the REST
port (TF Serving's path, with --monitoring_config_file enabling it there), in TF Serving's names:

  :tensorflow:serving:request_count{model_name, status}          requests answered, by status code name
  :tensorflow:serving:request_latency{model_name, API, entrypoint} histogram of request wall time, in
                                   microseconds (TF Serving's buckets: 10 * 1.8^i); API "predict",
                                   "GetModelMetadata", ...; entrypoint "GRPC" or "REST"
  :tensorflow:serving:batching:processed_batch_size{model_name, op_name}  histogram of the batch sizes
                                   the model ran at (after padding to allowed_batch_sizes); op_name is
                                   the signature
  :tensorflow:serving:batching:padding_size{model_name, op_name}  histogram of the padding rows added

TF Serving exports its counters without Prometheus' `_total` suffix, so request_count is exported as
an untyped sample under its exact name. Each server has its own registry (tests run several).
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import Metric

disable_created_metrics()  # TF Serving exports no *_created series

PATH = "/monitoring/prometheus/metrics"
REQUEST_COUNT = ":tensorflow:serving:request_count"
LATENCY_BUCKETS = [
    10 * 1.8**i for i in range(33)
]  # microseconds, TF Serving's Exponential(10, 1.8, 33)
BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


class _Counts:
    """request_count as TF Serving names it: label values -> count."""

    def __init__(self):
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    def inc(self, model_name: str, status: str) -> None:
        with self._lock:
            key = (model_name, status)
            self._counts[key] = self._counts.get(key, 0) + 1

    def collect(self):
        metric = Metric(REQUEST_COUNT, "The total number of requests.", "unknown")
        with self._lock:
            counts = dict(self._counts)
        for (model_name, status), count in sorted(counts.items()):
            metric.add_sample(REQUEST_COUNT, {"model_name": model_name, "status": status}, count)
        yield metric


class ServingMetrics:
    """The registry of one server and the calls that feed it."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self._counts = _Counts()
        self.registry.register(self._counts)
        self._latency = Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._batch = Histogram(
            ":tensorflow:serving:batching:processed_batch_size",
            "Tracks the batch size distribution on processing by model_name.",
            ["model_name", "op_name"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        self._padding = Histogram(
            ":tensorflow:serving:batching:padding_size",
            "Tracks the padding size distribution on batches by model_name.",
            ["model_name", "op_name"],
            buckets=[0] + BATCH_BUCKETS,
            registry=self.registry,
        )

    def request(
        self, model_name: str, api: str, entrypoint: str, status: str, seconds: float
    ) -> None:
        """One answered request: its status code name ("OK", "INVALID_ARGUMENT", ...) and wall time."""
        self._counts.inc(model_name, status)
        self._latency.labels(model_name, api, entrypoint).observe(seconds * 1e6)

    def batch(self, model_name: str, signature: str, size: int, rows: int) -> None:
        """One batch run at `size` rows, `rows` of them requests' (the rest padding)."""
        self._batch.labels(model_name, signature).observe(size)
        self._padding.labels(model_name, signature).observe(size - rows)

    def exposition(self) -> tuple[bytes, str]:
        """The text the metrics path answers with, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
