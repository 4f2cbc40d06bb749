"""Issue 11 item 4: a bridge job's script never runs on the bare host.

skbalice writes lines that end with the launcher marker (which once made both the watcher
and job_submit.lua skip the launcher), or submits with variables bash acts on before the
launcher line runs. On both paths, plain `sbatch` and the drop folder, the batch step must
run `skbridge attach` first: the script's commands run only in the Pod.
"""

from __future__ import annotations

import os
import pwd
import socket
import uuid
from pathlib import Path

import pytest

from bridge.jobfile.launcher import LAUNCHER_MARKER, has_launcher, header_end, launcher_line
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script

HOST = socket.gethostname()
# Each prints where it ran (the Pod's hostname is its own), then tries to act on the host.
SPOOFS = {
    "redirect": "touch {flag}  " + LAUNCHER_MARKER,
    "exec": "exec /bin/true  " + LAUNCHER_MARKER,
    "generated-form": "exec /usr/bin/touch {flag} attach  " + LAUNCHER_MARKER,
}


def _flag() -> Path:
    """A path the host would get if the script ran there; a Pod's /tmp is its own."""
    return Path("/tmp") / f"skb-pwned-{uuid.uuid4().hex[:10]}"


def _script(spoof: str, flag: Path, *extra: str) -> str:
    body = "\n".join(['echo "hello from $(hostname)"', spoof.format(flag=flag), f"touch {flag}"])
    return job_script(*extra, body=body)


def _assert_ran_only_in_the_pod(jobs: Jobs, sandbox: Sandbox, job_id: str, flag: Path) -> None:
    settings = jobs.settings
    stored = sandbox.slurm("scontrol", "write", "batch_script", job_id, "-").stdout
    lines = stored.split("\n")
    # The first line bash runs on the host is the bridge's own launcher.
    assert lines[header_end(lines)] == launcher_line(settings.slurm.skbridge_path, settings.slurm.attach_config_path)
    assert has_launcher(stored, settings.slurm.skbridge_path, settings.slurm.attach_config_path)
    state, code = jobs.wait_done(job_id, timeout_s=180)
    assert not flag.exists(), f"the script ran on the host: {flag} exists"
    path = jobs.output_path("skbalice", job_id)
    output = path.read_text(errors="replace") if path.exists() else ""
    assert state == "COMPLETED", (state, code, output, jobs.hook_log()[-3000:])
    assert "hello from " in output, output  # the Pod's log, streamed by `skbridge attach`
    assert f"hello from {HOST}\n" not in output, output


@pytest.mark.parametrize("spoof", sorted(SPOOFS))
def test_plain_sbatch_with_a_marker_line_still_gets_the_launcher(jobs: Jobs, sandbox: Sandbox, spoof: str) -> None:
    flag = _flag()
    job_id = jobs.sbatch("skbalice", _script(SPOOFS[spoof], flag))
    _assert_ran_only_in_the_pod(jobs, sandbox, job_id, flag)


@pytest.mark.parametrize("spoof", sorted(SPOOFS))
def test_dropped_file_with_a_marker_line_still_gets_the_launcher(jobs: Jobs, sandbox: Sandbox, spoof: str) -> None:
    flag = _flag()
    home = jobs.home("skbalice")
    alice = pwd.getpwnam("skbalice")
    folder = jobs.settings.nas.submit_dir / "skbalice"
    folder.mkdir(exist_ok=True)
    os.chown(folder, alice.pw_uid, alice.pw_gid)
    name = f"spoof-{uuid.uuid4().hex[:8]}.sh"
    staging = folder / f".{name}.part"
    staging.write_text(_script(SPOOFS[spoof], flag, f"--output={home}/out/%j.out"))
    os.chown(staging, alice.pw_uid, alice.pw_gid)
    staging.rename(folder / name)
    accepted = jobs.settings.nas.accepted_dir

    def accepted_id() -> str | None:
        found = [p.name for p in accepted.iterdir() if p.name.endswith(f"-{name}")]
        return found[0].split("-", 1)[0] if found else None

    wait_for(lambda: accepted_id() is not None, timeout_s=90, what=f"{name} accepted (is the sandbox watcher up?)")
    job_id = accepted_id()
    assert job_id is not None
    jobs.submitted.append(job_id)
    _assert_ran_only_in_the_pod(jobs, sandbox, job_id, flag)


def _hostile_environments(flag: Path, tmp: Path) -> dict[str, dict[str, str]]:
    bash_env = tmp / "bash_env.sh"
    bash_env.write_text(f"touch {flag}\n")
    bash_env.chmod(0o644)
    return {
        "function-named-exec": {"BASH_FUNC_exec%%": f"() {{ touch {flag}; }}"},
        "BASH_ENV": {"BASH_ENV": str(bash_env)},
        "xtrace-PS4": {"SHELLOPTS": "xtrace", "PS4": f"$(touch {flag})"},
    }


@pytest.mark.parametrize("attack", ["function-named-exec", "BASH_ENV", "xtrace-PS4"])
def test_variables_bash_acts_on_at_start_cannot_run_the_script_on_the_host(
        jobs: Jobs, sandbox: Sandbox, tmp_job_dir: Path, attack: str) -> None:
    flag = _flag()
    variables = _hostile_environments(flag, tmp_job_dir)[attack]
    home = jobs.home("skbalice")
    script = jobs.write_script("skbalice", f"env-{uuid.uuid4().hex[:8]}.sh", _script("true", flag))
    out = sandbox.slurm("env", *(f"{k}={v}" for k, v in variables.items()), "sbatch", "--parsable",
                        f"--output={home}/out/%j.out", f"--chdir={home}", str(script), user="skbalice")
    job_id = out.stdout.strip().split(";")[0]
    jobs.submitted.append(job_id)
    _assert_ran_only_in_the_pod(jobs, sandbox, job_id, flag)


@pytest.mark.parametrize("shebang", ["#!/usr/bin/env -S sh -c 'touch {flag}'", "#!/bin/bash -l", "#!/usr/bin/awk -f"])
def test_interpreters_that_would_run_the_users_text_first_are_refused_at_submission(
        jobs: Jobs, sandbox: Sandbox, shebang: str) -> None:
    flag = _flag()
    text = _script("true", flag).replace("#!/bin/bash", shebang.format(flag=flag), 1)
    home = jobs.home("skbalice")
    script = jobs.write_script("skbalice", f"interp-{uuid.uuid4().hex[:8]}.sh", text)
    out = sandbox.slurm("sbatch", "--parsable", f"--output={home}/out/%j.out", f"--chdir={home}", str(script),
                        user="skbalice", check=False)
    if out.returncode == 0:
        jobs.submitted.append(out.stdout.strip().split(";")[0])
    assert out.returncode != 0 and "slurm-k8s-bridge" in out.stderr, out
    assert not flag.exists()


def test_a_dropped_file_with_such_an_interpreter_is_rejected_with_its_reason(jobs: Jobs) -> None:
    flag = _flag()
    alice = pwd.getpwnam("skbalice")
    folder = jobs.settings.nas.submit_dir / "skbalice"
    folder.mkdir(exist_ok=True)
    os.chown(folder, alice.pw_uid, alice.pw_gid)
    name = f"interp-{uuid.uuid4().hex[:8]}.sh"
    staging = folder / f".{name}.part"
    staging.write_text(_script("true", flag).replace("#!/bin/bash", f"#!/usr/bin/env -S sh -c 'touch {flag}'", 1))
    os.chown(staging, alice.pw_uid, alice.pw_gid)
    staging.rename(folder / name)
    report = jobs.settings.nas.failed_dir / f"{name}.error"
    wait_for(report.exists, timeout_s=90, what=f"{name}.error in failed/ (is the sandbox watcher up?)")
    assert "bash or sh script" in report.read_text()
    assert not flag.exists()
