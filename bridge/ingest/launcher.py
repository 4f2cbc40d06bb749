"""The launcher line: makes the batch step follow the Pod instead of running the script.

slurmd runs a batch script on the bare host. The line below, inserted right after the
header (so every `#SBATCH` line is still read), replaces that shell with `skbridge attach`
before any of the user's commands run; the user's text stays intact for the Pod.
This module is the one place that knows the line; deploy/slurm/job_submit.lua builds the
same line for plain `sbatch` and the golden test keeps the two in step.
"""

from __future__ import annotations

import shlex
from pathlib import Path

LAUNCHER_MARKER = "# skbridge-launcher: this job runs in a Kubernetes Pod"


def launcher_line(skbridge_path: Path) -> str:
    return f"exec {shlex.quote(str(skbridge_path))} attach  {LAUNCHER_MARKER}"


def _header_end(lines: list[str]) -> int:
    """Index of the first command line, i.e. where the header (comments, blanks) ends."""
    for index, line in enumerate(lines):
        stripped = line.strip()
        if index == 0 and stripped.startswith("#!"):
            continue
        if stripped and not stripped.startswith("#"):
            return index
    return len(lines)


def has_launcher(text: str) -> bool:
    return any(line.rstrip().endswith(LAUNCHER_MARKER) for line in text.split("\n"))


def insert_launcher(text: str, skbridge_path: Path) -> str:
    """Insert the launcher line after the header; idempotent."""
    if has_launcher(text):
        return text
    lines = text.split("\n")
    at = _header_end(lines)
    if at == len(lines) and lines and lines[-1] == "":
        at -= 1  # keep the file's final newline last
    lines.insert(at, launcher_line(skbridge_path))
    return "\n".join(lines)


def strip_launcher(text: str) -> str:
    """The user's own script, as the Pod must run it."""
    return "\n".join(line for line in text.split("\n") if not line.rstrip().endswith(LAUNCHER_MARKER))
