"""`skbridge init [NAME]`: write a commented job file that passes `skbridge validate`."""

from __future__ import annotations

import os
import re
from pathlib import Path

import typer
from rich.markup import escape

from bridge.cli.user.common import EXIT_FAILED, EXIT_USAGE, ConfigOption, err, failures, out, settings_or_exit
from bridge.jobfile.spec import parse_job_text
from bridge.settings import Settings

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_GPUS = re.compile(r"^(?:(?P<type>[A-Za-z0-9_-]+):)?(?P<count>\d+)$")
_MEM = re.compile(r"^\d+[KMGT]?$", re.IGNORECASE)
_TIME = re.compile(r"^(?:\d+-)?\d+(?::\d+){0,2}$")


def default_image(settings: Settings) -> str:
    """The site's test image when it names one (the sandbox's job image), else python on the first allowed registry."""
    if settings.kubernetes.test_image:
        return settings.kubernetes.test_image
    registry = settings.policy.allowed_registries[0] if settings.policy.allowed_registries else "docker.io/library"
    return f"{registry.rstrip('/')}/python:3.12-slim"


def render(name: str, *, image: str, cpus: int, mem: str, time_limit: str, gpus: str | None) -> str:
    gres = ""
    if gpus:
        match = _GPUS.match(gpus)
        assert match is not None
        kind = f"{match.group('type')}:" if match.group("type") else ""
        gres = f"#SBATCH --gres=gpu:{kind}{match.group('count')}\n"
    return f"""#!/bin/bash
# {name}: a job for slurm-k8s-bridge, written by `skbridge init`.
# Check it:   skbridge validate {name}.sh
# Submit it:  skbridge submit {name}.sh          (then: skbridge status JOBID, skbridge logs JOBID -f)
#
# Slurm decides when and where it runs; the job's container gets exactly these resources.
#SBATCH --job-name={name}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}
{gres}#SBATCH --time={time_limit}
#
# The container it runs in (an image from an allowed registry; required):
#K8S_IMAGE={image}
#
# More directives you may add (remove the leading "# " to use one):
# #K8S_ENV=NAME=value                 environment variable, repeatable
# #K8S_MOUNT=datasets:/data:ro        a shared NAS volume by name
# #K8S_WORKDIR=/workspace             where the script starts
# #K8S_RESULTS=/home/user/outputs     folder collected into results/<user>/<jobid>/results/
# #K8S_SHM=8Gi                        /dev/shm for data loaders
#
# Everything below runs inside the container; its output is the job's output file.
echo "job $SLURM_JOB_ID of $SLURM_JOB_USER on $(hostname), GPUs: ${{NVIDIA_VISIBLE_DEVICES:-none}}"
# python train.py --epochs 10
"""


def init(
    name: str = typer.Argument("job", help="Job name; the file is NAME.sh (or NAME when it ends in .sh)."),
    gpus: str | None = typer.Option(None, "--gpus", help="GPUs: COUNT or TYPE:COUNT (a100:2)."),
    image: str | None = typer.Option(None, "--image", help="Container image (default: the site's job image)."),
    cpus: int = typer.Option(1, "--cpus", min=1, help="CPUs for the job."),
    mem: str = typer.Option("4G", "--mem", help="Memory: 512M, 8G, ..."),
    time_limit: str = typer.Option("1:00:00", "--time", help="Time limit: MM, HH:MM:SS or D-HH:MM:SS."),
    config: Path | None = ConfigOption,
) -> None:
    """Write NAME.sh, a commented job file that passes `skbridge validate` with this site's rules.
    An existing file is never overwritten.
    """
    settings = settings_or_exit("init", config)
    stem = name.removesuffix(".sh")
    problems: list[str] = []
    if not _NAME.match(stem):
        problems.append(f"name {name!r}: use letters, digits, '.', '_' and '-' (at most 100)")
    if gpus is not None and not _GPUS.match(gpus):
        problems.append(f"--gpus {gpus!r}: expected COUNT or TYPE:COUNT, such as 2 or a100:2")
    if not _MEM.match(mem):
        problems.append(f"--mem {mem!r}: expected a number with an optional unit, such as 8G or 512M")
    if not _TIME.match(time_limit):
        problems.append(f"--time {time_limit!r}: expected MM, HH:MM:SS or D-HH:MM:SS")
    if image is not None and (not image.strip() or any(c.isspace() for c in image)):
        problems.append(f"--image {image!r}: an image reference has no spaces")
    if problems:
        for problem in problems:
            err.print(f"skbridge init: {problem}", markup=False)
        raise typer.Exit(EXIT_USAGE)
    text = render(stem, image=image or default_image(settings), cpus=cpus, mem=mem.upper(), time_limit=time_limit,
                  gpus=gpus)
    _spec, found = parse_job_text(text, settings.policy, settings.nas)
    errors = [p for p in found if p.severity == "error"]
    if errors:
        err.print("skbridge init: these values break the site's rules; nothing written:", markup=False)
        for found_problem in errors:
            err.print(f"  {escape(found_problem.message)} (expected: {escape(found_problem.expected)})")
        raise typer.Exit(EXIT_USAGE)
    path = Path(f"{stem}.sh")
    with failures("init"):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
        except FileExistsError:
            err.print(f"skbridge init: {path} exists already; not overwritten (choose another NAME or remove it)",
                      markup=False)
            raise typer.Exit(EXIT_FAILED) from None
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    out.print(f"wrote {escape(str(path))}  (check: skbridge validate {escape(str(path))}; "
              f"submit: skbridge submit {escape(str(path))})")
