"""The NAS folder layout the bridge expects, created with the right owners and modes."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from bridge.settings import NasSettings


@dataclass(frozen=True)
class FolderSpec:
    path: Path
    mode: int
    purpose: str


def nas_folders(nas: NasSettings) -> list[FolderSpec]:
    return [
        FolderSpec(nas.jobs_root, 0o755, "drop-folder tree"),
        # World-writable with the sticky bit, like /tmp: anyone drops, nobody removes another's file.
        FolderSpec(nas.submit_dir, 0o1777, "users drop job files here"),
        FolderSpec(nas.processing_dir, 0o700, "files being validated and submitted (watcher only)"),
        FolderSpec(nas.accepted_dir, 0o755, "submitted files, renamed <jobid>-NAME"),
        FolderSpec(nas.failed_dir, 0o755, "rejected files with NAME.error"),
        FolderSpec(nas.results_root, 0o755, "results/<user>/<jobid>/ written by the epilog"),
        FolderSpec(nas.home_root, 0o755, "per-user NAS directories mounted into Pods"),
    ]


def ensure_nas_layout(nas: NasSettings) -> list[Path]:
    """Create missing folders and fix modes; returns the folders it changed."""
    changed: list[Path] = []
    for spec in nas_folders(nas):
        if not spec.path.is_dir():
            spec.path.mkdir(parents=True, exist_ok=True)
            changed.append(spec.path)
        if stat.S_IMODE(spec.path.stat().st_mode) != spec.mode:
            os.chmod(spec.path, spec.mode)
            if spec.path not in changed:
                changed.append(spec.path)
    return changed
