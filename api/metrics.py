"""Prometheus metrics of the gateway, served at ``/metrics``.

- ``idbody_http_requests_total{route,method,status}`` and
  ``idbody_http_request_duration_seconds{route,method}``: ``route`` is the route's path template
  (``/api/v1/jobs/{request_id}``), never the raw path, so ids do not explode the label set;
- ``idbody_jobs{status="queued"|"running"}`` (read from the queue order and the running set at
  scrape time) and
  ``idbody_jobs_finished_total{status}`` (counted by ``shared.jobs.end`` when a job ends);
- ``idbody_workers_live``: workers with a fresh heartbeat.

Each app has its own registry (no process-global state), so tests can build several apps.

With several gateway processes (``idbody api --workers N``) each process counts only the requests it
answered, and a scrape lands on any one of them. ``idbody api`` then sets prometheus-client's
multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, api.gateway_metrics_dir): every process writes its
counters to files there and a scrape sums them all; the job counts come from Redis either way.

Example::

    metrics = install_metrics(app)            # in create_app
    metrics.bind_store(store)                 # in the lifespan, once Redis exists
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.jobs.end import FINISHED_COUNTS

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class JobsCollector(Collector):
    """Job counts read from Redis when Prometheus scrapes, not kept in this process."""

    def __init__(self) -> None:
        self.store: Any = None

    def collect(self) -> Iterator[Any]:
        if self.store is None:
            return
        jobs = GaugeMetricFamily("idbody_jobs", "Jobs by status, where countable now.", labels=["status"])
        jobs.add_metric(["queued"], float(self.store.queued_count()))
        jobs.add_metric(["running"], float(self.store.running_count()))
        yield jobs
        finished = CounterMetricFamily("idbody_jobs_finished", "Jobs that ended, by final status.", labels=["status"])
        for status, count in sorted(self.store.client.hgetall(FINISHED_COUNTS).items()):
            finished.add_metric([status.decode()], float(count))
        yield finished
        yield GaugeMetricFamily("idbody_workers_live", "Workers with a fresh heartbeat.",
                                value=float(len(self.store.live_workers())))


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("idbody_http_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("idbody_http_request_duration_seconds", "Time to answer an HTTP request.",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.jobs = JobsCollector()
        self.registry.register(self.jobs)

    def bind_store(self, store: Any) -> None:
        self.jobs.store = store

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route, method).observe(seconds)

    def render(self) -> bytes:
        from api.gateway_metrics_dir import multiprocess_dir

        if multiprocess_dir() is None:
            return generate_latest(self.registry)
        # the sum over every gateway process's files, plus the Redis-backed job counts once
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(self.jobs)
        return generate_latest(registry)


class MetricsMiddleware:
    """Plain ASGI middleware (cheaper than BaseHTTPMiddleware): times every HTTP request."""

    def __init__(self, app: Any, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.observe(template, scope["method"], status["code"], time.perf_counter() - started)


def install_metrics(app: FastAPI) -> GatewayMetrics:
    """Add the middleware and the ``/metrics`` route; returns the app's metrics."""
    metrics = GatewayMetrics()
    app.state.metrics = metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    return metrics
