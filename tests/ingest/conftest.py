"""Fixtures for the watcher: test users, a private NAS tree, and a real `skbridge watch` process."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.ingest.layout import ensure_nas_layout, ensure_user_folder
from bridge.settings import Settings, load_settings
from tests.conftest import Sandbox, wait_for

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
TEST_ROOT = Path("/var/tmp/skbridge-tests")

VALID_JOB = """#!/bin/bash
#SBATCH --job-name={name}
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#K8S_IMAGE=registry.lab:5000/alpine:3
echo hello from {name}
"""


@dataclass
class WatcherRun:
    """A `skbridge watch` process on a private NAS tree, with the sandbox's Slurm."""

    sandbox: Sandbox
    root: Path
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    logs: list[Path] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        saved = dict(os.environ)
        try:
            os.environ.update(self.env)
            return load_settings()
        finally:
            os.environ.clear()
            os.environ.update(saved)

    @property
    def nas(self) -> Path:
        return self.root / "nas"

    @property
    def submit(self) -> Path:
        return self.nas / "slurm-jobs" / "submit"

    def folder(self, name: str) -> Path:
        return self.nas / "slurm-jobs" / name

    def start(self) -> None:
        log_path = self.root / f"watcher-{len(self.logs)}.log"
        self.logs.append(log_path)
        with log_path.open("wb") as out:
            self.proc = subprocess.Popen([SKBRIDGE, "watch"], env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=120)
        self.proc = None
        return code

    def log_text(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.logs)

    def user_folder(self, user: pwd.struct_passwd) -> Path:
        """submit/<user>/, made the way the watcher makes it (the user's, 0700)."""
        ensure_user_folder(self.settings.nas, user)
        return self.submit / user.pw_name

    def drop(self, name: str, text: str, *, owner: pwd.struct_passwd, mode: int = 0o644,
             folder: pwd.struct_passwd | None = None) -> Path:
        """Write elsewhere, then rename into submit/<owner>/ (or `folder`'s), like `cp` to a temp name + `mv`."""
        staging = self.root / "staging"
        staging.mkdir(exist_ok=True)
        tmp = staging / name
        tmp.write_text(text)
        os.chown(tmp, owner.pw_uid, owner.pw_gid)
        tmp.chmod(mode)
        target = self.user_folder(folder or owner) / name
        os.rename(tmp, target)
        return target

    def dropped_files(self) -> list[Path]:
        """Files still in submit/ or any submit/<user>/."""
        found = []
        for path in self.submit.iterdir():
            found += list(path.iterdir()) if path.is_dir() and not path.is_symlink() else [path]
        return found

    def wait_settled(self, count: int, timeout_s: float = 120) -> None:
        def settled() -> bool:
            accepted = [p for p in self.folder("accepted").iterdir()]
            failed = [p for p in self.folder("failed").iterdir() if not p.name.endswith(".error")]
            return len(accepted) + len(failed) >= count

        wait_for(settled, timeout_s=timeout_s, what=f"{count} files accepted or failed", interval_s=0.25)

    def tags(self) -> set[str]:
        """The Slurm tags of every entry this run's journal ever made."""
        import sqlite3

        with sqlite3.connect(self.root / "journal.sqlite") as db:
            return {f"skb:{row[0]}" for row in db.execute("SELECT id FROM entries")}

    def accepted_job_ids(self) -> dict[str, str]:
        return {p.name.split("-", 1)[1]: p.name.split("-", 1)[0] for p in self.folder("accepted").iterdir()}


def make_watcher_run(sandbox: Sandbox, **overrides: str) -> WatcherRun:
    root = TEST_ROOT / uuid.uuid4().hex[:10]
    root.mkdir(parents=True)
    for path in (TEST_ROOT, root):
        path.chmod(0o755)
    env = {
        **sandbox.env,
        "SKBRIDGE_NAS__ROOT": str(root / "nas"),
        "SKBRIDGE_INGEST__JOURNAL_PATH": str(root / "journal.sqlite"),
        "SKBRIDGE_INGEST__LOCK_PATH": str(root / "watcher.lock"),
        "SKBRIDGE_SLURM__HOOK_SOCKET_PATH": str(root / "hooks.sock"),  # slurmctld's hooks stay with the sandbox
        "SKBRIDGE_INGEST__POLL_INTERVAL_S": "0.2",
        "SKBRIDGE_INGEST__SETTLE_S": "0.5",
        "SKBRIDGE_INGEST__RETRY_INITIAL_S": "0.5",
        "SKBRIDGE_INGEST__RETRY_MAX_S": "2",
        "SKBRIDGE_INGEST__ABSENCE_CONFIRM_S": "1",
        # The sandbox's own watcher reaps the shared namespace; a test's private one must not.
        "SKBRIDGE_INGEST__REAPER_INTERVAL_S": "3600",
        "SKBRIDGE_SLURM__PARTITION": "parked",
        # The refuse policy: a file without #K8S_IMAGE is rejected (the sandbox's own config
        # sets a default image; tests/jobs/test_one_road.py covers that road).
        "SKBRIDGE_POLICY__DEFAULT_IMAGE": "",
        "SKBRIDGE_SLURM__SKBRIDGE_PATH": SKBRIDGE,
        "SKBRIDGE_METRICS__PORT": "0",  # the sandbox's own watcher serves /metrics on the configured port
        **overrides,
    }
    run = WatcherRun(sandbox=sandbox, root=root, env=env)
    ensure_nas_layout(run.settings.nas)
    (run.nas / "shared" / "datasets").mkdir(parents=True, exist_ok=True)
    return run


@pytest.fixture
def watcher(sandbox: Sandbox, users: dict[str, pwd.struct_passwd]) -> Iterator[WatcherRun]:
    run = make_watcher_run(sandbox)
    run.start()
    yield run
    if run.proc is not None:
        run.stop()
    # Parked jobs never start; remove them so the queue stays small for other tests.
    sandbox.slurm("scancel", "--partition=parked", check=False)
    shutil.rmtree(run.root, ignore_errors=True)


def job_field(sandbox: Sandbox, job_id: str, fmt: str) -> str:
    return sandbox.slurm("squeue", "--noheader", "--states=all", "-j", job_id, f"--format={fmt}").stdout.strip()


def tagged_jobs(sandbox: Sandbox, partition: str = "parked") -> list[str]:
    out = sandbox.slurm("squeue", "--noheader", "--states=all", f"--partition={partition}", "--format=%k").stdout
    return [line.strip() for line in out.splitlines() if line.strip().startswith("skb:")]


def now() -> float:
    return time.monotonic()
