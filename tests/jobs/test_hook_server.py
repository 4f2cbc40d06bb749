"""The watcher runs slurmctld's hooks warm; without it the hooks run as their own processes."""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from bridge.hooks.server import HookServer, ping
from bridge.settings import load_settings
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script


def hook_lines(jobs: Jobs, job_id: str, component: str) -> list[dict[str, object]]:
    found = []
    for line in jobs.hook_log().splitlines():
        if f'"job_id": "{job_id}"' in line and f'"component": "{component}"' in line:
            found.append(json.loads(line))
    return found


def run_entry(sandbox: Sandbox, job_id: str, **env: str) -> subprocess.CompletedProcess[str]:
    """The very command slurmctld runs (PrologSlurmctld), with Slurm's job id in the environment."""
    entry = sandbox.layout.root / "libexec" / "skbridge-prolog-slurmctld"
    return subprocess.run([str(entry)], env={"PATH": "/usr/bin:/bin", "SLURM_JOB_ID": job_id, **env},
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_watcher_serves_the_prolog_and_epilog(jobs: Jobs) -> None:
    job_id = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=1s",)))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    wait_for(lambda: bool(hook_lines(jobs, job_id, "epilog")), timeout_s=30, what="the epilog's log lines")
    prolog_done = [line for line in hook_lines(jobs, job_id, "prolog") if line["event"] == "prolog done"]
    assert [line["served_by"] for line in prolog_done] == ["watcher"]
    assert {line["served_by"] for line in hook_lines(jobs, job_id, "epilog")} == {"watcher"}
    # Served warm, the start-up the hook reports is the thin client's, not a full import.
    timings = prolog_done[0]["timings_s"]
    assert isinstance(timings, dict) and timings["python_startup"] < 0.25


def test_the_hook_socket_is_root_only(sandbox: Sandbox) -> None:
    path = load_settings(sandbox.layout.bridge_config).slurm.hook_socket_path
    assert path is not None
    mode = os.stat(path)
    assert stat.S_ISSOCK(mode.st_mode) and stat.S_IMODE(mode.st_mode) == 0o600 and mode.st_uid == 0
    as_user = subprocess.run(["runuser", "-u", "skbalice", "--", "python3", "-c",
                              f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"],
                             capture_output=True, text=True, check=False)
    assert as_user.returncode != 0 and "PermissionError" in as_user.stderr


def test_a_second_watcher_never_takes_over_a_live_socket(sandbox: Sandbox) -> None:
    settings = load_settings(sandbox.layout.bridge_config)
    assert settings.slurm.hook_socket_path is not None
    with pytest.raises(OSError, match="already serves"):
        HookServer(settings, settings.slurm.hook_socket_path).start()
    assert ping(settings.slurm.hook_socket_path)  # the sandbox's watcher still answers


def test_without_the_socket_the_hook_runs_itself_with_the_same_result(jobs: Jobs, sandbox: Sandbox) -> None:
    job_id = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=10m",)))
    pod = jobs.wait_running(job_id)
    before = sorted(jobs.objects(job_id))
    # The watcher's socket answers a re-run; a missing socket makes the entry do the work.
    served = run_entry(sandbox, job_id)
    alone = run_entry(sandbox, job_id, SKBRIDGE_SLURM__HOOK_SOCKET_PATH=str(sandbox.layout.root / "no-such.sock"))
    assert (served.returncode, alone.returncode) == (0, 0), (served.stderr, alone.stderr)
    done = [line["served_by"] for line in hook_lines(jobs, job_id, "prolog") if line["event"] == "prolog done"]
    assert done == ["watcher", "watcher", "process"]
    assert sorted(jobs.objects(job_id)) == before
    again = jobs.pod(job_id)
    assert again is not None and again["metadata"]["uid"] == pod["metadata"]["uid"]
    sandbox.slurm("scancel", job_id)
    jobs.wait_done(job_id)
    jobs.wait_no_objects(job_id)
