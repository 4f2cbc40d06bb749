"""Prometheus metrics of the service: requests by route and status, their latency, jobs submitted."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("skbridge_api_requests", "API requests answered", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("skbridge_api_request_seconds", "Time to answer an API request (streams: until "
                                 "the headers)", ["method", "route", "status"], buckets=_BUCKETS, registry=self.registry)
        self.submitted = Counter("skbridge_api_jobs_submitted", "Jobs submitted through the API", registry=self.registry)
        self.auth_failures = Counter("skbridge_api_auth_failures", "Requests refused for want of a valid identity",
                                     ["scheme"], registry=self.registry)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            labels = (request.method, template, str(status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - started)

    def render(self) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)
