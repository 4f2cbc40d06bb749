"""Profiles end to end as skbalice: a run snapshots the project into the NAS, its job runs in a
real Pod from there; collect, recover, clean and the active-run warning; `--host` over an
ssh-compatible stand-in (this machine has no sshd) that runs the remote command with `sh -c`."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cli.conftest import SKBRIDGE, Cli
from tests.conftest import wait_for
from tests.jobs.conftest import job_script

ALICE = "skbalice"
IMAGE = "registry.lab:5000/skbridge-job:bookworm"
LOCALSSH = f"{sys.executable} -m bridge.profiles.localssh"
REPO = Path(__file__).resolve().parents[2]

PROFILES = f"""\
defaults:
  image: {IMAGE}
  mem: 1G
  time: "10"
profiles:
  hello:
    description: prints the snapshot's code
    command: |
      echo "ran in $(hostname)"
      sleep 6
      cat main.py
      mkdir -p out && cp main.py out/seen.py
    results: out
  long:
    command: echo long started; sleep 600
  flaky:
    command: |
      if [ -f attempted ]; then echo second attempt; else touch attempted; echo first attempt; exit 3; fi
"""


@dataclass
class Project:
    cli: Cli
    path: Path
    state: Path

    def env(self) -> dict[str, str]:
        home = pwd.getpwnam(ALICE).pw_dir
        return {**self.cli.sandbox.env, "COLUMNS": "250", "HOME": home, "SKBRIDGE_STATE_DIR": str(self.state),
                "SKBRIDGE_SSH": LOCALSSH, "SKBRIDGE_REMOTE": SKBRIDGE, "PYTHONPATH": str(REPO)}

    def sh(self, *argv: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", ALICE, "--", *argv], env=self.env(), cwd=str(cwd or self.path),
                              input=stdin if stdin is not None else "", capture_output=True, text=True, timeout=300,
                              check=False)

    def skb(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.sh(SKBRIDGE, *args, stdin=stdin)

    def write(self, name: str, text: str) -> None:
        assert self.sh("sh", "-c", 'cat > "$1"', "sh", name, stdin=text).returncode == 0

    def git(self, *args: str) -> None:
        done = self.sh("git", "-c", "user.email=alice@lab", "-c", "user.name=alice", *args)
        assert done.returncode == 0, done.stderr

    def run_profile(self, name: str, *args: str) -> dict[str, Any]:
        done = self.skb("profile", "run", name, "--yes", *args)
        assert done.returncode == 0, done.stdout + done.stderr
        run = self.runs(name)[-1]
        self.cli.jobs.submitted.append(run["job_id"])
        return run

    def runs(self, name: str | None = None) -> list[dict[str, Any]]:
        done = self.skb("profile", "status", *([name] if name else []), "--json")
        assert done.returncode == 0, done.stderr
        return list(json.loads(done.stdout))


@pytest.fixture
def project(cli: Cli) -> Iterator[Project]:
    home = cli.jobs.home(ALICE)
    tag = uuid.uuid4().hex[:8]
    path, state = home / f"proj-{tag}", home / f".state-{tag}"
    for folder in (path, state):
        folder.mkdir()
        os.chown(folder, pwd.getpwnam(ALICE).pw_uid, pwd.getpwnam(ALICE).pw_gid)
    helper = Project(cli=cli, path=path, state=state)
    helper.write("main.py", 'print("version one")\n')
    helper.write(".gitignore", "skbridge-results/\nscratch.txt\n")
    helper.write("skbridge-profiles.yaml", PROFILES)
    helper.write("scratch.txt", "ignored by git\n")
    helper.git("init", "-q", ".")
    helper.git("add", "main.py", ".gitignore", "skbridge-profiles.yaml")
    helper.git("commit", "-qm", "first")
    yield helper


def test_run_snapshot_isolates_the_queued_job_and_collect_waits_for_it(project: Project) -> None:
    shown = project.skb("profile", "show", "hello", "--json")
    assert shown.returncode == 0, shown.stderr
    plan = json.loads(shown.stdout)
    assert plan["snapshot"]["source"] == "git"
    assert sorted(plan["snapshot"]["files"]) == [".gitignore", "main.py", "skbridge-profiles.yaml"]  # no scratch.txt

    run = project.run_profile("hello")
    job_id = run["job_id"]
    # Later edits, committed or not, never reach the queued job: it runs from its own copy.
    project.write("main.py", 'print("version two")\n')
    project.git("commit", "-qam", "second")
    snapshot = Path(run["run_dir"])
    assert (snapshot / "main.py").read_text() == 'print("version one")\n'
    assert not (snapshot / "scratch.txt").exists()

    project.cli.jobs.wait_running(job_id, timeout_s=180)
    refused = project.skb("profile", "collect", "hello")
    assert refused.returncode == 6 and "still RUNNING" in refused.stderr
    assert snapshot.is_dir() and not (project.path / "skbridge-results").exists()

    assert project.cli.jobs.wait_done(job_id, timeout_s=180)[0] == "COMPLETED"
    log = project.skb("profile", "log", "hello")
    assert log.returncode == 0, log.stderr
    assert f"ran in skb-{job_id}-r0" in log.stdout  # in the job's Pod, not on the host
    assert "version one" in log.stdout and "version two" not in log.stdout

    collected = project.skb("profile", "collect", "hello", "--json")
    assert collected.returncode == 0, collected.stderr
    dest = project.path / "skbridge-results" / "hello" / job_id
    assert json.loads(collected.stdout)["collected_to"] == str(dest)
    assert (dest / "results" / "seen.py").read_text() == 'print("version one")\n'  # the #K8S_RESULTS folder
    assert "version one" in (dest / f"slurm-{job_id}.out").read_text()
    assert (dest / "SHA256SUMS").is_file()
    assert not snapshot.exists()  # only that run's folder is removed
    assert dest.stat().st_uid == pwd.getpwnam(ALICE).pw_uid
    assert project.runs("hello")[-1]["state"] == "COLLECTED"


def test_run_warns_about_an_active_run_and_needs_force(project: Project) -> None:
    first = project.run_profile("long")
    project.cli.jobs.wait_state(first["job_id"], {"RUNNING", "PENDING"}, timeout_s=60)
    again = project.skb("profile", "run", "long", "--yes")
    assert again.returncode == 6
    assert f"job {first['job_id']}) is still" in again.stderr and "--force" in again.stderr
    assert len(project.runs("long")) == 1
    # Without --yes and nobody to answer, nothing is submitted either.
    unconfirmed = project.skb("profile", "run", "hello")
    assert unconfirmed.returncode == 6 and "not confirmed" in unconfirmed.stderr
    assert "#SBATCH --job-name=hello" in unconfirmed.stdout  # the job file was shown first
    assert project.runs("hello") == []
    second = project.run_profile("long", "--force")
    assert second["job_id"] != first["job_id"]
    assert [run["job_id"] for run in project.runs("long")] == [first["job_id"], second["job_id"]]


def test_clean_lists_then_deletes_only_what_it_listed(project: Project) -> None:
    done = project.run_profile("hello")
    project.cli.jobs.wait_done(done["job_id"], timeout_s=180)
    assert project.skb("profile", "collect", "hello", "--keep-snapshot").returncode == 0
    running = project.run_profile("long")
    project.cli.jobs.wait_state(running["job_id"], {"RUNNING", "PENDING"}, timeout_s=60)
    collected = project.path / "skbridge-results" / "hello" / done["job_id"]

    declined = project.skb("profile", "clean")
    assert declined.returncode == 6
    listed = [line.strip().rstrip("/") for line in declined.stdout.splitlines() if line.startswith("  /")]
    assert sorted(listed) == sorted([done["run_dir"], str(collected)])
    assert f"kept: run {running['run_id']}" in declined.stdout
    assert Path(done["run_dir"]).is_dir() and collected.is_dir()  # not confirmed: nothing deleted

    cleaned = project.skb("profile", "clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not Path(done["run_dir"]).exists() and not collected.exists()
    assert Path(running["run_dir"]).is_dir() and (Path(running["run_dir"]) / "main.py").is_file()
    assert (project.path / "main.py").is_file() and (project.path / "skbridge-results").is_dir()
    assert [run["run_id"] for run in project.runs()] == [running["run_id"]]


def test_recover_collects_ended_runs_and_relinks_lost_ones(project: Project) -> None:
    first = project.run_profile("hello")
    second = project.run_profile("hello", "--force")
    for run in (first, second):
        project.cli.jobs.wait_done(run["job_id"], timeout_s=180)
        sums = project.cli.jobs.results(ALICE, run["job_id"]) / "SHA256SUMS"
        wait_for(sums.exists, timeout_s=60, what="results collected by the epilog")  # the job is no longer COMPLETING
    # The state file loses the second run (another machine, a wiped ~/.local/state): its folder remains.
    state_file = project.state / "runs.json"
    data = json.loads(state_file.read_text())
    data["runs"] = [run for run in data["runs"] if run["run_id"] != second["run_id"]]
    project.write(str(state_file), json.dumps(data))

    recovered = project.skb("profile", "recover", "hello", "--json")
    assert recovered.returncode == 0, recovered.stderr
    report = {entry["job_id"]: entry for entry in json.loads(recovered.stdout)}
    assert set(report) == {first["job_id"], second["job_id"]}
    assert report[second["job_id"]]["relinked"] is True and report[first["job_id"]]["relinked"] is False
    for run in (first, second):
        dest = project.path / "skbridge-results" / "hello" / run["job_id"]
        assert (dest / "results" / "seen.py").is_file()
        assert not Path(run["run_dir"]).exists()
    again = project.skb("profile", "recover", "hello")
    assert again.returncode == 0 and "nothing to recover" in again.stdout


def test_recover_resubmits_a_failed_run_from_its_snapshot(project: Project) -> None:
    failed = project.run_profile("flaky")
    assert project.cli.jobs.wait_done(failed["job_id"], timeout_s=180) == ("FAILED", "3:0")
    wait_for((project.cli.jobs.results(ALICE, failed["job_id"]) / "SHA256SUMS").exists, timeout_s=60,
             what="results collected by the epilog")
    again = project.skb("profile", "recover", "flaky", "--resubmit", "--json")
    assert again.returncode == 0, again.stderr
    [entry] = json.loads(again.stdout)
    new_id = entry["resubmitted_as"]
    project.cli.jobs.submitted.append(new_id)
    assert entry["state"] == "FAILED" and new_id != failed["job_id"] and entry["collected_to"] is None
    assert project.cli.jobs.wait_done(new_id, timeout_s=180)[0] == "COMPLETED"
    wait_for((project.cli.jobs.results(ALICE, new_id) / "SHA256SUMS").exists, timeout_s=60, what="results collected")
    run = project.runs("flaky")[-1]
    assert (run["run_id"], run["job_id"], run["previous_jobs"]) == (failed["run_id"], new_id, [failed["job_id"]])
    # The same snapshot folder: the first attempt's file is there, so this one went the other way.
    assert "second attempt" in (Path(run["run_dir"]) / f"slurm-{new_id}.out").read_text()
    collected = project.skb("profile", "recover", "flaky", "--resubmit", "--json")
    assert json.loads(collected.stdout)[0]["collected_to"]  # completed: collected, not submitted again


def test_full_runs_follows_and_collects(project: Project) -> None:
    done = project.skb("profile", "full", "hello", "--yes")
    run = project.runs("hello")[-1]
    project.cli.jobs.submitted.append(run["job_id"])
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.index("ran in skb-") < done.stdout.index("version one") < done.stdout.index("collected job")
    assert run["state"] == "COLLECTED"
    assert (Path(run["collected_to"]) / "results" / "seen.py").is_file()


def test_submit_over_host_sends_the_file_on_stdin(project: Project) -> None:
    hostile = project.path / "w d;$(touch pwned)'x"
    assert project.sh("mkdir", str(hostile)).returncode == 0
    done = project.skb("submit", "--host", "login.lab", "--parsable", "--chdir", str(hostile), "-",
                       stdin=job_script(body="echo over ssh from $(pwd)"))
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip()
    assert job_id.isdigit()
    project.cli.jobs.submitted.append(job_id)
    assert project.cli.jobs.wait_done(job_id, timeout_s=180)[0] == "COMPLETED"
    assert not (project.path / "pwned").exists() and not (hostile / "pwned").exists()
    assert (hostile / f"slurm-{job_id}.out").is_file()  # the quoted --chdir reached sbatch as one word
    assert "over ssh from /workspace/" in (hostile / f"slurm-{job_id}.out").read_text()
    # --wait over ssh ends with the job and hands its exit status back.
    waited = project.skb("submit", "--host", "login.lab", "--wait", "-",
                         stdin=job_script(env=("SANDBOX_EXIT_CODE=7",), body="echo failing on purpose"))
    project.cli.jobs.submitted += [line for line in waited.stdout.split() if line.isdigit()][:1]
    assert waited.returncode == 7, waited.stdout + waited.stderr
    bad_host = project.skb("submit", "--host", "-oProxyCommand=touch pwned", "-", stdin=job_script())
    assert bad_host.returncode == 2 and "not a host name" in bad_host.stderr
    assert not (project.path / "pwned").exists()


def test_profile_run_over_host_uploads_the_snapshot(project: Project) -> None:
    run = project.run_profile("hello", "--host", "login.lab")
    assert run["host"] == "login.lab"
    snapshot = Path(run["run_dir"])
    assert snapshot.parent.parent == project.cli.jobs.home(ALICE) / "skbridge-runs"
    assert (snapshot / "main.py").read_text() == 'print("version one")\n'
    assert snapshot.stat().st_uid == pwd.getpwnam(ALICE).pw_uid
    assert project.cli.jobs.wait_done(run["job_id"], timeout_s=180)[0] == "COMPLETED"
    log = project.skb("profile", "log", "hello")
    assert "version one" in log.stdout, log.stderr
    collected = project.skb("profile", "collect", "hello")
    assert collected.returncode == 0, collected.stderr
    dest = project.path / "skbridge-results" / "hello" / run["job_id"]
    assert (dest / "results" / "seen.py").is_file() and (dest / f"slurm-{run['job_id']}.out").is_file()
    assert not snapshot.exists()  # removed on the login node, over ssh
    assert project.runs("hello")[-1]["state"] == "COLLECTED"

    # The whole round over ssh: run, follow the output, collect, the job's exit status.
    full = project.skb("profile", "full", "hello", "--yes", "--host", "login.lab")
    second = project.runs("hello")[-1]
    project.cli.jobs.submitted.append(second["job_id"])
    assert full.returncode == 0, full.stdout + full.stderr
    assert full.stdout.index(f"ran in skb-{second['job_id']}-r0") < full.stdout.index("collected job")
    assert second["host"] == "login.lab" and second["state"] == "COLLECTED"
    assert not Path(second["run_dir"]).exists()

    cleaned = project.skb("profile", "clean", "--yes")
    assert cleaned.returncode == 0, cleaned.stderr
    assert not dest.exists() and not Path(second["collected_to"]).exists()
    assert project.runs() == []


def test_profile_help_documents_exit_codes(project: Project) -> None:
    for command in ("list", "show", "run", "full", "status", "log", "collect", "recover", "clean"):
        done = project.skb("profile", command, "--help")
        assert done.returncode == 0, command
        assert "6 refused" in done.stdout and "3 no such job" in done.stdout, command
    listed = project.skb("profile", "list", "--json")
    assert [p["name"] for p in json.loads(listed.stdout)["profiles"]] == ["flaky", "hello", "long"]
    missing = project.skb("profile", "run", "nope", "--yes")
    assert missing.returncode == 2 and "no profile 'nope'" in missing.stderr


def test_refused_runs_leave_nothing_behind(project: Project) -> None:
    runs_root = project.cli.jobs.home(ALICE) / "skbridge-runs"
    # A job the site's rules refuse is refused before anything is copied or submitted.
    project.write("skbridge-profiles.yaml", PROFILES + "  evil:\n    command: echo x\n    image: evil.example.com/x:1\n")
    project.git("commit", "-qam", "evil profile")
    refused = project.skb("profile", "run", "evil", "--yes")
    assert refused.returncode == 1 and "refused" in refused.stderr and "registry" in refused.stderr
    assert not (runs_root / "evil").exists()
    # Uncommitted changes are not what a git snapshot takes: refused, unless --dirty.
    project.write("main.py", 'print("not committed")\n')
    dirty = project.skb("profile", "run", "hello", "--yes")
    assert dirty.returncode == 2 and "uncommitted changes (main.py)" in dirty.stderr
    shown = project.skb("profile", "show", "hello", "--dirty", "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["snapshot"]["source"] == "git-dirty"
    assert project.runs() == []
