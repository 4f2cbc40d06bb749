"""`skbridge watch`: run the drop-folder watcher in the foreground (systemd runs it this way)."""

from __future__ import annotations

from pathlib import Path

import typer

from bridge.daemon.watcher import Watcher, reexec_in_place
from bridge.errors import BridgeError
from bridge.log import configure_logging, get_logger
from bridge.settings import load_settings


def watch(
    config: Path | None = typer.Option(None, "--config", "-c", help="Config file (default $SKBRIDGE_CONFIG or "
                                       "/etc/slurm-k8s-bridge/config.yaml)."),
) -> None:
    """Watch the NAS submit folder and submit each complete job file to Slurm as its owner, exactly once.

    Files move submit/ -> processing/ -> accepted/<jobid>-NAME, or failed/NAME with NAME.error
    explaining each problem. Logs are JSON lines on stdout (journald under systemd). Stop with
    SIGTERM: work in progress is finished or resumed at the next start from the journal.
    SIGHUP (`systemctl reload skbridge-watcher`) reloads: when the config file loads, the
    watcher finishes work in progress and starts again in place with that config and the code
    installed now; when it does not, it keeps running and logs why.
    """
    try:
        settings = load_settings(config)
    except BridgeError as exc:
        typer.echo(f"skbridge watch: {exc}", err=True)
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level)
    watcher = Watcher(settings, config_path=config)
    watcher.install_signal_handlers()
    try:
        watcher.run()
    except BridgeError as exc:
        get_logger(component="watcher").error("cannot run", error=str(exc))
        typer.echo(f"skbridge watch: {exc}", err=True)
        raise typer.Exit(1) from exc
    if watcher.reload_on_exit:
        reexec_in_place()
