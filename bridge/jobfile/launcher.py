"""The launcher line: makes the batch step follow the Pod instead of running the script.

slurmd runs a batch script on the bare host. The line below, inserted right after the
header (so every `#SBATCH` line is still read), replaces that shell with `skbridge attach`
before any of the user's commands run; the user's text stays intact for the Pod.
This module is the one place that knows the line; deploy/slurm/job_submit.lua builds the
same line for plain `sbatch` and the golden test keeps the two in step.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from bridge.jobfile.marker import LAUNCHER_MARKER
from bridge.settings import PolicySettings, load_settings

__all__ = ["LAUNCHER_MARKER", "has_launcher", "header_end", "insert_launcher", "launcher_line", "strip_launcher"]
# The interpreters for which the launcher line means "replace this shell with skbridge
# attach" before anything else runs, with at most one harmless option word (the kernel passes
# everything after the path as one argument). Anything else could run the user's text on the
# host: `#!/usr/bin/env -S sh -c '...'`, an awk or perl program, `bash -l`/`-i` reading the
# user's startup files. job_submit.lua allows exactly the same lines.
SHELL_INTERPRETER = re.compile(r"^#![ \t]*(?:(?:/usr)?/bin/(?:bash|sh)(?: -[euxv]+)?|/usr/bin/env (?:bash|sh))[ \t]*$")


def launcher_line(skbridge_path: Path, config_path: Path | None = None) -> str:
    config = f" --config {shlex.quote(str(config_path))}" if config_path is not None else ""
    return f"exec {shlex.quote(str(skbridge_path))} attach{config}  {LAUNCHER_MARKER}"


_LUA_SKBRIDGE = 'local SKBRIDGE = "/opt/slurm-k8s-bridge/bin/skbridge"'
_LUA_CONFIG = 'local SKBRIDGE_CONFIG = ""'
_LUA_POLICY = "local POLICY = nil"


def render_job_submit_lua(template: str, skbridge_path: Path, config_path: Path | None = None,
                          policy: PolicySettings | None = None) -> str:
    """deploy/slurm/job_submit.lua with this installation's paths and site maxima.

    The maxima come from `policy`, else from the config file at `config_path` when it exists,
    else the defaults: the plugin checks them on the job as slurmctld will run it, which is
    the only place options given on sbatch's command line or in SBATCH_* variables are seen.
    """
    if _LUA_SKBRIDGE not in template or _LUA_CONFIG not in template or _LUA_POLICY not in template:
        raise ValueError("job_submit.lua lacks the SKBRIDGE / SKBRIDGE_CONFIG / POLICY lines to fill in")
    if policy is None:
        policy = load_settings(config_path).policy if config_path is not None and config_path.exists() \
            else PolicySettings()
    def lua_string(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    def lua_set(names: list[str]) -> str:
        return "{" + ", ".join(f"[{lua_string(name)}] = true" for name in names) + "}"

    limits = {"max_time_minutes": policy.max_time_minutes, "max_mem_mib": policy.max_mem_mib,
              "max_gpus": policy.max_gpus, "max_cpus": policy.max_cpus_per_task,
              "max_array_tasks": policy.max_array_tasks, "max_nodes": policy.max_nodes}
    # One road: what happens to a job without #K8S_IMAGE (bridge.jobfile.routing decides the same).
    fields = [f"{k} = {v}" for k, v in limits.items()] + [
        f"default_image = {'true' if policy.default_image else 'false'}",
        f"host_accounts = {lua_set(policy.host_accounts)}", f"host_partitions = {lua_set(policy.host_partitions)}"]
    template = template.replace(_LUA_POLICY, "local POLICY = {" + ", ".join(fields) + "}")

    text = template.replace(_LUA_SKBRIDGE, f"local SKBRIDGE = {lua_string(str(skbridge_path))}")
    return text.replace(_LUA_CONFIG, f"local SKBRIDGE_CONFIG = {lua_string(str(config_path or ''))}")


def header_end(lines: list[str]) -> int:
    """Index of the first line bash would run: where the launcher line goes.

    A header line is blank or starts with `#` after spaces and tabs: bash skips it, and so does
    sbatch (which also counts \v, \f and \r as spaces; the validator refuses headers where the
    two differ). deploy/slurm/job_submit.lua computes the same index.
    """
    for index, line in enumerate(lines):
        lead = line.lstrip(" \t")
        if lead and not lead.startswith("#"):
            return index
    return len(lines)


def _insertion_point(lines: list[str]) -> int:
    at = header_end(lines)
    if at == len(lines) and lines and lines[-1] == "":
        at -= 1  # keep the file's final newline last
    return at


def _is_generated(line: str) -> bool:
    """True for a line `launcher_line` makes, for any paths: rebuilt from its words, compared whole."""
    if not line.endswith("  " + LAUNCHER_MARKER):
        return False
    try:
        words = shlex.split(line.removesuffix("  " + LAUNCHER_MARKER))
    except ValueError:
        return False
    if len(words) == 3 and words[0] == "exec" and words[2] == "attach":
        return line == launcher_line(Path(words[1]))
    if len(words) == 5 and words[0] == "exec" and words[2:4] == ["attach", "--config"]:
        return line == launcher_line(Path(words[1]), Path(words[4]))
    return False


def _is_launcher(line: str, skbridge_path: Path | None, config_path: Path | None) -> bool:
    if skbridge_path is not None:
        return line == launcher_line(skbridge_path, config_path)
    return _is_generated(line)


def has_launcher(text: str, skbridge_path: Path | None = None, config_path: Path | None = None) -> bool:
    """The launcher line is where it belongs: the first line bash runs.

    Only that position counts, and only the whole line `launcher_line` makes (for these paths
    when given). A user's line that merely ends with the marker
    (`hostname > /tmp/x  # skbridge-launcher: ...`) is just one of the user's commands.
    """
    lines = text.split("\n")
    at = header_end(lines)
    return at < len(lines) and _is_launcher(lines[at], skbridge_path, config_path)


def insert_launcher(text: str, skbridge_path: Path, config_path: Path | None = None) -> str:
    """Insert the launcher line after the header, unless that exact line is already there."""
    if has_launcher(text, skbridge_path, config_path):
        return text
    lines = text.split("\n")
    lines.insert(_insertion_point(lines), launcher_line(skbridge_path, config_path))
    return "\n".join(lines)


def strip_launcher(text: str, skbridge_path: Path | None = None, config_path: Path | None = None) -> str:
    """The user's own script, as the Pod must run it: the launcher line removed from its place only.

    Both insertion paths (the watcher, job_submit.lua) put the configured line at that place
    unless that exact line was already there, so on a stored script the line found there is
    the bridge's. Without paths any line in the generated form counts; it only shapes the
    Pod's copy, never what runs on the host.
    """
    lines = text.split("\n")
    at = header_end(lines)
    if at < len(lines) and _is_launcher(lines[at], skbridge_path, config_path):
        del lines[at]
    return "\n".join(lines)
