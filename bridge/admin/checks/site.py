"""The site's checks: the configuration loads, and the NAS folders exist as installed."""

from __future__ import annotations

import os
import stat

from bridge.admin.checks.base import Context, Failed, check
from bridge.errors import BridgeError
from bridge.ingest.layout import nas_folders
from bridge.settings import load_settings

# -- config -----------------------------------------------------------------------------------


@check("config", "configuration loads")
def _config(ctx: Context) -> str:
    try:
        ctx.settings = load_settings(ctx.config_path)
    except BridgeError as exc:
        raise Failed(str(exc), "fix the key named above in the config file (see `skbridge config example`)") from exc
    return str(ctx.config_path or os.environ.get("SKBRIDGE_CONFIG") or "/etc/slurm-k8s-bridge/config.yaml")


# -- nas --------------------------------------------------------------------------------------


@check("nas", "NAS folders exist with the right owner and mode")
def _nas(ctx: Context) -> str:
    problems = []
    for spec in nas_folders(ctx.s.nas):
        try:
            info = spec.path.stat()
        except OSError:
            problems.append(f"{spec.path} missing")
            continue
        if stat.S_IMODE(info.st_mode) != spec.mode or info.st_uid != 0:
            problems.append(f"{spec.path} is {oct(stat.S_IMODE(info.st_mode))} owner uid {info.st_uid}, "
                            f"want {oct(spec.mode)} root")
    if problems:
        raise Failed("; ".join(problems), "run `skbridge install nas-layout` as root")
    return f"{len(nas_folders(ctx.s.nas))} folders under {ctx.s.nas.root}"
