"""A user's day with `skbridge`, end to end as skbalice/skbbob: real sbatch, real hooks, real Pods."""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
from pathlib import Path

from tests.cli.conftest import SKBRIDGE, Cli
from tests.conftest import wait_for
from tests.jobs.conftest import job_script

ALICE, BOB = "skbalice", "skbbob"


def test_submit_status_logs_results_walkthrough(cli: Cli) -> None:
    body = "echo first line from $(hostname)\nsleep 6\necho second line"
    job_id = cli.submit(ALICE, "walk.sh", job_script("--job-name=walk", body=body))

    cli.jobs.wait_running(job_id, timeout_s=180)
    running = cli.json(ALICE, "status", job_id)
    assert running["state"] == "RUNNING"
    assert running["user"] == ALICE and running["name"] == "walk"
    # Where Slurm put it: the first node unless it was busy (a job still COMPLETING there).
    slurm_node = cli.sandbox.slurm("squeue", "--noheader", "--jobs", job_id, "--format=%N").stdout.strip()
    assert running["node"] == slurm_node and slurm_node in {node.name for node in cli.sandbox.layout.nodes}
    assert running["cpus"] == 1 and running["memory_mib"] == 1024
    # Users have no Kubernetes rights: the Pod is read with the job's own credential.
    assert running["pod"]["source"] == "kubernetes" and running["pod"]["phase"] == "Running"
    assert running["output"] == str(cli.jobs.home(ALICE) / f"slurm-{job_id}.out")
    assert [step["event"] for step in running["timeline"]][:3] == ["submitted", "allocated", "pod ready"]
    human = cli.run(ALICE, "status", job_id)
    assert human.returncode == 0 and "RUNNING" in human.stdout and "timeline" in human.stdout

    # -f follows the live output file until the job ends.
    followed = cli.run(ALICE, "logs", job_id, "-f")
    assert followed.returncode == 0, followed.stderr
    assert followed.stdout.index("first line") < followed.stdout.index("second line")
    # It ran in the job's Pod (its hostname), once: never on the bare host.
    assert f"first line from skb-{job_id}-r0" in followed.stdout and followed.stdout.count("first line") == 1

    wait_for((cli.jobs.results(ALICE, job_id) / "SHA256SUMS").exists, timeout_s=60, what="results collected")
    ended = cli.json(ALICE, "status", job_id)
    assert ended["state"] == "COMPLETED" and ended["exit_code"] == 0
    assert ended["pod"]["phase"] == "Succeeded"
    assert [step["event"] for step in ended["timeline"]] == ["submitted", "allocated", "pod ready", "ended", "collected"]
    assert ended["results_ready"] is True

    tail = cli.run(ALICE, "logs", job_id, "--tail", "1")
    assert tail.returncode == 0 and "first line" not in tail.stdout and tail.stdout.strip()

    checked = cli.json(ALICE, "results", job_id, "--verify")
    assert checked["verify"]["passed"] is True
    assert {"pod.log", "summary.json", "SHA256SUMS"} <= {f["path"] for f in checked["files"]}
    copy_to = cli.jobs.home(ALICE) / f"copy-{job_id}"
    copied = cli.run(ALICE, "results", job_id, "--verify", "--to", str(copy_to))
    assert copied.returncode == 0, copied.stderr
    assert "second line" in (copy_to / job_id / "pod.log").read_text()
    assert (copy_to / job_id / "pod.log").stat().st_uid == pwd.getpwnam(ALICE).pw_uid


def test_results_verify_fails_on_a_changed_file(cli: Cli) -> None:
    job_id = cli.submit(ALICE, "sums.sh", job_script(body="echo checked"))
    cli.jobs.wait_done(job_id, timeout_s=180)
    results = cli.jobs.results(ALICE, job_id)
    wait_for((results / "SHA256SUMS").exists, timeout_s=60, what="results collected")
    subprocess.run(["runuser", "-u", ALICE, "--", "sh", "-c", f"echo tampered >> {results}/pod.log"], check=True)
    done = cli.run(ALICE, "results", job_id, "--verify", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["verify"]["mismatched"] == ["pod.log"]


def test_logs_fall_back_to_the_collected_pod_log(cli: Cli) -> None:
    job_id = cli.submit(ALICE, "gone.sh", job_script(body="echo kept on the nas"))
    cli.jobs.wait_done(job_id, timeout_s=180)
    wait_for((cli.jobs.results(ALICE, job_id) / "pod.log").exists, timeout_s=60, what="pod.log collected")
    (cli.jobs.home(ALICE) / f"slurm-{job_id}.out").unlink()
    done = cli.run(ALICE, "logs", job_id)
    assert done.returncode == 0, done.stderr
    assert "kept on the nas" in done.stdout


def test_cancel_waits_until_the_pod_is_gone(cli: Cli) -> None:
    job_id = cli.submit(ALICE, "long.sh", job_script(body="echo started; sleep 600"))
    cli.jobs.wait_running(job_id, timeout_s=180)
    done = cli.run(ALICE, "cancel", job_id)
    assert done.returncode == 0, done.stderr
    assert "Pod gone" in done.stdout
    assert cli.jobs.sacct(job_id)[0] == "CANCELLED"
    assert cli.jobs.pod(job_id) is None
    again = cli.run(ALICE, "cancel", job_id)
    assert again.returncode == 0 and "already ended" in again.stdout


def test_another_users_job_is_invisible_and_uncancellable(cli: Cli) -> None:
    job_id = cli.jobs.sbatch(ALICE, job_script("--job-name=alice-secret-name"), "--hold")
    for command in (("status", job_id), ("status", job_id, "--json"), ("logs", job_id), ("logs", job_id, "-f")):
        done = cli.run(BOB, *command)
        assert done.returncode == 4, (command, done.stdout, done.stderr)
        assert "not one of your jobs" in done.stderr
        assert "alice-secret-name" not in done.stdout + done.stderr
    refused = cli.run(BOB, "cancel", job_id, "--no-wait")
    assert refused.returncode != 0
    assert re.search(r"permission denied|not authorized|Access", refused.stderr, re.IGNORECASE), refused.stderr
    assert cli.jobs.squeue_job(job_id).get("job_state") in ("PENDING", ["PENDING"])
    # Results are always read from the caller's own folder.
    assert cli.run(BOB, "results", job_id).returncode == 3
    # The owner sees why it waits, in plain words.
    mine = cli.json(ALICE, "status", job_id)
    assert mine["state"] == "PENDING" and "held by you" in mine["reason_text"]
    assert mine["queue_position"]["place"] >= 1


def test_unknown_job_and_bad_id(cli: Cli) -> None:
    assert cli.run(ALICE, "status", "999999999").returncode == 3
    bad = cli.run(ALICE, "status", "--", "-1")
    assert bad.returncode == 1 and "not a Slurm job id" in bad.stderr


def test_submit_wait_exits_with_the_jobs_exit_code(cli: Cli) -> None:
    cli.jobs.write_script(ALICE, "seven.sh", job_script(env=("SANDBOX_EXIT_CODE=7",), body="echo about to fail"))
    done = cli.run(ALICE, "submit", "seven.sh", "--wait")
    cli.jobs.submitted += re.findall(r"Submitted job (\d+)", done.stdout)
    assert done.returncode == 7, done.stdout + done.stderr

    cli.jobs.write_script(ALICE, "follow.sh", job_script(body="for i in 1 2 3; do echo tick $i; sleep 1; done"))
    followed = cli.run(ALICE, "submit", "follow.sh", "--follow", "--parsable")
    cli.jobs.submitted.append(followed.stdout.splitlines()[0])
    assert followed.returncode == 0, followed.stderr
    assert [line for line in followed.stdout.splitlines() if line.startswith("tick")] == ["tick 1", "tick 2", "tick 3"]


def test_submit_refuses_an_invalid_file_locally(cli: Cli) -> None:
    bad = job_script().replace("registry.lab:5000/", "evil.example.com/")
    cli.jobs.write_script(ALICE, "bad.sh", bad)
    before = set(os.listdir(cli.jobs.settings.nas.submit_dir / ALICE))
    for via in ("sbatch", "drop"):
        done = cli.run(ALICE, "submit", "bad.sh", "--via", via)
        assert done.returncode == 1
        assert "invalid" in done.stderr and "registry" in done.stderr
    assert set(os.listdir(cli.jobs.settings.nas.submit_dir / ALICE)) == before


def test_submit_through_the_drop_folder(cli: Cli) -> None:
    name = f"dropped-{os.getpid()}.sh"
    job_id = cli.submit(ALICE, name, job_script(body="echo via the drop folder"), "--via", "drop")
    accepted = cli.jobs.settings.nas.accepted_dir / f"{job_id}-{name}"
    assert accepted.exists()
    assert cli.json(ALICE, "status", job_id)["user"] == ALICE


def test_init_writes_a_file_that_passes_validate(cli: Cli) -> None:
    folder = cli.jobs.home(ALICE) / f"init-{os.getpid()}"
    folder.mkdir(exist_ok=True)
    os.chown(folder, pwd.getpwnam(ALICE).pw_uid, pwd.getpwnam(ALICE).pw_gid)
    done = cli.run(ALICE, "init", "train", "--gpus", "a100:2", "--cpus", "4", "--mem", "8G", "--time", "2:00:00",
                   cwd=folder)
    assert done.returncode == 0, done.stderr
    text = (folder / "train.sh").read_text()
    assert "#SBATCH --gres=gpu:a100:2" in text and "#K8S_IMAGE=registry.lab:5000/skbridge-job:bookworm" in text
    verdict = cli.run(ALICE, "validate", "--json", "train.sh", cwd=folder)
    assert verdict.returncode == 0, verdict.stdout
    job = json.loads(verdict.stdout)["job"]
    assert (job["gpus"], job["gpu_type"], job["cpus_per_task"], job["mem_mib"]) == (2, "a100", 4, 8192)
    again = cli.run(ALICE, "init", "train", "--gpus", "1", cwd=folder)
    assert again.returncode == 1 and "not overwritten" in again.stderr
    assert (folder / "train.sh").read_text() == text
    assert cli.run(ALICE, "init", "other", "--gpus", "lots", cwd=folder).returncode == 2
    assert not (folder / "other.sh").exists()
    # A default file runs as it is.
    assert cli.run(ALICE, "init", cwd=folder).returncode == 0
    job_id = cli.submit(ALICE, str(folder.relative_to(cli.jobs.home(ALICE)) / "job.sh"), (folder / "job.sh").read_text())
    assert cli.jobs.wait_done(job_id, timeout_s=180)[0] == "COMPLETED"


def test_jobs_and_nodes(cli: Cli) -> None:
    held = cli.jobs.sbatch(ALICE, job_script("--job-name=listed", "--gres=gpu:a100:2"), "--hold")
    rows = cli.json(ALICE, "jobs")
    mine = [row for row in rows if row["job_id"] == held]
    assert mine and mine[0]["state"] == "PENDING" and mine[0]["gpus"] == 2 and mine[0]["name"] == "listed"
    assert {row["user"] for row in rows} == {ALICE}
    pending = cli.json(ALICE, "jobs", "--state", "PD")
    assert held in {row["job_id"] for row in pending} and {row["state"] for row in pending} == {"PENDING"}
    assert held not in {row["job_id"] for row in cli.json(BOB, "jobs")}
    table = cli.run(ALICE, "jobs", "--state", "PD")
    assert table.returncode == 0 and held in table.stdout
    refused = cli.run(ALICE, "jobs", "--all-users")
    assert refused.returncode == 4 and "administrators" in refused.stderr
    everyone = subprocess.run([SKBRIDGE, "jobs", "--all-users", "--state", "PD", "--json"], env=cli.sandbox.env,
                              capture_output=True, text=True, timeout=60, check=True)
    assert held in {row["job_id"] for row in json.loads(everyone.stdout)}

    nodes = cli.json(ALICE, "nodes")["nodes"]
    node = next(n for n in nodes if n["name"] == cli.sandbox.node_name)
    assert node["cpus"]["total"] == 16 and node["memory_mib"]["total"] == 65536
    assert node["gpus"]["a100"]["total"] == 4 and 0 <= node["gpus"]["a100"]["free"] <= 4
    assert node["kubernetes"] == "unknown"  # users cannot ask Kubernetes
    human = cli.run(ALICE, "nodes")
    assert human.returncode == 0 and "a100" in human.stdout


def test_nodes_as_root_compares_with_kubernetes(cli: Cli) -> None:
    done = subprocess.run([SKBRIDGE, "nodes", "--json"], env=cli.sandbox.env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    node = next(n for n in json.loads(done.stdout)["nodes"] if n["name"] == cli.sandbox.node_name)
    assert node["kubernetes"] == "Ready"


def test_help_documents_exit_codes(cli: Cli) -> None:
    for command in ("submit", "status", "logs", "cancel", "jobs", "nodes", "init", "results"):
        done = cli.run(ALICE, command, "--help")
        assert done.returncode == 0
        assert "Exit status" in done.stdout and "4 not your job" in done.stdout, command
    assert Path(cli.jobs.home(ALICE)).is_dir()


def test_cancel_several_pending_jobs_at_once(cli: Cli) -> None:
    first = cli.jobs.sbatch(ALICE, job_script(), "--hold")
    second = cli.jobs.sbatch(ALICE, job_script(), "--hold")
    done = cli.run(ALICE, "cancel", first, second)
    assert done.returncode == 0, done.stderr
    assert f"job {first}: cancelled" in done.stdout and f"job {second}: cancelled" in done.stdout
    assert {cli.jobs.wait_done(first)[0], cli.jobs.wait_done(second)[0]} == {"CANCELLED"}
    # A pending job has no output yet: said plainly, not an empty success.
    held = cli.jobs.sbatch(ALICE, job_script(), "--hold")
    quiet = cli.run(ALICE, "logs", held)
    assert quiet.returncode == 1 and "no output yet" in quiet.stderr
    assert cli.run(ALICE, "cancel", "--no-wait", held).returncode == 0
