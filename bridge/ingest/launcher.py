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


def launcher_line(skbridge_path: Path, config_path: Path | None = None) -> str:
    config = f" --config {shlex.quote(str(config_path))}" if config_path is not None else ""
    return f"exec {shlex.quote(str(skbridge_path))} attach{config}  {LAUNCHER_MARKER}"


_LUA_SKBRIDGE = 'local SKBRIDGE = "/opt/slurm-k8s-bridge/bin/skbridge"'
_LUA_CONFIG = 'local SKBRIDGE_CONFIG = ""'


def render_job_submit_lua(template: str, skbridge_path: Path, config_path: Path | None = None) -> str:
    """deploy/slurm/job_submit.lua with this installation's paths (sandbox and install.sh use it)."""
    if _LUA_SKBRIDGE not in template or _LUA_CONFIG not in template:
        raise ValueError("job_submit.lua lacks the SKBRIDGE / SKBRIDGE_CONFIG lines to fill in")

    def lua_string(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    text = template.replace(_LUA_SKBRIDGE, f"local SKBRIDGE = {lua_string(str(skbridge_path))}")
    return text.replace(_LUA_CONFIG, f"local SKBRIDGE_CONFIG = {lua_string(str(config_path or ''))}")


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


def insert_launcher(text: str, skbridge_path: Path, config_path: Path | None = None) -> str:
    """Insert the launcher line after the header; idempotent."""
    if has_launcher(text):
        return text
    lines = text.split("\n")
    at = _header_end(lines)
    if at == len(lines) and lines and lines[-1] == "":
        at -= 1  # keep the file's final newline last
    lines.insert(at, launcher_line(skbridge_path, config_path))
    return "\n".join(lines)


def strip_launcher(text: str) -> str:
    """The user's own script, as the Pod must run it."""
    return "\n".join(line for line in text.split("\n") if not line.rstrip().endswith(LAUNCHER_MARKER))
