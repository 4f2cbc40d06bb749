"""/docs is the service's own page, rendered from its OpenAPI document: every route, nothing
loaded from elsewhere (a lab's service often reaches no CDN, and the CSP forbids it)."""

from __future__ import annotations

import re

import pytest

from bridge.service.app import create_app
from bridge.service.login import api_routes
from bridge.service.pages import render
from bridge.settings import Settings

pytestmark = pytest.mark.unit


def test_every_operation_is_listed_with_its_parameters() -> None:
    api = create_app(Settings()).openapi()
    routes = api_routes(api)
    listed = {(route["method"], route["path"]) for route in routes}
    expected = {(method.upper(), path) for path, operations in api["paths"].items() for method in operations}
    assert listed == expected
    assert ("GET", "/api/v1/jobs/{job_id}") in listed and ("POST", "/api/v1/jobs/batch") in listed
    jobs = next(route for route in routes if route["method"] == "GET" and route["path"] == "/api/v1/jobs")
    assert {"state", "cursor"} <= {param["name"] for param in jobs["parameters"]}


def test_the_page_loads_nothing_from_elsewhere() -> None:
    api = create_app(Settings()).openapi()
    page = render("api_docs.html", api=api, routes=api_routes(api), signed=None)
    html = page.body.decode()
    assert "/api/v1/jobs/batch" in html and 'href="/openapi.json"' in html
    assert not re.search(r'<(script|link)[^>]+(src|href)="(https?:)?//', html), "no external script or style"
    assert "default-src" in page.headers["content-security-policy"]
