"""Run Slurm's commands without a shell, with a deadline, and classify their failures.

Slurm's client commands are the stable interface on every site (no slurmrestd needed);
their error texts decide whether a failure is temporary (controller down, queue full) or
permanent (the request itself is wrong).
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bridge.errors import PermanentError, TemporaryError
from bridge.settings import SlurmSettings

# Texts Slurm prints when the same request may succeed later.
_TEMPORARY_PATTERNS = re.compile(
    r"Unable to contact slurm controller|Socket timed out|Connection refused|Connection reset|"
    r"temporarily unable|Resource temporarily unavailable|Slurm backup controller in standby mode|"
    r"Job violates accounting/QOS policy|MaxSubmitJobs|QOSMaxSubmitJob|AssocMaxSubmitJob|"
    r"Too many pending jobs|job submit limit|Transport endpoint|Zero Bytes were transmitted|"
    r"Unable to establish connection|Communication connection failure|Insane message length",
    re.IGNORECASE,
)


class AmbiguousSlurmError(TemporaryError):
    """The command was cut off (timeout, signal): it may or may not have taken effect."""


@dataclass(frozen=True)
class SlurmResult:
    stdout: str
    stderr: str


def is_temporary(stderr: str) -> bool:
    return bool(_TEMPORARY_PATTERNS.search(stderr))


def run_slurm(
    settings: SlurmSettings,
    argv: Sequence[str],
    *,
    input_bytes: bytes | None = None,
    env: Mapping[str, str] | None = None,
    user: int | None = None,
    group: int | None = None,
    extra_groups: Sequence[int] | None = None,
    cwd: str | None = None,
    timeout_s: float | None = None,
) -> SlurmResult:
    """Run `argv[0]` from Slurm's bin dir; raise TemporaryError/PermanentError on failure."""
    command = [str(settings.bin_dir / argv[0]), *argv[1:]]
    full_env = {**settings.env(), **(env or {})}
    kwargs: dict[str, object] = {}
    if user is not None:
        kwargs["user"] = user
    if group is not None:
        kwargs["group"] = group
    if extra_groups is not None:
        kwargs["extra_groups"] = list(extra_groups)
    try:
        proc = subprocess.run(
            command, input=input_bytes, env=full_env, cwd=cwd, capture_output=True,
            timeout=timeout_s or settings.command_timeout_s, check=False, **kwargs,  # type: ignore[call-overload]
        )
    except subprocess.TimeoutExpired as exc:
        raise AmbiguousSlurmError(f"{argv[0]} did not answer within {exc.timeout:.0f}s") from exc
    except OSError as exc:
        raise PermanentError(f"cannot run {command[0]}: {exc.strerror}") from exc
    stdout = proc.stdout.decode("utf-8", "replace")
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    if proc.returncode < 0:
        raise AmbiguousSlurmError(f"{argv[0]} was killed by signal {-proc.returncode}")
    if proc.returncode != 0:
        message = stderr or stdout.strip() or f"{argv[0]} exited {proc.returncode}"
        if is_temporary(message):
            raise TemporaryError(message)
        raise PermanentError(message)
    return SlurmResult(stdout=stdout, stderr=stderr)
