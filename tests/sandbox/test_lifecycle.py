"""`skbridge sandbox up/down/status`: idempotent start, exact stop, honest status."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bridge.sandbox.procs import Daemons, stray_processes
from tests.conftest import Sandbox

SKBRIDGE = str(Path(sys.executable).parent / "skbridge")
DAEMONS = ("slurmctld", "slurmd", "etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SKBRIDGE, "sandbox", *argv], capture_output=True, text=True, timeout=600, check=False)


def test_up_twice_is_harmless_and_down_stops_exactly_what_up_started(sandbox: Sandbox, tmp_job_dir: Path) -> None:
    daemons = Daemons(sandbox.layout)
    before = {name: daemons.running(name) for name in DAEMONS}
    assert all(before.values()), before

    again = _cli("up", "--no-show")
    assert again.returncode == 0, again.stderr
    assert {name: daemons.running(name) for name in DAEMONS} == before, "a second `up` must not restart anything"

    status = _cli("status")
    assert status.returncode == 0, status.stdout
    for name in DAEMONS:
        assert name in status.stdout

    # A running job leaves slurmstepd processes that `down` must not leave behind.
    script = tmp_job_dir / "long.sh"
    script.write_text("#!/bin/bash\nsleep 300\n")
    job_id = sandbox.slurm("sbatch", "--parsable", "--output=/dev/null", str(script)).stdout.strip()

    down = _cli("down")
    assert down.returncode == 0, down.stderr
    for name, rec in before.items():
        assert rec is not None and not rec.alive(), f"{name} (pid {rec.pid if rec else '?'}) still alive"
    assert stray_processes(sandbox.layout) == []
    stopped = _cli("status")
    assert stopped.returncode == 1
    assert "stopped" in stopped.stdout

    back = _cli("up", "--no-show")
    assert back.returncode == 0, back.stderr
    assert _cli("status").returncode == 0
    sandbox.slurm("scancel", job_id, check=False)
