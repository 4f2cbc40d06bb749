"""Entry points slurmctld runs directly (PrologSlurmctld=/…/skbridge-prolog-slurmctld).

Slurm passes no arguments and a minimal environment: the job id comes from SLURM_JOB_ID,
settings from the default config file (or SKBRIDGE_CONFIG). These entry points avoid the
CLI's imports to keep the allocation path short, and never let an exception escape with
an exit code Slurm would misread: a crash requeues the job (exit 1), it never drains a node.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

from bridge.errors import BridgeError
from bridge.log import configure_logging, get_logger
from bridge.settings import Settings, load_settings


def _open_log(settings: Settings) -> object:
    path = Path(settings.hook_log_path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("a", encoding="utf-8", buffering=1)
    except OSError:
        return sys.stderr


def run_hook(name: str, body: Callable[[Settings, str], int], job_id: str | None = None) -> int:
    job_id = job_id or os.environ.get("SLURM_JOB_ID") or (sys.argv[1] if len(sys.argv) > 1 else "")
    try:
        settings = load_settings()
    except BridgeError as exc:
        print(f"skbridge {name}: {exc}", file=sys.stderr)
        return 1
    configure_logging(settings.log_level, stream=_open_log(settings))
    log = get_logger(component=name, job_id=job_id)
    if not job_id.isdigit():
        log.error("no job id (SLURM_JOB_ID unset)")
        return 1
    try:
        return body(settings, job_id)
    except Exception:
        log.exception("hook crashed")
        return 1


def prolog_main() -> None:
    from bridge.hooks.prolog import run_prolog

    sys.exit(run_hook("prolog", run_prolog))


def epilog_main() -> None:
    from bridge.hooks.epilog import run_epilog

    sys.exit(run_hook("epilog", run_epilog))
