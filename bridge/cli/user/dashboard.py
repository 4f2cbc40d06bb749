"""`skbridge dashboard`: a one-time sign-in link to the web dashboard, proven with your MUNGE credential."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request
import webbrowser
from pathlib import Path

import typer

from bridge.cli.user.common import EXIT_FAILED, EXIT_UNAVAILABLE, EXIT_USAGE, ConfigOption, err, settings_or_exit


def service_url(bind_host: str, port: int) -> str:
    """Where the service answers on this machine: a wildcard bind is reached on loopback."""
    host = "127.0.0.1" if bind_host in ("", "0.0.0.0") else "[::1]" if bind_host == "::" else bind_host  # noqa: S104
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def dashboard(
    url: str | None = typer.Option(None, "--url", help="The service's address (default: service.bind_host and "
                                   "service.port of the config, as seen from this machine)."),
    open_browser: bool = typer.Option(False, "--open", help="Also open the link in this machine's web browser."),
    timeout_s: float = typer.Option(30.0, "--timeout", help="How long to wait for munge and the service."),
    config: Path | None = ConfigOption,
) -> None:
    """Print a sign-in link for the web dashboard (your jobs, their live logs and results, the
    nodes' GPUs, a submit form). The link works once, within a minute; opening it signs the
    browser in as you for service.session_ttl_s.
    """
    if url is None:
        settings = settings_or_exit("dashboard", config)
        url = service_url(settings.service.bind_host, settings.service.port)
    base = url.rstrip("/")
    if not base.startswith(("http://", "https://")):
        err.print(f"skbridge dashboard: --url must start with http:// or https://, not {url!r}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    munge = shutil.which("munge") or "/usr/bin/munge"
    try:
        made = subprocess.run([munge, "-n"], capture_output=True, text=True, timeout=timeout_s, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        err.print(f"skbridge dashboard: munge -n failed (is munged running?): {exc}", markup=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    request = urllib.request.Request(f"{base}/dashboard/ticket", method="POST",  # noqa: S310 (http(s) checked above)
                                     headers={"Authorization": f"MUNGE {made.stdout.strip()}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            ticket = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")[:500]
        err.print(f"skbridge dashboard: the service refused ({exc.code}): {detail}", markup=False)
        raise typer.Exit(EXIT_FAILED) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        err.print(f"skbridge dashboard: no answer from {base}: {exc}", markup=False)
        raise typer.Exit(EXIT_UNAVAILABLE) from exc
    link = base + str(ticket["url"])
    typer.echo(link)
    err.print(f"signed in as {ticket.get('user')}: open the link within a minute (it works once)", markup=False)
    if open_browser:
        webbrowser.open(link)
