"""Issue 16, job history and batch submission, as real lab users against the real sandbox: the
history (fed by the service, the watcher's hooks and Slurm) tells a job's life through the API;
batches and templates submit one job per file or parameter set, each checked on its own."""

from __future__ import annotations

import os
import pwd
import sqlite3
import time
import uuid
from typing import Any

from bridge.ingest.layout import ensure_user_folder, user_submit_dir
from bridge.settings import load_settings
from tests.conftest import wait_for
from tests.jobs.conftest import TERMINAL, Jobs, job_script
from tests.service.conftest import Service
from tests.service.test_api import submit


def history_row(jobs: Jobs, job_id: str) -> dict[str, Any] | None:
    """The history's own row, read from its SQLite file (what the service lists from)."""
    path = load_settings(jobs.sandbox.layout.bridge_config).history.path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    return dict(row) if row else None


def listed(api: Any, job_id: str, **params: Any) -> dict[str, Any] | None:
    answer = api.get("/api/v1/jobs", params={"limit": 50, **params})
    assert answer.status_code == 200, answer.text
    assert answer.json()["source"] == "history"
    return next((row for row in answer.json()["jobs"] if row["job_id"] == job_id), None)


def test_the_history_tells_a_jobs_life_and_only_to_its_owner(service: Service, jobs: Jobs) -> None:
    job_id = submit(service, jobs, "skbalice", job_script(env=("SANDBOX_RUN_DURATION=4",)), name="life.sh")
    seen: list[str] = []
    final: dict[str, Any] = {}
    with service.client("skbalice") as alice:

        def finished() -> bool:
            row = listed(alice, job_id)
            assert row is not None, "the job submitted through the API is missing from the list"
            if not seen or seen[-1] != row["state"]:
                seen.append(row["state"])
            final.update(row)
            return row["state"] in TERMINAL

        wait_for(finished, timeout_s=120, what="the job to finish in the listing", interval_s=0.5)
        assert "RUNNING" in seen and seen[-1] == "COMPLETED", seen
        assert final["exit_code"] == "0:0" and final["user"] == "skbalice" and final["name"] == "life.sh"
        assert final["node"] == jobs.sandbox.node_name and final["elapsed_s"] is not None
        assert listed(alice, job_id, state="CD") is not None and listed(alice, job_id, state="R") is None

        def timeline() -> list[str]:
            return [event["event"] for event in alice.get(f"/api/v1/jobs/{job_id}").json()["timeline"]]

        wait_for(lambda: "collected" in timeline(), timeout_s=60, what="the epilog's 'collected' in the timeline")
        status = alice.get(f"/api/v1/jobs/{job_id}").json()
    events = [event["event"] for event in status["timeline"]]
    assert events == ["submitted", "allocated", "pod ready", "ended", "collected"], status["timeline"]
    assert status["timeline"][0]["detail"] == "api" and status["timeline"][2]["detail"] == f"skb-{job_id}-r0"
    row = history_row(jobs, job_id)
    assert row is not None
    assert (row["uid"], row["state"], row["exit_code"], row["node"]) == (1501, "COMPLETED", 0, jobs.sandbox.node_name)
    assert row["results_dir"].endswith(f"/results/skbalice/{job_id}")
    assert row["submit_time"] <= row["start_time"] <= row["end_time"]

    with service.client("skbbob") as bob:
        assert bob.get(f"/api/v1/jobs/{job_id}").status_code == 404
        assert listed(bob, job_id, limit=10000) is None
        assert bob.get("/api/v1/jobs", params={"user": "skbalice"}).status_code == 403


def test_a_failing_job_is_listed_failed_with_its_exit_code_and_pages_by_cursor(service: Service, jobs: Jobs) -> None:
    first = submit(service, jobs, "skbbob", job_script(env=("SANDBOX_EXIT_CODE=3",)))
    second = submit(service, jobs, "skbbob", job_script())
    assert jobs.wait_done(first)[0] == "FAILED" and jobs.wait_done(second)[0] == "COMPLETED"
    with service.client("skbbob") as bob:
        wait_for(lambda: (listed(bob, first) or {}).get("state") == "FAILED", timeout_s=30, what="FAILED in the list")
        assert listed(bob, first)["exit_code"] == "3:0"  # type: ignore[index]
        page = bob.get("/api/v1/jobs", params={"limit": 1}).json()
        assert page["jobs"][0]["job_id"] == second and page["next_cursor"] == second
        after = bob.get("/api/v1/jobs", params={"limit": 1, "cursor": page["next_cursor"]}).json()
        assert after["jobs"][0]["job_id"] == first


BAD = "#!/bin/bash\n#SBATCH --nodes=9\necho nine nodes: over policy.max_nodes\n"


def test_a_batch_submits_each_valid_file_and_says_why_the_others_were_refused(service: Service, jobs: Jobs) -> None:
    jobs.home("skbalice")
    files = [{"script": job_script(body="echo one"), "name": "one.sh"}, {"script": BAD, "name": "bad.sh"},
             {"script": job_script(body="echo three"), "name": "three.sh"}]
    with service.client("skbalice") as alice:
        answer = alice.post("/api/v1/jobs/batch", json={"jobs": files})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    jobs.submitted += [r["job_id"] for r in body["results"] if r["accepted"]]
    assert (body["accepted"], body["rejected"]) == (2, 1)
    assert [r["accepted"] for r in body["results"]] == [True, False, True]
    refused = body["results"][1]
    assert refused["name"] == "bad.sh" and refused["status"] == 422 and "node" in refused["reason"], refused
    assert refused["problems"] and "job_id" not in refused
    for result in (body["results"][0], body["results"][2]):
        assert jobs.wait_done(result["job_id"]) == ("COMPLETED", "0:0")
        owner = jobs.sandbox.slurm("sacct", "-X", "--noheader", "-j", result["job_id"], "-o", "User%30").stdout
        assert owner.strip() == "skbalice", owner  # submitted as the caller, not as the service
        assert (history_row(jobs, result["job_id"]) or {}).get("uid") == 1501


def test_a_template_makes_one_job_per_parameter_set(service: Service, jobs: Jobs) -> None:
    jobs.home("skbbob")
    tag = uuid.uuid4().hex[:6]
    template = job_script(body='echo "word={{ word }} n={{ index }}"')
    sets = [{"word": f"alpha{tag}"}, {"word": f"beta{tag}"}, {"word": f"gamma{tag}"}]
    with service.client("skbbob") as bob:
        answer = bob.post("/api/v1/jobs/template", json={"script": template, "name": "tpl-{{ word }}.sh",
                                                         "parameters": sets})
        assert answer.status_code == 200, answer.text
        results = answer.json()["results"]
        jobs.submitted += [r["job_id"] for r in results if r.get("job_id")]
        assert [r["accepted"] for r in results] == [True, True, True]
        assert [r["name"] for r in results] == [f"tpl-alpha{tag}.sh", f"tpl-beta{tag}.sh", f"tpl-gamma{tag}.sh"]
        for number, (result, values) in enumerate(zip(results, sets, strict=True), start=1):
            assert jobs.wait_done(result["job_id"]) == ("COMPLETED", "0:0")
            wait_for(lambda r=result: bob.get(f"/api/v1/jobs/{r['job_id']}/logs").text.strip() != "", timeout_s=30,
                     what="the job's output")
            assert bob.get(f"/api/v1/jobs/{result['job_id']}/logs").text.strip().endswith(
                f"word={values['word']} n={number}")


def test_a_template_value_with_a_line_break_is_refused_and_nothing_submitted(service: Service, jobs: Jobs) -> None:
    jobs.home("skbalice")
    tag = uuid.uuid4().hex[:6]
    template = job_script("--job-name={{ name }}", body="echo {{ name }}")
    with service.client("skbalice") as alice:
        answer = alice.post("/api/v1/jobs/template", json={"script": template, "parameters": [
            {"name": f"fine{tag}"}, {"name": f"evil{tag}\n#SBATCH --partition=parked"}]})
        time.sleep(2.5)  # past history.live_refresh_s: a job sbatch had made would be listed now
        names = {row["name"] for row in alice.get("/api/v1/jobs", params={"limit": 200}).json()["jobs"]}
        missing = alice.post("/api/v1/jobs/template", json={"script": template, "parameters": [{"other": "x"}]})
    assert answer.status_code == 422, answer.text
    problem = answer.json()["detail"]["problems"][0]
    assert (problem["index"], problem["code"]) == (2, "value-breaks-lines"), problem
    assert not any(tag in name for name in names), names  # not even the valid first set was submitted
    assert missing.status_code == 422 and "undefined" in missing.text


def test_the_drop_folder_and_plain_sbatch_feed_the_history_too(service: Service, jobs: Jobs) -> None:
    settings = jobs.settings
    alice = pwd.getpwnam("skbalice")
    ensure_user_folder(settings.nas, alice)
    tag = uuid.uuid4().hex[:8]
    for name, text in ((f"good-{tag}.sh", job_script(body="echo dropped")), (f"bad-{tag}.sh", BAD)):
        staged = user_submit_dir(settings.nas, "skbalice") / f".{name}.part"
        staged.write_text(text)
        os.chown(staged, alice.pw_uid, alice.pw_gid)
        staged.rename(staged.with_name(name))  # the sandbox's own watcher takes it
    plain = jobs.sbatch("skbalice", job_script(body="echo plain"))

    def accepted() -> str | None:
        found = [p.name for p in settings.nas.accepted_dir.iterdir() if p.name.endswith(f"-good-{tag}.sh")]
        return found[0].split("-")[0] if found else None

    wait_for(lambda: accepted() is not None, timeout_s=60, what="the dropped file accepted")
    dropped = accepted()
    assert dropped is not None
    jobs.submitted.append(dropped)
    wait_for((settings.nas.failed_dir / f"bad-{tag}.sh.error").is_file, timeout_s=60, what="the bad file rejected")
    for job_id in (dropped, plain):
        assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    with service.client("skbalice") as api:
        for job_id in (dropped, plain):
            wait_for(lambda j=job_id: (listed(api, j) or {}).get("state") == "COMPLETED", timeout_s=30,
                     what=f"job {job_id} COMPLETED in the list")
            wait_for(lambda j=job_id: "collected" in str(api.get(f"/api/v1/jobs/{j}").json()["timeline"]),
                     timeout_s=60, what="the timeline's 'collected'")
        dropped_events = api.get(f"/api/v1/jobs/{dropped}").json()["timeline"]
        plain_events = [event["event"] for event in api.get(f"/api/v1/jobs/{plain}").json()["timeline"]]
    assert [(e["event"], e["detail"]) for e in dropped_events[:2]] == [("submitted", "drop folder"), (
        "file accepted", dropped_events[1]["detail"])], dropped_events
    assert dropped_events[1]["detail"].endswith(f"{dropped}-good-{tag}.sh")
    # A plain sbatch's job: the hooks (or the listing's squeue) tell its story from its allocation on.
    assert plain_events[-3:] == ["pod ready", "ended", "collected"], plain_events
    path = load_settings(jobs.sandbox.layout.bridge_config).history.path
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        notes = db.execute("SELECT uid, detail FROM events WHERE job_id IS NULL AND event = 'file rejected' "
                           "AND detail LIKE ?", (f"bad-{tag}.sh%",)).fetchall()
    assert len(notes) == 1 and notes[0][0] == alice.pw_uid, notes
