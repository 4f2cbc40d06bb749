"""The sandbox's watcher exports what it did at /metrics: a valid and an invalid file dropped,
the valid one run as a job in a real Pod, and the counters and histograms scraped before and
after moved with the right labels.

The watcher is shared with whatever else runs against the sandbox, so the checks are on
increases of at least what this test caused, never on absolute values; a watcher restarted
meanwhile (another session's change) starts again from zero, which the baseline follows.
"""

from __future__ import annotations

import os
import pwd
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from bridge.ingest.layout import ensure_user_folder, user_submit_dir
from tests.conftest import wait_for
from tests.jobs.conftest import Jobs, job_script

LONG = "SANDBOX_RUN_DURATION=10m"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(jobs: Jobs, wait_s: float = 90) -> Samples:
    """The watcher's samples; waits out a restart of the watcher (it reads its config at start)."""
    metrics = jobs.settings.metrics
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{metrics.listen_address}:{metrics.port}/metrics", timeout=10) as answer:
                text = answer.read().decode("utf-8")
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def increase(before: Samples, after: Samples, name: str, **labels: str) -> float:
    started = ("process_start_time_seconds", frozenset())
    baseline = value(before, name, **labels) if before.get(started) == after.get(started) else 0.0
    return value(after, name, **labels) - baseline


def test_the_watcher_counts_drops_rejections_and_the_jobs_hooks(jobs: Jobs) -> None:
    alice = pwd.getpwnam("skbalice")
    ensure_user_folder(jobs.settings.nas, alice)
    before = scrape(jobs)
    tag = f"{os.getpid()}-{time.monotonic_ns()}"
    good, bad = f"metrics-ok-{tag}.sh", f"metrics-bad-{tag}.sh"
    staged_good = jobs.write_script("skbalice", good, job_script(body="echo counted"))
    staged_bad = jobs.write_script("skbalice", bad, "#!/bin/bash\n#SBATCH --mem=1G\n#K8S_IMAGE=evil.example.com/miner:1\n"
                                   "echo never\n")
    folder = user_submit_dir(jobs.settings.nas, "skbalice")
    os.rename(staged_good, folder / good)
    os.rename(staged_bad, folder / bad)

    accepted = jobs.settings.nas.accepted_dir

    def job_id() -> str | None:
        return next((p.name.split("-", 1)[0] for p in accepted.iterdir() if p.name.endswith(f"-{good}")), None)

    wait_for(lambda: job_id() is not None, timeout_s=60, what="the valid file accepted")
    found = job_id()
    assert found is not None
    jobs.submitted.append(found)
    wait_for((jobs.settings.nas.failed_dir / f"{bad}.error").exists, timeout_s=60, what="the invalid file refused")
    assert jobs.wait_done(found, timeout_s=180) == ("COMPLETED", "0:0")

    # The epilog runs after Slurm records the end: wait until it has been counted.
    def epilog_counted() -> bool:
        return increase(before, scrape(jobs), "skbridge_epilog_outcomes_total", outcome="clean") >= 1

    wait_for(epilog_counted, timeout_s=120, what="the job's epilog counted", interval_s=0.5)
    after = scrape(jobs)

    def grew(name: str, by: float = 1, **labels: str) -> bool:
        return increase(before, after, name, **labels) >= by

    assert grew("skbridge_drop_files_seen_total", 2)
    assert grew("skbridge_drop_files_accepted_total")
    assert grew("skbridge_drop_files_rejected_total", reason="image"), "refused for its image's registry"
    assert grew("skbridge_sbatch_seconds_count", result="ok")
    assert grew("skbridge_drop_pickup_seconds_count")
    pickup_s = increase(before, after, "skbridge_drop_pickup_seconds_sum")
    assert 0 < pickup_s < 120
    # The prolog of this job, served by the watcher: outcome, total time and every stage observed.
    assert grew("skbridge_prolog_outcomes_total", outcome="ready")
    assert grew("skbridge_prolog_seconds_count")
    for stage in ("python_startup", "slurm_script", "slurm_allocation", "validate", "render", "kube_create",
                  "kube_wait_ready"):
        assert grew("skbridge_prolog_stage_seconds_count", stage=stage), stage
    assert grew("skbridge_hook_requests_total", hook="prolog", exit_code="0")
    assert grew("skbridge_hook_requests_total", hook="epilog", exit_code="0")
    assert grew("skbridge_epilog_seconds_count") and grew("skbridge_teardown_seconds_count")
    # Gauges: the loop is alive, nothing of ours is left pending, no hook is running for us now.
    assert time.time() - value(after, "skbridge_watcher_heartbeat_timestamp_seconds") < 30
    assert ("skbridge_journal_pending_entries", frozenset()) in after
    assert ("skbridge_hook_requests_in_flight", frozenset({("hook", "prolog")})) in after
    # Labels come from closed sets: no user name and no file name anywhere in the exposition.
    assert not [key for key in after if any("skbalice" in v or tag in v for _, v in key[1])]


def test_a_requeue_is_counted_with_its_cause(jobs: Jobs, gpu_blocker: str) -> None:
    """Kubernetes has no room for the Pod (a foreign Pod holds the GPUs): the prolog requeues the job."""
    before = scrape(jobs)
    job_id = jobs.sbatch("skbalice", job_script("--gres=gpu:a100:1", env=(LONG,)))
    wait_for(lambda: int(jobs.squeue_job(job_id).get("restart_cnt", 0)) >= 1, timeout_s=90,
             what="Slurm requeued the job")
    after = scrape(jobs)
    assert increase(before, after, "skbridge_prolog_requeues_total", cause="pod_not_ready") >= 1
    assert increase(before, after, "skbridge_prolog_outcomes_total", outcome="requeued") >= 1
    assert increase(before, after, "skbridge_hook_requests_total", hook="prolog", exit_code="1") >= 1
