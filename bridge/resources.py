"""Locate the project's shipped files (manifests, templates) in a checkout or an installation."""

from __future__ import annotations

import os
from pathlib import Path

from bridge.errors import ConfigError

INSTALLED_SHARE_DIR = Path("/opt/slurm-k8s-bridge/share")


def share_dirs() -> list[Path]:
    dirs: list[Path] = []
    explicit = os.environ.get("SKBRIDGE_SHARE_DIR")
    if explicit:
        dirs.append(Path(explicit))
    dirs.append(Path(__file__).resolve().parents[1])  # a source checkout (editable install)
    dirs.append(INSTALLED_SHARE_DIR)  # what install.sh copies
    return dirs


def resource_path(relative: str) -> Path:
    for base in share_dirs():
        candidate = base / relative
        if candidate.exists():
            return candidate
    searched = ", ".join(str(d) for d in share_dirs())
    raise ConfigError(f"cannot find {relative!r} (looked in {searched}); reinstall with install.sh")
