"""Prometheus metrics: HTTP requests measured here, everything else collected
from the parts that own the numbers when `/metrics` is scraped.

Rules:
- One registry per application (never the process-global one), so several
  apps can live in one process (tests).
- Requests are labelled by route template (`/api/v1/products/{pid}/...`),
  never by raw path, so labels stay bounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import Scope


class FunctionCollector(Collector):
    """Adapts a function returning metric families to a prometheus Collector."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "thingshub_http_requests",
            "HTTP requests answered.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.latency = Histogram(
            "thingshub_http_request_seconds",
            "Time to answer an HTTP request.",
            ["method", "route"],
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 30),
        )

        # The labelled children by (method, route, status): `labels` takes a
        # lock and builds a key on every call, which every request would pay.
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe(self, scope: Scope, status: int, seconds: float) -> None:
        """Count one answered request (called by the guard, api/guard.py)."""
        key = (scope.get("method", ""), _route_template(scope), status)
        children = self._children.get(key)
        if children is None:
            method, route, _ = key
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    if route is not None and getattr(route, "path", None):
        return str(route.path)
    app = scope.get("app")
    router = getattr(app, "router", None)
    for candidate in getattr(router, "routes", ()):
        match, _ = candidate.matches(scope)
        if match == Match.FULL:
            return str(getattr(candidate, "path", "other"))
    return "unmatched"
