"""Issue 17: the REST API takes an array task's id (`12345_3`) where it takes a job id."""

from __future__ import annotations

from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script
from tests.jobs.test_arrays import BODY, array_rows
from tests.service.conftest import Service


def test_an_array_task_by_its_array_name(service: Service, jobs: Jobs, sandbox: Sandbox) -> None:
    home = jobs.home("skbalice")
    array_id = jobs.sbatch("skbalice", job_script("--array=0-1", env=("SANDBOX_RUN_DURATION=1s",), body=BODY),
                           f"--output={home}/out/%A_%a.out")
    task = f"{array_id}_1"
    wait_for(lambda: array_rows(sandbox, array_id).get(task, {}).get("state") == "COMPLETED", timeout_s=180,
             what=f"task {task} completed")
    raw = array_rows(sandbox, array_id)[task]["raw"]
    jobs.wait_no_objects(raw)  # collected by its epilog
    # squeue says COMPLETING until the epilog has ended, and the API's live state may be
    # history.live_refresh_s old: the final word comes within seconds.
    wait_for(lambda: not jobs.completing(raw), timeout_s=60, what=f"task {task}'s epilog done")
    with service.client("skbalice") as alice:
        wait_for(lambda: alice.get(f"/api/v1/jobs/{task}").json().get("state") == "COMPLETED", timeout_s=30,
                 what=f"the API's word on {task}")
        job = alice.get(f"/api/v1/jobs/{task}")
        assert job.status_code == 200, job.text
        assert (job.json()["job_id"], job.json()["state"]) == (task, "COMPLETED")
        assert job.json()["results_dir"] == str(jobs.settings.nas.results_root / "skbalice" / task)
        logs = alice.get(f"/api/v1/jobs/{task}/logs")
        assert logs.status_code == 200 and f"task=1 of=2 array={array_id} job={raw}" in logs.text
        results = alice.get(f"/api/v1/jobs/{task}/results")
        assert results.status_code == 200 and "summary.json" in results.text
        assert alice.get(f"/api/v1/jobs/{array_id}_1_2").status_code in (400, 404, 422)
    with service.client("skbbob") as bob:
        assert bob.get(f"/api/v1/jobs/{task}").status_code in (403, 404)
