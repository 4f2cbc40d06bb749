"""`skbridge shell` as a lab user against the real sandbox: a real Slurm job, a real Pod, a real
exec through the API server to the kubelet, then scancel and teardown."""

from __future__ import annotations

import json
import os
import pty
import pwd
import re
import select
import subprocess
import time

import pytest

from bridge.kubernetes.access import INTERACTIVE_JOB_NAME as ACCESS_NAME
from bridge.userview.shell import INTERACTIVE_JOB_NAME, ShellRequest, shell_script
from tests.cli.conftest import SKBRIDGE, Cli

USER = "skbalice"
_SUBMITTED = re.compile(r"job (\d+) submitted")


def _shell(cli: Cli, stdin: str, *args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    done = subprocess.run(["runuser", "-u", USER, "--", SKBRIDGE, "shell", "--time", "5", *args],
                          env={**cli.sandbox.env, "COLUMNS": "200"}, cwd=str(cli.jobs.home(USER)), input=stdin,
                          capture_output=True, text=True, timeout=240, check=False)
    found = _SUBMITTED.search(done.stderr)
    assert found, done.stderr + done.stdout
    cli.jobs.submitted.append(found.group(1))
    return done, found.group(1)


def _assert_ended_and_clean(cli: Cli, job_id: str) -> None:
    # skbridge scancels the job once the shell exits (its script would otherwise wait for the
    # time limit): Slurm records CANCELLED, and skbridge waited for the Pod to go.
    assert cli.jobs.sacct(job_id)[0] == "CANCELLED"
    cli.jobs.wait_no_objects(job_id, timeout_s=60)


def test_shell_runs_stdin_as_the_user_and_ends_the_job(cli: Cli) -> None:
    done, job_id = _shell(cli, "echo hello-from-shell; id -u; hostname; exit 3\n")
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert "hello-from-shell" in lines
    assert str(pwd.getpwnam(USER).pw_uid) in lines
    assert f"skb-{job_id}-r0" in lines  # the Pod's hostname: the shell ran in the job's Pod
    _assert_ended_and_clean(cli, job_id)


def test_shell_ends_at_end_of_input_with_the_shells_status(cli: Cli) -> None:
    done, job_id = _shell(cli, "echo no-exit-here; false\n")
    assert "no-exit-here" in done.stdout.splitlines()
    assert done.returncode == 1, done.stderr  # the status of the shell's last command
    _assert_ended_and_clean(cli, job_id)


def test_shell_sees_its_allocated_gpus(cli: Cli) -> None:
    done, job_id = _shell(cli, 'echo "gpus=$NVIDIA_VISIBLE_DEVICES"\n', "--gpus", "a100:2")
    assert done.returncode == 0, done.stderr
    status = json.loads((cli.jobs.results(USER, job_id) / "bridge-status.json").read_text())
    indices = status["attempts"][-1]["gpu_indices"]
    assert len(indices) == 2
    assert f"gpus={','.join(map(str, indices))}" in done.stdout.splitlines()
    _assert_ended_and_clean(cli, job_id)


def test_shell_on_a_terminal_types_and_exits(cli: Cli) -> None:
    home = cli.jobs.home(USER)
    pid, fd = pty.fork()
    if pid == 0:  # the child: skbridge shell on a pseudo-terminal, as the user
        os.chdir(home)
        os.execve("/usr/sbin/runuser", ["runuser", "-u", USER, "--", SKBRIDGE, "shell", "--time", "5"],
                  cli.sandbox.env)
    seen = bytearray()

    def read_until(token: bytes, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while token not in seen and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.5)[0]:
                try:
                    seen.extend(os.read(fd, 4096))
                except OSError:
                    break
        return token in seen

    done = (0, 0)
    try:
        assert read_until(b"$ ", 120), seen.decode(errors="replace")
        found = _SUBMITTED.search(seen.decode(errors="replace"))
        assert found, seen.decode(errors="replace")
        cli.jobs.submitted.append(found.group(1))  # scancelled by the fixture should the test fail
        os.write(fd, b"tty; echo typed-$((6*7))\r")
        assert read_until(b"typed-42", 30), seen.decode(errors="replace")
        os.write(fd, b"exit 4\r")
        deadline = time.monotonic() + 120
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            read_until(b"\x00never", 0.5)  # keep the pty drained
        assert done[0] == pid, "skbridge shell did not end after `exit`"
    finally:
        if done[0] != pid:  # still running: the test failed, end it (skbridge's job is scancelled by `jobs`)
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    text = seen.decode(errors="replace")
    assert "/dev/pts/" in text  # a TTY inside the container
    assert os.waitstatus_to_exitcode(done[1]) == 4, text[-800:]
    _assert_ended_and_clean(cli, found.group(1))


@pytest.mark.unit
def test_shell_job_carries_the_name_the_prolog_grants_exec_for() -> None:
    assert INTERACTIVE_JOB_NAME == ACCESS_NAME
    script = shell_script(ShellRequest(gpus="a100:1", cpus=2, mem="4G", time="30", partition="gpu"))
    assert f"#SBATCH --job-name={INTERACTIVE_JOB_NAME}" in script.splitlines()
    for line in ("#SBATCH --gpus=a100:1", "#SBATCH --cpus-per-task=2", "#SBATCH --mem=4G", "#SBATCH --time=30",
                 "#SBATCH --partition=gpu"):
        assert line in script.splitlines()
