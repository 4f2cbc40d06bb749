"""A profile becomes one job file: the base file's lines, the profile's overrides, the snapshot's paths.

The job file names no host path: the run's folder is `RUNS_DIR/<profile>/<run id>` under the
user's NAS folder, which the Pod sees under /workspace, so the same text is submitted on the
login node and, over SSH, from a laptop that does not know where the NAS is mounted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from bridge.errors import ConfigError
from bridge.profiles.model import Profile

RUNS_DIR = "skbridge-runs"
POD_HOME = PurePosixPath("/workspace")  # where the user's NAS folder is mounted in the Pod (render.HOME_MOUNT_PATH)
_SBATCH = re.compile(r"^#SBATCH\s+(?P<opt>-{1,2}[A-Za-z-]+)(?:[=\s]+(?P<value>\S.*))?$")
_K8S = re.compile(r"^#K8S_(?P<key>[A-Z_]+)=(?P<value>.*)$")
_SHORT = {"-c": "--cpus-per-task", "-t": "--time", "-p": "--partition", "-J": "--job-name", "-D": "--chdir",
          "-o": "--output"}
# The snapshot decides where the job starts: a base file's own working directory is dropped.
_DROPPED_SBATCH = {"--chdir"}
_DROPPED_K8S = {"WORKDIR"}


def run_rel(profile: str, run_id: str) -> PurePosixPath:
    """The run's folder relative to the user's NAS folder."""
    return PurePosixPath(RUNS_DIR) / profile / run_id


@dataclass(frozen=True)
class Header:
    sbatch: list[tuple[str, str | None]]  # (long option, value)
    k8s: list[tuple[str, str]]
    body: list[str]
    shebang: str


def split_job(text: str) -> Header:
    """Directives (up to the first command line, as sbatch reads them) and the rest."""
    lines = text.splitlines()
    shebang = lines[0] if lines and lines[0].startswith("#!") else "#!/bin/bash"
    rest = lines[1:] if lines and lines[0].startswith("#!") else lines
    sbatch: list[tuple[str, str | None]] = []
    k8s: list[tuple[str, str]] = []
    body: list[str] = []
    in_header = True
    for line in rest:
        stripped = line.strip()
        if in_header and (match := _SBATCH.match(stripped)):
            opt = _SHORT.get(match.group("opt"), match.group("opt"))
            sbatch.append((opt, match.group("value")))
        elif in_header and (k8s_match := _K8S.match(stripped)):
            k8s.append((k8s_match.group("key"), k8s_match.group("value")))
        elif in_header and (not stripped or stripped.startswith("#")):
            continue  # comments of the base file's header are not carried over
        else:
            in_header = False
            body.append(line)
    return Header(sbatch=sbatch, k8s=k8s, body=body, shebang=shebang)


def _set(options: list[tuple[str, str | None]], name: str, value: str | None) -> None:
    options[:] = [item for item in options if item[0] != name]
    if value is not None:
        options.append((name, value))


def gres_of(gpus: str) -> str:
    kind, _, count = gpus.rpartition(":")
    return f"gpu:{kind}:{count}" if kind else f"gpu:{count}"


def render_job(name: str, profile: Profile, *, run_id: str, project: Path) -> str:
    """The job file for run `run_id` of profile `name`."""
    if profile.base:
        base_path = project / profile.base
        try:
            header = split_job(base_path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"profile {name}: cannot read its base job file {base_path}: {exc.strerror}") from exc
    else:
        header = Header(sbatch=[], k8s=[], body=[], shebang="#!/bin/bash")
    if profile.command is None and not any(line.strip() for line in header.body):
        raise ConfigError(f"profile {name}: give it a 'command' (or a 'base' job file with commands)")
    sbatch = [item for item in header.sbatch if item[0] not in _DROPPED_SBATCH]
    _set(sbatch, "--job-name", name)
    for option, value in (("--cpus-per-task", None if profile.cpus is None else str(profile.cpus)),
                          ("--mem", profile.mem), ("--time", profile.time), ("--partition", profile.partition),
                          ("--gres", None if profile.gpus is None else gres_of(profile.gpus))):
        if value is not None:
            _set(sbatch, option, value)
    k8s = [item for item in header.k8s if item[0] not in _DROPPED_K8S]
    if profile.image:
        k8s = [item for item in k8s if item[0] != "IMAGE"] + [("IMAGE", profile.image)]
    if profile.mounts:
        k8s = [item for item in k8s if item[0] != "MOUNT"] + [("MOUNT", mount) for mount in profile.mounts]
    for env_name, env_value in profile.env.items():
        k8s = [item for item in k8s if not (item[0] == "ENV" and item[1].split("=", 1)[0] == env_name)]
        k8s.append(("ENV", f"{env_name}={env_value}"))
    if profile.results:
        k8s = [item for item in k8s if item[0] != "RESULTS"]
        k8s.append(("RESULTS", str(POD_HOME / run_rel(name, run_id) / profile.results)))
    body = profile.command.splitlines() if profile.command is not None else header.body
    lines = [header.shebang, f"# skbridge profile {name}, run {run_id}: runs in its code snapshot "
                             "skbridge-runs/... in your NAS folder"]
    lines += [f"#SBATCH {option}" + (f"={value}" if value is not None else "") for option, value in sbatch]
    lines += [f"#K8S_{key}={value}" for key, value in k8s]
    lines += body
    return "\n".join(lines) + "\n"
