"""The hooks' fast exit for jobs that are not the bridge's, before any heavy import.

slurmctld runs PrologSlurmctld/EpilogSlurmctld for every job. Most of a lab's jobs may be
plain Slurm jobs; for them the hook must cost milliseconds, not the ~0.3 s that importing
pydantic, structlog and the Kubernetes client takes. Only the standard library, PyYAML and
`bridge.configfile` (the settings model's own file and environment rules) are used here;
anything unclear falls through to the full hook, which decides properly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

from bridge.configfile import DEFAULT_CONFIG_PATH, config_file, env_section, read_config_mapping
from bridge.jobfile.marker import LAUNCHER_MARKER
from bridge.slurm.identity import hook_environment

DEFAULT_CONFIG = DEFAULT_CONFIG_PATH
DEFAULT_HOOK_SOCKET = Path("/run/slurm-k8s-bridge/hooks.sock")


def _slurm_section() -> dict[str, Any]:
    """The `slurm` section as the settings model reads it: the same file (`bridge.configfile`),
    the same environment overrides (every `SKBRIDGE_SLURM__*`, environment over file). Anything
    unreadable gives the defaults: the full hook, which loads the model, then says what is wrong."""
    try:
        raw = read_config_mapping(config_file())
    except Exception:
        raw = {}
    section = raw.get("slurm")
    found: dict[str, Any] = dict(section) if isinstance(section, dict) else {}
    found.update(env_section(os.environ, "slurm"))
    return found


def is_bridge_script(script: str) -> bool:
    """Cheap test before any parsing: a bridge job names its image on a line of its own, or
    carries the launcher (a plain script the site's default image runs). The full hook then
    asks whether the launcher is really in its place (bridge.jobfile.launcher.has_launcher).

    Only "\n" ends a line, as for job_submit.lua (str.splitlines would also split at \x1c,
    \x85, \u2028, ..., and call a job the bridge's that the plugin left alone)."""
    return any(line.startswith("#K8S_IMAGE=") or line.endswith(LAUNCHER_MARKER) for line in script.split("\n"))


def certainly_not_bridge_job(job_id: str, slurm: dict[str, Any]) -> bool:
    """True only when the job's script was read and names no #K8S_IMAGE."""
    if not job_id.isdigit():
        return False
    bin_dir = str(slurm.get("bin_dir") or "/usr/bin")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LANG": "C.UTF-8"}
    if slurm.get("conf_path"):
        env["SLURM_CONF"] = str(slurm["conf_path"])
    try:
        out = subprocess.run([f"{bin_dir}/scontrol", "write", "batch_script", job_id, "-"], env=env,
                             capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and bool(out.stdout) and not is_bridge_script(out.stdout)


def settle_here(hook: str, job_id: str) -> int | None:
    """What the hook program does before any heavy import: the exit code when the watcher ran
    the hook or the job is not the bridge's; None when this process must run the hook itself.

    The watcher is asked first: it reads the job script anyway, so a bridge job's script is
    read once, and its answer covers plain jobs too.
    """
    slurm = _slurm_section()
    answered = delegate_to_watcher(hook, job_id, _socket_path(slurm))
    if answered is not None:
        return answered
    return 0 if certainly_not_bridge_job(job_id, slurm) else None


def process_age_s() -> float:
    """Seconds since this process started (Linux /proc, 10 ms resolution), 0.0 where unavailable."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_s = int(fields[19]) / os.sysconf("SC_CLK_TCK")
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime_s - started_s)
    except (OSError, ValueError, IndexError):
        return 0.0


def _socket_path(slurm: dict[str, Any]) -> Path | None:
    """The watcher's hook socket named by the config (`slurm.hook_socket_path`; null = none)."""
    value = slurm.get("hook_socket_path", DEFAULT_HOOK_SOCKET)
    return Path(str(value)) if value else None


def delegate_to_watcher(hook: str, job_id: str, path: Path | None) -> int | None:
    """Have the watcher run the hook (see `bridge.hooks.server`); None: run it here instead.

    No timeout: slurmctld bounds the hook with PrologEpilogTimeout, and the hook's own
    deadlines lie below it. A watcher that goes away mid-hook closes the socket, and the
    hook then runs here again from the start, which its idempotence allows.
    """
    if path is None or not job_id.isdigit():
        return None
    # slurmctld's word on the job's owner travels with the request: the socket is root's only.
    return ask_hook_server(path, {"hook": hook, "job_id": job_id, "job_env": hook_environment(),
                                  "client_startup_s": round(process_age_s(), 4)})


def ask_hook_server(path: Path, request: dict[str, Any], *, timeout_s: float | None = None) -> int | None:
    """One request to the hook server on `path`: its exit code, or None when nobody answered."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(timeout_s)
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode("utf-8") + b"\n")
            answer = conn.makefile("rb").readline()
        code = json.loads(answer)["exit_code"] if answer else None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return code if isinstance(code, int) else None
