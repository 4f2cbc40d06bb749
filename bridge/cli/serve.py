"""`skbridge serve`: the REST API (systemd/skbridge-serve.service runs it this way)."""

from __future__ import annotations

from pathlib import Path

import typer

from bridge.errors import BridgeError
from bridge.log import configure_logging, get_logger
from bridge.settings import load_settings


def serve(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file (default $SKBRIDGE_CONFIG or "
                                       "/etc/slurm-k8s-bridge/config.yaml)."),
    host: str | None = typer.Option(None, "--host", help="Address to listen on (default service.bind_host)."),
    port: int | None = typer.Option(None, "--port", help="TCP port (default service.port)."),
) -> None:
    """Serve the REST API for authenticated lab users: jobs, status with progress, logs (live as
    Server-Sent Events), results, cancel, submit, nodes; OpenAPI docs at /docs, Prometheus metrics
    at /metrics. Callers authenticate with `Authorization: MUNGE $(munge -n)` or a bearer token.

    Runs as root (it submits and cancels as each caller); listens on loopback unless configured.
    """
    try:
        settings = load_settings(config)
    except BridgeError as exc:
        typer.echo(f"skbridge serve: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level)
    import uvicorn

    from bridge.service.app import create_app

    bind = host or settings.service.bind_host
    listen = port or settings.service.port
    get_logger(component="service").info("serving", host=bind, port=listen)
    uvicorn.run(create_app(settings), host=bind, port=listen, log_config=None, access_log=False,
                timeout_graceful_shutdown=5)
