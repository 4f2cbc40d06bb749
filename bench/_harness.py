"""Shared pieces for the benchmarks: the sandbox, a private watcher, lab users, Slurm queries.

Benchmarks run against the sandbox (`make sandbox` first) as root. They print their figures
and a ratio against a baseline measured in the same run; they assert nothing.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bridge.ingest.layout import ensure_nas_layout  # noqa: E402
from bridge.sandbox import manager  # noqa: E402
from bridge.sandbox.images import JOB_IMAGE  # noqa: E402
from bridge.sandbox.layout import SandboxLayout  # noqa: E402
from bridge.settings import Settings, load_settings  # noqa: E402

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
BENCH_ROOT = Path("/var/tmp/skbridge-bench")
USERS = {"skbalice": 1501, "skbbob": 1502}


def sandbox() -> SandboxLayout:
    layout = SandboxLayout.default()
    manager.up(layout, lambda _message: None)
    return layout


def ensure_users() -> list[pwd.struct_passwd]:
    found = []
    for name, uid in USERS.items():
        try:
            found.append(pwd.getpwnam(name))
        except KeyError:
            subprocess.run(["useradd", "--uid", str(uid), "--create-home", name], check=True)
            found.append(pwd.getpwnam(name))
    return found


def env_of(layout: SandboxLayout) -> dict[str, str]:
    return {**os.environ, **layout.env()}


def slurm(layout: SandboxLayout, *argv: str, user: str | None = None, check: bool = True) -> str:
    cmd = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    return subprocess.run(cmd, env=env_of(layout), capture_output=True, text=True, check=check).stdout


def squeue_jobs(layout: SandboxLayout) -> list[dict[str, Any]]:
    return list(json.loads(slurm(layout, "squeue", "--json", "--all")).get("jobs") or [])


def job_states(layout: SandboxLayout, job_ids: list[str]) -> dict[str, str]:
    out = slurm(layout, "sacct", "-n", "-X", "-P", "-o", "JobID,State", "-j", ",".join(job_ids), check=False)
    states = {}
    for line in out.splitlines():
        job_id, _, state = line.partition("|")
        states[job_id] = state.split()[0] if state else ""
    return states


TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL"}


def wait_all_ended(layout: SandboxLayout, job_ids: list[str], timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        states = job_states(layout, job_ids)
        if len(states) == len(job_ids) and all(state in TERMINAL for state in states.values()):
            return time.monotonic()
        time.sleep(0.25)
    raise SystemExit(f"timed out waiting for {len(job_ids)} jobs to end")


@dataclass
class PrivateWatcher:
    """`skbridge watch` on its own NAS tree with the sandbox's Slurm (jobs to `partition`)."""

    layout: SandboxLayout
    partition: str = "parked"
    overrides: dict[str, str] = field(default_factory=dict)
    root: Path = field(default_factory=lambda: BENCH_ROOT / uuid.uuid4().hex[:10])
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True)
        for path in (BENCH_ROOT, self.root):
            path.chmod(0o755)
        self.env = {
            **env_of(self.layout),
            "SKBRIDGE_NAS__ROOT": str(self.root / "nas"),
            "SKBRIDGE_INGEST__JOURNAL_PATH": str(self.root / "journal.sqlite"),
            "SKBRIDGE_INGEST__LOCK_PATH": str(self.root / "watcher.lock"),
            "SKBRIDGE_SLURM__PARTITION": self.partition,
            "SKBRIDGE_INGEST__REAPER_INTERVAL_S": "3600",
            # slurmctld's hooks stay with the sandbox's own watcher.
            "SKBRIDGE_SLURM__HOOK_SOCKET_PATH": str(self.root / "hooks.sock"),
            "SKBRIDGE_METRICS__PORT": "0",  # the sandbox's own watcher serves /metrics on the configured port
            **self.overrides,
        }
        ensure_nas_layout(self.settings.nas)

    @property
    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            return load_settings(self.layout.bridge_config)
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def log_path(self) -> Path:
        return self.root / "watcher.log"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([SKBRIDGE, "watch"], env=self.env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while b'"watching"' not in self.log_path.read_bytes():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit(f"watcher did not start; see {self.log_path}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            if f'"event": "{name}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def user_folder(submit: Path, owner: pwd.struct_passwd) -> Path:
    """submit/<owner>/, where the owner's files must be dropped (the watcher makes it; so may we)."""
    folder = submit / owner.pw_name
    if not folder.is_dir():
        folder.mkdir(mode=0o700)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    return folder


def drop(submit: Path, name: str, text: str, owner: pwd.struct_passwd) -> float:
    """Write under a temporary name, then rename into submit/<owner>/ (what cp-then-mv does); returns the rename time."""
    submit = user_folder(submit, owner)
    staging = submit / f".{name}.part"
    staging.write_text(text, encoding="utf-8")
    os.chown(staging, owner.pw_uid, owner.pw_gid)
    staging.chmod(0o644)
    moment = time.time()
    staging.rename(submit / name)
    return moment


def write_in_place(submit: Path, name: str, text: str, owner: pwd.struct_passwd) -> float:
    """Create the file under its final name and write it (what `cp job.sh submit/` does); returns
    the moment it was closed complete."""
    submit = user_folder(submit, owner)
    fd = os.open(submit / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.fchown(fd, owner.pw_uid, owner.pw_gid)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    return time.time()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summarize(values: list[float]) -> str:
    return (f"p50 {percentile(values, 0.5) * 1000:.0f} ms, p99 {percentile(values, 0.99) * 1000:.0f} ms, "
            f"mean {statistics.fmean(values) * 1000:.0f} ms (n={len(values)})")


def job_text(name: str, *, body: str = "echo hello", env: tuple[str, ...] = (), partition: str | None = None,
             cpus: int = 1) -> str:
    """A job for the sandbox's real node; SANDBOX_RUN_DURATION= in `env` also becomes its own sleep."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={name}", f"#SBATCH --cpus-per-task={cpus}", "#SBATCH --mem=512M",
             "#SBATCH --time=00:10:00", *([f"#SBATCH --partition={partition}"] if partition else []),
             f"#K8S_IMAGE={JOB_IMAGE}", *(f"#K8S_ENV={e}" for e in env), body]
    lines += [f"sleep {e.split('=', 1)[1]}" for e in env if e.startswith("SANDBOX_RUN_DURATION=")]
    return "\n".join(lines) + "\n"


def timed(fn: Callable[[], object]) -> float:
    started = time.monotonic()
    fn()
    return time.monotonic() - started
