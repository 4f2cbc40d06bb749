"""Entry points slurmctld runs directly (PrologSlurmctld=/…/skbridge-prolog-slurmctld).

Slurm passes no arguments and a minimal environment: the job id comes from SLURM_JOB_ID,
settings from the default config file (or SKBRIDGE_CONFIG). These entry points avoid the
CLI's imports to keep the allocation path short, and never let an exception escape with
an exit code Slurm would misread: a crash requeues the job (exit 1), it never drains a node.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.hooks.fastpath import settle_here
from bridge.slurm.identity import hook_environment

if TYPE_CHECKING:
    from bridge.settings import Settings

HookBody = Callable[["Settings", str, Mapping[str, str]], int]
"""A hook's work: settings, the job id, and slurmctld's trusted variables (bridge.slurm.identity)."""


def open_hook_log(settings: Settings) -> Any:
    path = Path(settings.hook_log_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError:
        return sys.stderr


def run_hook_body(name: str, body: HookBody, settings: Settings, job_id: str, hook_env: Mapping[str, str], *,
                  served_by: str) -> int:
    """Run one hook for one job; any exception becomes exit 1 (requeue), never a drained node."""
    import structlog

    from bridge.log import get_logger

    log = get_logger(component=name, job_id=job_id)
    if not job_id.isdigit():
        log.error("no job id (SLURM_JOB_ID unset)")
        return 1
    with structlog.contextvars.bound_contextvars(served_by=served_by):
        try:
            return body(settings, job_id, hook_environment(hook_env))
        except Exception:
            log.exception("hook crashed")
            return 1


def run_hook(name: str, body: HookBody, job_id: str | None = None) -> int:
    from bridge.errors import BridgeError
    from bridge.log import configure_logging
    from bridge.settings import load_settings

    job_id = job_id or os.environ.get("SLURM_JOB_ID") or (sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        settings = load_settings()
    except BridgeError as exc:
        print(f"skbridge {name}: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, stream=open_hook_log(settings))
    return run_hook_body(name, body, settings, job_id, hook_environment(), served_by="process")


def _main(name: str) -> None:
    settled = settle_here(name, os.environ.get("SLURM_JOB_ID", ""))
    if settled is not None:
        sys.exit(settled)
    if name == "prolog":
        from bridge.hooks.prolog import run_prolog as body
    else:
        from bridge.hooks.epilog import run_epilog as body
    sys.exit(run_hook(name, body))


def prolog_main() -> None:
    _main("prolog")


def epilog_main() -> None:
    _main("epilog")
