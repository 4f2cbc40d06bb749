"""The service's FastAPI application: identity, routes, metrics, OpenAPI docs at /docs."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response

from bridge.errors import BridgeError
from bridge.service import dashboard, jobs, results, submit
from bridge.service.access import Caller, ServiceState, State, munge_identity
from bridge.service.identity import TokenSigner
from bridge.service.metrics import ServiceMetrics
from bridge.settings import Settings
from bridge.userview.nodes import slurm_nodes


def create_app(settings: Settings) -> FastAPI:
    # /docs and /openapi.json answer only a signed-in browser or an API caller (bridge.service.login).
    app = FastAPI(title="slurm-k8s-bridge", version="1", docs_url=None, openapi_url=None,
                  description="Your Slurm jobs that run as Kubernetes Pods: submit, status, output, results, cancel. "
                              "Authenticate with `Authorization: MUNGE $(munge -n)` or a token from POST /api/v1/token.")
    metrics = ServiceMetrics()
    app.state.service = ServiceState(settings=settings, signer=TokenSigner(settings.service.token_ttl_s), metrics=metrics)
    app.middleware("http")(metrics.middleware)

    @app.get("/healthz", tags=["service"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics", tags=["service"], include_in_schema=False)
    def metrics_endpoint() -> Response:
        return metrics.render()

    @app.post("/api/v1/token", tags=["service"])
    def token(request: Request, state: State) -> dict[str, Any]:
        """A bearer token for the MUNGE credential's user, valid service.token_ttl_s seconds."""
        who = munge_identity(request, state)
        value, expires = state.signer.issue(who.uid, who.gid)
        return {"token": value, "token_type": "Bearer", "expires_at": expires, "user": who.user}

    @app.get("/api/v1/whoami", tags=["service"])
    def whoami(who: Caller) -> dict[str, Any]:
        return {"uid": who.uid, "gid": who.gid, "user": who.user, "admin": who.admin}

    @app.get("/api/v1/nodes", tags=["nodes"])
    def nodes(state: State, who: Caller) -> dict[str, Any]:
        """CPUs, memory and GPUs by type, free and total, per node."""
        del who  # any authenticated user
        try:
            rows = slurm_nodes(state.settings)
        except BridgeError as exc:
            raise jobs.slurm_failure(exc) from exc
        return {"nodes": [row.as_json() for row in rows]}

    app.include_router(submit.router)
    app.include_router(jobs.router)
    app.include_router(results.router)
    app.include_router(dashboard.router)
    return app
