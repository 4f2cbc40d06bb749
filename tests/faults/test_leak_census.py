"""Issue 14: jobs ending every way in one run leave nothing behind, and the epilogs did it.

Each ending (completed, failed, cancelled while pending, cancelled while running, timed out,
out of memory, rejected by the bridge) is run `SKBRIDGE_CENSUS_PER_ENDING` times (2 here; the
issue's 500-job census is `SKBRIDGE_CENSUS_PER_ENDING=72`). Afterwards no object of any of
them exists in any kind, `sacct` says how each ended, every job that reached the prolog has
its results folder, and the reaper had nothing to do for them: its log names none of them.
A node failure is not among them: powering a node off ends every job on it, so it has a test
of its own (tests/faults/test_node_failure.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from bridge.sandbox.images import JOB_IMAGE
from tests.conftest import wait_for
from tests.faults.conftest import log_events
from tests.jobs.conftest import Jobs, job_script

PER_ENDING = int(os.environ.get("SKBRIDGE_CENSUS_PER_ENDING", "2"))
OOM_BODY = "python3 -c 'x = b\"m\" * (768 * 1024 * 1024); print(len(x))'"


@dataclass
class Ending:
    name: str
    submit: Callable[[Jobs], str]
    states: frozenset[str]
    reaches_prolog: bool = True


def _plain(body: str, *sbatch: str, image: str = JOB_IMAGE) -> Callable[[Jobs], str]:
    def submit(jobs: Jobs) -> str:
        text = job_script(*sbatch, body=body)
        if "--mem=256M" in sbatch:
            text = text.replace("#SBATCH --mem=1G\n", "")
        if image != JOB_IMAGE:
            text = text.replace(JOB_IMAGE, image)
        return jobs.sbatch("skbalice", text)
    return submit


def _cancelled_pending(jobs: Jobs) -> str:
    job_id = jobs.sbatch("skbalice", job_script(body="echo never"), "--hold")
    jobs.sandbox.slurm("scancel", job_id)
    return job_id


def _cancelled_running(jobs: Jobs) -> str:
    job_id = jobs.sbatch("skbalice", job_script(body="echo started; sleep 300"))
    # A requeued attempt (Kubernetes had no room yet) is started again after Slurm's delay.
    jobs.wait_running(job_id, timeout_s=420)
    jobs.sandbox.slurm("scancel", job_id)
    return job_id


ENDINGS = [
    Ending("completed", _plain("echo fine"), frozenset({"COMPLETED"})),
    Ending("failed", _plain("echo failing; exit 3"), frozenset({"FAILED"})),
    Ending("cancelled pending", _cancelled_pending, frozenset({"CANCELLED"}), reaches_prolog=False),
    Ending("cancelled running", _cancelled_running, frozenset({"CANCELLED"})),
    Ending("timed out", _plain("sleep 600", "--time=1"), frozenset({"TIMEOUT"})),
    Ending("out of memory", _plain(OOM_BODY, "--mem=256M"), frozenset({"FAILED", "OUT_OF_MEMORY"})),
    Ending("rejected", _plain("echo never", image="evil.example.com/miner:1"), frozenset({"FAILED"})),
]


def _job_ids(log_text: str, component: str, event: str) -> set[str]:
    return {str(entry.get("job_id")) for entry in log_events(log_text, component, event)}


# The census grows with PER_ENDING (72 runs ~500 jobs, about half an hour on 2 CPUs).
@pytest.mark.timeout(max(900, PER_ENDING * 60))
def test_jobs_ending_every_way_leave_nothing(jobs: Jobs) -> None:
    watcher_log = jobs.sandbox.layout.log_dir / "watcher.log"
    log_start = watcher_log.stat().st_size
    hooks_start = len(jobs.hook_log())
    submitted: dict[str, Ending] = {}
    for _ in range(PER_ENDING):
        for ending in ENDINGS:
            submitted[ending.submit(jobs)] = ending

    for job_id, ending in submitted.items():
        state, _code = jobs.wait_done(job_id, timeout_s=400)
        assert state in ending.states, f"job {job_id} ({ending.name}) ended {state}"

    leftovers: dict[str, list[str]] = {}

    def all_gone() -> bool:
        leftovers.clear()
        leftovers.update({job_id: found for job_id in submitted if (found := jobs.objects(job_id))})
        return not leftovers

    wait_for(all_gone, timeout_s=180, what=f"no object of {len(submitted)} ended jobs (left: {leftovers})", interval_s=2)

    for job_id, ending in submitted.items():
        folder = jobs.results("skbalice", job_id)
        if ending.reaches_prolog:
            assert (folder / "bridge-status.json").is_file(), f"job {job_id} ({ending.name}) has no status"
        if ending.name in ("completed", "failed", "cancelled running", "timed out", "out of memory"):
            wait_for((folder / "summary.json").is_file, timeout_s=60, what=f"summary of {job_id} ({ending.name})")
            summary = json.loads((folder / "summary.json").read_text())
            assert str(summary.get("job_id")) == job_id

    # The reaper's account agrees with the epilogs': it removed objects only of jobs whose epilog
    # did not (slurmctld kills an EpilogSlurmctld caught in a scancel race, for one); their
    # results were collected all the same (the summaries checked above).
    watcher_text = watcher_log.read_text(errors="replace")[log_start:]
    reaped = _job_ids(watcher_text, "reaper", "reaped") & set(submitted)
    removed_by_epilog = _job_ids(jobs.hook_log()[hooks_start:], "epilog", "removed") & set(submitted)
    assert not reaped & removed_by_epilog, f"reaped although their epilog removed everything: {reaped & removed_by_epilog}"
    assert len(reaped) <= len(submitted) // 4, f"the reaper, not the epilogs, cleaned up most jobs: {sorted(reaped)}"
