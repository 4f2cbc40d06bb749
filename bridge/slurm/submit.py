"""Submit a job script as its owner, tagged so the job can be found again after a crash."""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from bridge.errors import PermanentError
from bridge.settings import SlurmSettings
from bridge.slurm.commands import AmbiguousSlurmError, run_slurm

TAG_PREFIX = "skb:"


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int
    name: str
    home: Path
    groups: tuple[int, ...]

    @classmethod
    def from_uid(cls, uid: int) -> Owner:
        try:
            entry = pwd.getpwuid(uid)
        except KeyError as exc:
            raise PermanentError(f"uid {uid} has no account on this host (check LDAP/NSS)") from exc
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
        return cls(uid=uid, gid=entry.pw_gid, name=entry.pw_name, home=Path(entry.pw_dir), groups=groups)

    def clean_env(self) -> dict[str, str]:
        """The environment the job starts from: nothing of the daemon's own."""
        env = {"HOME": str(self.home), "USER": self.name, "LOGNAME": self.name, "SHELL": "/bin/bash"}
        # A non-default bridge config must reach `skbridge attach` in the batch step.
        if os.environ.get("SKBRIDGE_CONFIG"):
            env["SKBRIDGE_CONFIG"] = os.environ["SKBRIDGE_CONFIG"]
        return env


def tag_for(entry_id: str) -> str:
    return f"{TAG_PREFIX}{entry_id}"


def sbatch_still_running(tag: str, *, proc_root: str = "/proc") -> bool:
    """Whether an sbatch carrying `tag` is still alive on this host (e.g. left running by a
    watcher that was killed): it may yet reach slurmctld, so no lookup can prove its job absent."""
    wanted = f"--comment={tag}".encode()
    try:
        pids = [name for name in os.listdir(proc_root) if name.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(os.path.join(proc_root, pid, "cmdline"), "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue  # gone meanwhile, or not ours to read
        if wanted in argv:
            return True
    return False


def sbatch_as_owner(
    settings: SlurmSettings,
    owner: Owner,
    script: bytes,
    *,
    tag: str,
    workdir: Path,
    defaults: dict[str, str] | None = None,
) -> str:
    """Run `sbatch --parsable` as the owner with the script on stdin; returns the job id.

    The script goes through stdin so no copy of it ever sits where its owner could swap it.
    """
    # Command-line options override #SBATCH lines, so `defaults` (e.g. job-name, partition)
    # must only hold options the script leaves unset.
    argv = ["sbatch", "--parsable", f"--comment={tag}", f"--chdir={workdir}"]
    argv += [f"--{name}={value}" for name, value in sorted((defaults or {}).items())]
    result = run_slurm(settings, argv, input_bytes=script, env=owner.clean_env(), user=owner.uid, group=owner.gid,
                       extra_groups=owner.groups, cwd="/")
    job_id = parsable_job_id(result.stdout)
    if job_id is None:
        # It exited 0: the job may well exist. Only a tag lookup can tell.
        raise AmbiguousSlurmError(f"sbatch printed no job id: {result.stdout!r} {result.stderr!r}")
    return job_id


def parsable_job_id(stdout: str) -> str | None:
    """The job id `sbatch --parsable` printed (`ID` or `ID;cluster`), None when it printed none."""
    job_id = stdout.strip().split(";")[0]
    return job_id if job_id.isdigit() else None


@dataclass(frozen=True)
class TaggedJob:
    job_id: str
    user: str


def find_tagged_jobs(settings: SlurmSettings, *, since_s: float = 7 * 86400) -> dict[str, list[TaggedJob]]:
    """Map tag -> every job carrying it that Slurm still knows (queue and accounting).

    Raises (TemporaryError or PermanentError) unless both squeue and sacct answered: only a
    complete answer can prove that a tag is absent. Each job appears once even when both know it.
    """
    found: dict[str, dict[str, TaggedJob]] = {}

    def note(job_id: str, user: str, comment: str) -> None:
        comment = comment.strip()
        # An array job's tasks are one submission: 12_[1-5] and 12_3 are job 12.
        job_id = job_id.strip().split("_", 1)[0]
        if comment.startswith(TAG_PREFIX) and job_id:
            found.setdefault(comment, {}).setdefault(job_id, TaggedJob(job_id, user.strip()))

    # The comment goes last: it is free text and may itself hold the separator.
    queue = run_slurm(settings, ["squeue", "--noheader", "--all", "--states=all", "--format=%i|%u|%k"])
    for line in queue.stdout.splitlines():
        job_id, _, rest = line.partition("|")
        user, _, comment = rest.partition("|")
        note(job_id, user, comment)
    hours = max(1, int(since_s // 3600))
    history = run_slurm(settings, ["sacct", "--noheader", "--parsable2", "--allusers", "--allocations",
                                   f"--starttime=now-{hours}hours", "--format=JobID,User,Comment"])
    for line in history.stdout.splitlines():
        job_id, _, rest = line.partition("|")
        user, _, comment = rest.partition("|")
        note(job_id, user, comment)
    return {tag: list(jobs.values()) for tag, jobs in found.items()}
