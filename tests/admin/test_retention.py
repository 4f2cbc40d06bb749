"""Issue 19: retention removes finished things after their horizons, never a live job's, and
shows what it would remove first. Runs against a private NAS tree and the sandbox's Slurm."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
OLD_S = 10 * 86400


def _age(path: Path, seconds: float) -> None:
    stamp = time.time() - seconds
    os.utime(path, (stamp, stamp), follow_symlinks=False)


def _make(path: Path, owner: pwd.struct_passwd, *, old: bool, size: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.chown(path, owner.pw_uid, owner.pw_gid)
    if old:
        _age(path, OLD_S)
    return path


def _job_folder(results: Path, owner: pwd.struct_passwd, job_id: str, *, old: bool) -> Path:
    user_dir = results / owner.pw_name
    user_dir.mkdir(parents=True, exist_ok=True)
    os.chown(user_dir, owner.pw_uid, owner.pw_gid)
    folder = user_dir / job_id
    folder.mkdir()
    os.chown(folder, owner.pw_uid, owner.pw_gid)
    _make(folder / "pod.log", owner, old=old, size=5000)
    os.symlink("/etc", folder / "a-link-to-etc")  # a user's trap: removal must not follow it
    if old:
        _age(folder, OLD_S)
    return folder


def _retention(sandbox: Sandbox, nas: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**sandbox.env, "SKBRIDGE_NAS__ROOT": str(nas), "SKBRIDGE_RETENTION__RESULTS_DAYS": "7",
           "SKBRIDGE_RETENTION__ACCEPTED_DAYS": "7", "SKBRIDGE_RETENTION__FAILED_DAYS": "7"}
    return subprocess.run([SKBRIDGE, "admin", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def test_retention_lists_first_then_removes_only_finished_old_things(jobs: Jobs, sandbox: Sandbox,
                                                                     tmp_job_dir: Path) -> None:
    tmp_path = tmp_job_dir  # the user removes their own folders: the path must let them through
    alice = pwd.getpwnam("skbalice")
    live = jobs.sbatch("skbalice", job_script(), "--hold")  # queued: Slurm still lists it
    nas = tmp_path / "nas"
    results = nas / "results"
    keep = [_job_folder(results, alice, live, old=True),               # old, but its job is live
            _job_folder(results, alice, "999902", old=False),          # finished, recent
            _make(nas / "slurm-jobs" / "accepted" / f"{live}-job.sh", alice, old=True),
            _make(nas / "slurm-jobs" / "failed" / "new.sh", alice, old=False)]
    go = [_job_folder(results, alice, "999901", old=True),
          _make(nas / "slurm-jobs" / "accepted" / "999901-job.sh", alice, old=True),
          _make(nas / "slurm-jobs" / "failed" / "bad.sh", alice, old=True),
          _make(nas / "slurm-jobs" / "failed" / "bad.sh.error", alice, old=True)]

    planned = _retention(sandbox, nas, "retention", "--dry-run", "--json")
    assert planned.returncode == 0, planned.stderr
    assert sorted(item["path"] for item in json.loads(planned.stdout)) == sorted(map(str, go))
    assert all(os.path.lexists(path) for path in keep + go), "a dry run deletes nothing"

    done = _retention(sandbox, nas, "retention")
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any(os.path.lexists(path) for path in go), done.stdout
    assert all(os.path.lexists(path) for path in keep)
    assert Path("/etc/passwd").exists()

    usage = json.loads(_retention(sandbox, nas, "usage", "--json").stdout)
    assert usage == [{"user": "skbalice", "jobs": 2, "size_bytes": usage[0]["size_bytes"], "oldest": usage[0]["oldest"]}]


def test_retention_deletes_nothing_when_slurm_cannot_answer(sandbox: Sandbox, tmp_path: Path) -> None:
    alice = pwd.getpwnam("skbalice")
    nas = tmp_path / "nas"
    old = _job_folder(nas / "results", alice, "999903", old=True)
    closed = tmp_path / "slurm.conf"
    text = sandbox.layout.slurm_conf.read_text()
    port = str(sandbox.layout.ports.slurmctld)
    closed.write_text(text.replace(f"SlurmctldPort={port}", "SlurmctldPort=1"))
    env_conf = {"SKBRIDGE_SLURM__CONF_PATH": str(closed)}
    result = subprocess.run([SKBRIDGE, "admin", "retention"], env={
        **sandbox.env, **env_conf, "SLURM_CONF": str(closed), "SKBRIDGE_NAS__ROOT": str(nas),
        "SKBRIDGE_RETENTION__RESULTS_DAYS": "7", "SKBRIDGE_SLURM__COMMAND_TIMEOUT_S": "15"},
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert old.exists()
