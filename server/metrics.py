"""Prometheus metrics of one server: requests by method and status, latencies, fit durations,
stored vectors and index sizes. Each server has its own registry (several may share a process).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily

log = logging.getLogger("convergent.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


class _StoreCollector:
    """Gauges read at scrape time: stored vectors by kind, in-memory index sizes by kind."""

    def __init__(self, stored: Callable[[], dict[str, int]], indexes: Callable[[], dict[str, int]]) -> None:
        self.stored, self.indexes = stored, indexes

    def collect(self):  # noqa: ANN201
        stored = GaugeMetricFamily("convergent_stored_vectors", "Vectors in the store", labels=["kind"])
        for kind, count in self.stored().items():
            stored.add_metric([kind], count)
        yield stored
        sizes = GaugeMetricFamily("convergent_index_vectors", "Vectors in in-memory gallery indexes", labels=["index"])
        for kind, count in self.indexes().items():
            sizes.add_metric([kind], count)
        yield sizes


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("convergent_requests", "RPCs by method and status code", ["method", "code"], registry=self.registry)
        self.latency = Histogram("convergent_request_seconds", "RPC latency by method", ["method"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.fit_seconds = Histogram("convergent_fit_seconds", "Duration of fits by method", ["method"],
                                     buckets=LATENCY_BUCKETS, registry=self.registry)
        self._http: WSGIServer | None = None
        self.port: int | None = None

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method).observe(seconds)

    def watch_store(self, stored: Callable[[], dict[str, int]], indexes: Callable[[], dict[str, int]]) -> None:
        self.registry.register(_StoreCollector(stored, indexes))

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP; returns the bound port (``port`` 0 picks a free one)."""
        self._http, _thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._http.server_port
        log.info("metrics on http://%s:%d/metrics", host, self.port)
        return self.port

    def stop(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
