"""Shared checks of the project's systemd units (the watcher's and the service's)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

UNITS = Path(__file__).resolve().parents[1] / "systemd"


def unit_settings(unit: Path) -> dict[str, str]:
    """KEY=VALUE lines of a unit file (the last one wins), comments left out."""
    found: dict[str, str] = {}
    for line in unit.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key] = value
    return found


def verify_unit(unit: Path, command: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """`systemd-analyze verify` on the unit, its ExecStart pointed at this checkout's skbridge
    (the installed path does not exist on a test machine)."""
    copy = tmp_path / unit.name
    skbridge = Path(sys.executable).parent / "skbridge"
    lines = [f"ExecStart={skbridge} {command}" if line.startswith("ExecStart=") else line
             for line in unit.read_text().splitlines()]
    copy.write_text("\n".join(lines) + "\n")
    return subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60,
                          check=False)
