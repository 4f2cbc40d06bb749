"""Issue 17: job arrays. Each task runs in its own Pod with its own output and results folder,
Slurm's `%` throttle holds, cancelling the array leaves nothing behind, and the site's maximum
on array tasks is enforced at sbatch (job_submit.lua) and in the drop folder."""

from __future__ import annotations

import json
import os
import pwd
import time
from datetime import datetime
from typing import Any

import yaml

from bridge.ingest.layout import user_submit_dir
from bridge.jobfile.spec import parse_job_text
from bridge.kubernetes.access import attach_identity
from bridge.kubernetes.objects import KIND_ORDER, collection_path, create_objects
from bridge.kubernetes.render import (
    LABEL_ARRAY_JOB_ID,
    LABEL_ARRAY_TASK_ID,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    render_job,
)
from bridge.slurm.jobinfo import JobAllocation, NodeAllocation
from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import TERMINAL, Jobs, job_script

BODY = 'echo "task=$SLURM_ARRAY_TASK_ID of=$SLURM_ARRAY_TASK_COUNT array=$SLURM_ARRAY_JOB_ID job=$SLURM_JOB_ID"'
ALIVE = {"RUNNING", "CONFIGURING"}  # what Slurm's array throttle counts (COMPLETING tasks have ended)


def array_rows(sandbox: Sandbox, array_id: str) -> dict[str, dict[str, str]]:
    """sacct's record of each task: `12345_3` -> JobIDRaw, State, Start, End."""
    out = sandbox.slurm("sacct", "-n", "-X", "-P", "-j", array_id, "-o", "JobID,JobIDRaw,State,Start,End")
    rows = {}
    for line in out.stdout.splitlines():
        name, raw, state, start, end = line.split("|")
        rows[name] = {"raw": raw, "state": state.split()[0] if state else "", "start": start, "end": end}
    return rows


def wait_array_done(sandbox: Sandbox, array_id: str, names: set[str], timeout_s: float,
                    samples: list[int] | None = None) -> dict[str, dict[str, str]]:
    """Until every named task has ended; `samples` collects how many tasks squeue shows alive."""
    found: dict[str, dict[str, str]] = {}

    def done() -> bool:
        if samples is not None:
            states = sandbox.slurm("squeue", "-h", "-r", "-j", array_id, "-o", "%T", check=False).stdout.split()
            samples.append(sum(1 for state in states if state in ALIVE))
        found.update(array_rows(sandbox, array_id))
        return names <= set(found) and all(found[name]["state"] in TERMINAL for name in names)

    wait_for(done, timeout_s=timeout_s, what=f"tasks {sorted(names)} ended (last {found})", interval_s=0.5)
    return found


def most_at_once(rows: list[dict[str, str]]) -> int:
    """The most tasks running at one moment by Slurm's own Start/End (an end at the second a
    next task starts counts as before it)."""
    events = []
    for row in rows:
        if row["start"] not in ("Unknown", "None", ""):
            events.append((datetime.fromisoformat(row["start"]), 1))
            events.append((datetime.fromisoformat(row["end"]), -1))
    running = peak = 0
    for _moment, step in sorted(events):
        running += step
        peak = max(peak, running)
    return peak


def array_objects(jobs: Jobs, array_id: str) -> list[str]:
    found = []
    for kind in KIND_ORDER:
        path = collection_path(kind, None if kind == "PersistentVolume" else jobs.namespace)
        listing = jobs.kube.request("GET", path, query={
            "labelSelector": f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ARRAY_JOB_ID}={array_id}"})
        found += [f"{kind}/{item['metadata']['name']}" for item in listing.get("items") or []]
    return found


def running_pods(jobs: Jobs, array_id: str) -> list[dict[str, Any]]:
    listing = jobs.kube.request("GET", collection_path("Pod", jobs.namespace),
                                query={"labelSelector": f"{LABEL_ARRAY_JOB_ID}={array_id}"})
    return [pod for pod in listing.get("items") or [] if (pod.get("status") or {}).get("phase") == "Running"]


def test_an_array_of_four_runs_two_at_a_time_each_task_on_its_own(jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbalice")
    text = job_script("--array=0-3%2", env=("SANDBOX_RUN_DURATION=3s",), body=BODY)
    array_id = jobs.sbatch("skbalice", text, f"--output={home}/out/%A_%a.out")
    names = {f"{array_id}_{task}" for task in range(4)}
    # A task still in the array's pending group is found by its own name too.
    status = sandbox.slurm(str(jobs.settings.slurm.skbridge_path), "status", f"{array_id}_3", "--json",
                           "--config", str(sandbox.layout.bridge_config), user="skbalice")
    assert json.loads(status.stdout)["job_id"] == f"{array_id}_3", status.stdout
    samples: list[int] = []
    rows = wait_array_done(sandbox, array_id, names, timeout_s=300, samples=samples)

    assert {rows[name]["state"] for name in names} == {"COMPLETED"}, rows
    # Slurm's % throttle: never more than two tasks at once, by squeue's samples and by accounting.
    assert max(samples) <= 2, samples
    assert most_at_once([rows[name] for name in names]) <= 2, rows
    raw_ids = {rows[name]["raw"] for name in names}
    assert len(raw_ids) == 4 and array_id in raw_ids  # Slurm's last task keeps the array's own id
    for raw in raw_ids:
        jobs.wait_no_objects(raw)  # each task's epilog collects before it tears down
    for task in range(4):
        name = f"{array_id}_{task}"
        raw = rows[name]["raw"]
        line = f"task={task} of=4 array={array_id} job={raw}"
        # Its own output file, named by sbatch's %A_%a, with its own task id.
        assert line in (home / "out" / f"{name}.out").read_text()
        folder = jobs.settings.nas.results_root / "skbalice" / name
        summary = yaml.safe_load((folder / "summary.json").read_text())
        assert (summary["job_id"], summary["array_job_id"], summary["array_task_id"]) == (raw, array_id, str(task))
        assert summary["exit_code"] == 0 and summary["kubernetes_node"] == sandbox.node_name
        assert line in (folder / "pod.log").read_text()
        # Its own Pod, named by the task's own job id and labelled with the array and the task.
        pod = next(doc for doc in yaml.safe_load_all((folder / "manifest.yaml").read_text()) if doc["kind"] == "Pod")
        labels = pod["metadata"]["labels"]
        assert pod["metadata"]["name"] == f"skb-{raw}-r0"
        assert (labels[LABEL_JOB_ID], labels[LABEL_ARRAY_JOB_ID], labels[LABEL_ARRAY_TASK_ID]) == (raw, array_id, str(task))
    assert array_objects(jobs, array_id) == []
    # The user's commands take the task's name as sacct and squeue show it.
    status = sandbox.slurm(str(jobs.settings.slurm.skbridge_path), "status", f"{array_id}_2", "--json",
                           "--config", str(sandbox.layout.bridge_config), user="skbalice")
    shown = json.loads(status.stdout)
    assert (shown["job_id"], shown["state"]) == (f"{array_id}_2", "COMPLETED")
    assert shown["results_dir"] == str(jobs.settings.nas.results_root / "skbalice" / f"{array_id}_2")


def test_cancelling_a_running_array_leaves_no_object(jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbbob")
    text = job_script("--array=0-3%2", env=("SANDBOX_RUN_DURATION=10m",), body=BODY)
    array_id = jobs.sbatch("skbbob", text, f"--output={home}/out/%A_%a-%j.out")
    wait_for(lambda: len(running_pods(jobs, array_id)) == 2, timeout_s=120, what="two tasks' Pods running")
    labels = [pod["metadata"]["labels"] for pod in running_pods(jobs, array_id)]
    raw_ids = {label[LABEL_JOB_ID] for label in labels}
    # A running task by its 12345_3 name: sbatch's %A, %a and %j (the task's own id) resolved.
    task, raw = labels[0][LABEL_ARRAY_TASK_ID], labels[0][LABEL_JOB_ID]
    status = sandbox.slurm(str(jobs.settings.slurm.skbridge_path), "status", f"{array_id}_{task}", "--json",
                           "--config", str(sandbox.layout.bridge_config), user="skbbob")
    shown = json.loads(status.stdout)
    assert (shown["job_id"], shown["state"]) == (f"{array_id}_{task}", "RUNNING")
    assert shown["output"] == f"{home}/out/{array_id}_{task}-{raw}.out"
    assert array_objects(jobs, array_id)
    sandbox.slurm("scancel", array_id)
    rows = wait_array_done(sandbox, array_id, {f"{array_id}_{label[LABEL_ARRAY_TASK_ID]}" for label in labels},
                           timeout_s=120)
    wait_for(lambda: all(row["state"] in TERMINAL for row in array_rows(sandbox, array_id).values()),
             timeout_s=60, what="every task of the array ended")
    assert {row["state"] for row in array_rows(sandbox, array_id).values()} == {"CANCELLED"}, rows
    wait_for(lambda: not array_objects(jobs, array_id), timeout_s=60, what="no object of the array left")
    for raw in raw_ids:
        assert jobs.objects(raw) == []


def test_an_array_over_the_site_maximum_is_refused_at_sbatch(jobs: Jobs, sandbox: Sandbox) -> None:
    maximum = jobs.settings.policy.max_array_tasks
    script = jobs.write_script("skbalice", "too-many.sh", job_script(body=BODY))
    out = sandbox.slurm("sbatch", "--parsable", f"--array=0-{maximum}", str(script), user="skbalice", check=False)
    assert out.returncode != 0 and not out.stdout.strip()
    assert f"at most {maximum} array tasks" in out.stderr
    # At the maximum itself the array is taken (held, so that nothing runs).
    held = sandbox.slurm("sbatch", "--parsable", "--hold", f"--array=0-{maximum - 1}", str(script), user="skbalice")
    jobs.submitted.append(held.stdout.strip())


def test_an_array_over_the_site_maximum_is_refused_in_the_drop_folder(jobs: Jobs) -> None:
    maximum = jobs.settings.policy.max_array_tasks
    name = f"too-many-{os.getpid()}-{time.monotonic_ns()}.sh"
    staged = jobs.write_script("skbalice", name, job_script(f"--array=1-{maximum + 1}%4", body=BODY))
    os.rename(staged, user_submit_dir(jobs.settings.nas, "skbalice") / name)
    error = jobs.settings.nas.failed_dir / f"{name}.error"
    wait_for(error.exists, timeout_s=60, what="the dropped array refused")
    reason = error.read_text()
    assert f"--array=1-{maximum + 1}%4 makes {maximum + 1} tasks" in reason
    assert f"at most {maximum} array tasks" in reason


def test_a_dropped_array_runs_each_task_in_its_own_pod(jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbalice")
    name = f"dropped-array-{os.getpid()}-{time.monotonic_ns()}.sh"
    text = job_script("--array=5,7", f"--output={home}/out/%A_%a.out", env=("SANDBOX_RUN_DURATION=1s",), body=BODY)
    staged = jobs.write_script("skbalice", name, text)
    os.rename(staged, user_submit_dir(jobs.settings.nas, "skbalice") / name)
    accepted = jobs.settings.nas.accepted_dir

    def job_id() -> str | None:
        return next((p.name.split("-", 1)[0] for p in accepted.iterdir() if p.name.endswith(f"-{name}")), None)

    wait_for(lambda: job_id() is not None, timeout_s=60, what="the dropped array accepted")
    array_id = job_id()
    assert array_id is not None
    jobs.submitted.append(array_id)
    names = {f"{array_id}_5", f"{array_id}_7"}
    rows = wait_array_done(sandbox, array_id, names, timeout_s=240)
    assert {rows[n]["state"] for n in names} == {"COMPLETED"}, rows
    for row in rows.values():
        jobs.wait_no_objects(row["raw"])
    assert array_objects(jobs, array_id) == []
    for task in (5, 7):
        assert f"task={task} of=2 array={array_id}" in (home / "out" / f"{array_id}_{task}.out").read_text()
        assert (jobs.settings.nas.results_root / "skbalice" / f"{array_id}_{task}" / "summary.json").is_file()


def test_the_reaper_collects_an_array_task_into_its_own_folder(jobs: Jobs, sandbox: Sandbox) -> None:
    """Objects of an array task whose epilog never ran (held in the parked partition, so alive,
    then cancelled): the reaper finds the task's folder by its objects' array labels."""
    array_id = jobs.sbatch("skbbob", job_script("--array=3", env=("SANDBOX_RUN_DURATION=1s",)), "--partition=parked")
    bob = pwd.getpwnam("skbbob")
    allocation = JobAllocation(
        job_id=array_id, name="left", user="skbbob", uid=bob.pw_uid, gid=bob.pw_gid, groups=(bob.pw_gid,),
        partition="gpu", restart_count=0, time_limit_minutes=10, state="RUNNING", submit_time=0, start_time=0,
        nodes=(NodeAllocation(node=sandbox.node_name, cpus=1, memory_mib=1024),),
        array_job_id=array_id, array_task_id="3")
    spec, problems = parse_job_text(job_script(), jobs.settings.policy, jobs.settings.nas, owner="skbbob")
    assert spec is not None, problems
    jobs.home("skbbob")
    rendered = render_job(jobs.settings, allocation, spec, job_script())
    create_objects(jobs.kube, rendered, jobs.namespace, [],
                   extra=attach_identity(jobs.namespace, allocation, rendered.names.pod))
    assert len(array_objects(jobs, array_id)) >= 4  # the access objects carry the array labels too
    sandbox.slurm("scancel", array_id)
    jobs.wait_done(array_id)
    wait_for(lambda: not array_objects(jobs, array_id), timeout_s=60, what="the reaper removing the leftovers")
    folder = jobs.settings.nas.results_root / "skbbob" / f"{array_id}_3"
    wait_for((folder / "summary.json").exists, timeout_s=30, what="the reaper's summary in the task's folder")
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["collected_by"], summary["job_id"]) == ("reaper", array_id)
    assert not (jobs.settings.nas.results_root / "skbbob" / array_id).exists()
