"""Issue 16, must-holds of the service's first slice, as two real lab users against the real
sandbox: submit, progress, a live log stream, results with checksums, cancel; another user's
job answers 404; no, bad, replayed or expired credentials answer 401."""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
import uuid

import httpx

from tests.conftest import wait_for
from tests.jobs.conftest import TERMINAL, Jobs, job_script
from tests.service.conftest import Service, munge_credential, start_service, stop_service


def submit(service: Service, jobs: Jobs, user: str, script: str, name: str = "api-job.sh") -> str:
    jobs.home(user)  # the user's NAS folder: the job's working directory and output
    with service.client(user) as api:
        answer = api.post("/api/v1/jobs", json={"script": script, "name": name})
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["job_id"]
    jobs.submitted.append(job_id)  # scancelled at the end whatever happens
    return job_id


def test_nothing_answers_without_a_valid_identity(service: Service) -> None:
    with service.client() as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
        for path in ("/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/nodes", "/api/v1/whoami"):
            assert anonymous.get(path).status_code == 401, path
        assert anonymous.post("/api/v1/jobs", json={"script": "#!/bin/bash\n"}).status_code == 401
        for header in ("MUNGE garbage", "MUNGE MUNGE:AAAA:", "Bearer garbage.garbage", "Basic c2tiYWxpY2U6eA==", "MUNGE"):
            answer = anonymous.get("/api/v1/jobs", headers={"Authorization": header})
            assert answer.status_code == 401, (header, answer.text)
        # A token is only ever given for a MUNGE credential.
        assert anonymous.post("/api/v1/token", headers={"Authorization": "Bearer x.y"}).status_code == 401
    with service.client("skbalice") as alice:
        me = alice.get("/api/v1/whoami").json()
    assert (me["user"], me["uid"], me["admin"]) == ("skbalice", 1501, False)


def test_a_replayed_munge_credential_is_refused(service: Service) -> None:
    credential = munge_credential("skbalice")
    with service.client() as api:
        first = api.get("/api/v1/whoami", headers={"Authorization": f"MUNGE {credential}"})
        again = api.get("/api/v1/whoami", headers={"Authorization": f"MUNGE {credential}"})
        for_token = api.post("/api/v1/token", headers={"Authorization": f"MUNGE {credential}"})
    assert first.status_code == 200 and first.json()["user"] == "skbalice"
    assert again.status_code == 401 and "Replayed" in again.json()["detail"], again.text
    assert for_token.status_code == 401


def test_an_expired_token_answers_401(service: Service) -> None:
    token = service.token("skbbob")  # the fixture's service gives tokens 3 s
    with service.client() as api:
        fresh = api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
        assert fresh.status_code == 200 and fresh.json()["user"] == "skbbob"
        time.sleep(3.5)
        stale = api.get("/api/v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert stale.status_code == 401 and "expired" in stale.json()["detail"]


def test_submit_progress_live_log_and_results_as_alice_and_bob_sees_nothing(service: Service, jobs: Jobs) -> None:
    tag = uuid.uuid4().hex[:8]
    body = "\n".join([
        f"mkdir -p /workspace/out-{tag}",
        "for i in 1 2 3 4 5 6; do echo \"epoch $i/6 loss=0.$i\"; sleep 1; done",
        f"python3 -c 'print(sum(range(10)))' > /workspace/out-{tag}/result.txt",
        "echo all done",
    ])
    job_id = submit(service, jobs, "skbalice", job_script(body=body, results=f"/workspace/out-{tag}"), name=f"api-{tag}.sh")

    lines: list[str] = []
    live: list[str] = []  # lines seen while Slurm still had the job running
    progress: dict[str, object] = {}
    end: dict[str, str] = {}
    with service.client("skbalice", timeout_s=120) as alice, alice.stream("GET", f"/api/v1/jobs/{job_id}/logs/stream") as events:
        assert events.status_code == 200 and events.headers["content-type"].startswith("text/event-stream")
        event = None
        for raw in events.iter_lines():
            if raw.startswith("event: "):
                event = raw.removeprefix("event: ")
            elif raw.startswith("data: ") and event == "end":
                end = json.loads(raw.removeprefix("data: "))
            elif raw.startswith("data: "):
                line = raw.removeprefix("data: ")
                lines.append(line)
                if line.startswith("epoch 2/6") and jobs.sacct(job_id)[0] not in TERMINAL:
                    live.append(line)
                    status = alice.get(f"/api/v1/jobs/{job_id}").json()
                    assert status["state"] == "RUNNING", status
                    progress = status["progress"] or {}
            elif raw == "":
                event = None if event != "end" else event
            if end:
                break
    epochs = [line.split()[1] for line in lines if line.startswith("epoch ")]
    assert epochs == ["1/6", "2/6", "3/6", "4/6", "5/6", "6/6"], lines
    assert live, "no output line arrived while the job was still running"
    assert end == {"state": "COMPLETED"}, (end, lines)
    assert "all done" in lines
    # Progress with an ETA in the job's status, from the job's own output.
    assert progress.get("source", "").startswith("epoch ") and 0 < float(progress["percent"]) < 100, progress  # type: ignore[arg-type]
    assert progress.get("eta_s") is not None

    with service.client("skbalice") as alice:
        status = alice.get(f"/api/v1/jobs/{job_id}").json()
        assert status["state"] == "COMPLETED" and status["exit_code"] == 0
        assert [event["event"] for event in status["timeline"]][:2] == ["submitted", "allocated"]
        assert alice.get(f"/api/v1/jobs/{job_id}/logs", params={"tail": 1}).text == "all done\n"
        listed = {row["job_id"]: row for row in alice.get("/api/v1/jobs", params={"limit": 10000}).json()["jobs"]}
        assert listed[job_id]["user"] == "skbalice"

        def results_ready() -> bool:
            listing = alice.get(f"/api/v1/jobs/{job_id}/results").json()
            return any(item["path"] == "results/result.txt" and item["sha256"] for item in listing["files"])

        wait_for(results_ready, timeout_s=60, what="results with SHA256SUMS")
        files = {item["path"]: item for item in alice.get(f"/api/v1/jobs/{job_id}/results").json()["files"]}
        download = alice.get(f"/api/v1/jobs/{job_id}/results/results/result.txt")
        assert download.status_code == 200 and download.content == b"45\n"
        assert hashlib.sha256(download.content).hexdigest() == files["results/result.txt"]["sha256"]
        pod_log = alice.get(f"/api/v1/jobs/{job_id}/results/pod.log")
        assert hashlib.sha256(pod_log.content).hexdigest() == files["pod.log"]["sha256"]

    # Bob: the job does not exist for him, whatever he asks.
    with service.client("skbbob") as bob:
        for path in ("", "/logs", "/logs/stream", "/results", "/results/results/result.txt"):
            answer = bob.get(f"/api/v1/jobs/{job_id}{path}")
            assert answer.status_code == 404, (path, answer.status_code, answer.text)
        assert bob.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
        assert job_id not in {row["job_id"] for row in bob.get("/api/v1/jobs", params={"limit": 10000}).json()["jobs"]}
        assert bob.get("/api/v1/jobs/999999999").status_code == 404  # the same answer as for no job at all


def test_result_downloads_never_follow_links_out_of_the_folder(service: Service, jobs: Jobs) -> None:
    job_id = submit(service, jobs, "skbalice", job_script(body="echo short"))
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    folder = jobs.results("skbalice", job_id)
    wait_for((folder / "SHA256SUMS").is_file, timeout_s=60, what="the epilog's SHA256SUMS")
    # Alice plants links in her own results folder, to a root-only file and to a folder outside.
    for target, name in (("/etc/shadow", "leak"), ("/etc", "etc-dir"), ("../../skbbob", "bob")):
        subprocess.run(["runuser", "-u", "skbalice", "--", "ln", "-s", target, str(folder / name)], check=True)
    with service.client("skbalice") as alice:
        for path in ("leak", "etc-dir/shadow", "etc-dir/hostname", "bob", "%2E%2E/%2E%2E/%2E%2E/etc/shadow",
                     "..%2F..%2F..%2Fetc%2Fshadow", ".credential"):
            answer = alice.get(f"/api/v1/jobs/{job_id}/results/{path}")
            assert answer.status_code == 404, (path, answer.status_code, answer.text[:200])
            assert b"root:" not in answer.content
        assert alice.get(f"/api/v1/jobs/{job_id}/results/pod.log").content == b"short\n"
        names = {item["path"] for item in alice.get(f"/api/v1/jobs/{job_id}/results").json()["files"]}
    assert not names & {"leak", "etc-dir", "bob"}


def test_cancel_as_the_owner_only(service: Service, jobs: Jobs) -> None:
    job_id = submit(service, jobs, "skbbob", job_script(env=("SANDBOX_RUN_DURATION=300",)))
    jobs.wait_state(job_id, {"RUNNING"}, timeout_s=90)
    with service.client("skbalice") as alice:
        assert alice.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 404
    assert jobs.sacct(job_id)[0] == "RUNNING"
    # More open log streams than the server has worker threads (40) do not starve other requests.
    with contextlib.ExitStack() as streams:
        for _ in range(45):
            client = streams.enter_context(service.client("skbbob", timeout_s=60))
            opened = streams.enter_context(client.stream("GET", f"/api/v1/jobs/{job_id}/logs/stream"))
            assert opened.status_code == 200
        started = time.monotonic()
        with service.client("skbbob") as bob:
            assert bob.get(f"/api/v1/jobs/{job_id}").json()["state"] == "RUNNING"
        assert time.monotonic() - started < 10
    with service.client("skbbob") as bob:
        answer = bob.post(f"/api/v1/jobs/{job_id}/cancel")
        assert answer.status_code == 200 and answer.json()["cancelled"] is True, answer.text
        assert jobs.wait_state(job_id, {"CANCELLED"}, timeout_s=60) == "CANCELLED"
        wait_for(lambda: bob.get(f"/api/v1/jobs/{job_id}").json()["state"] == "CANCELLED", timeout_s=60,
                 what="the API to show the job cancelled")  # COMPLETING while its epilog runs
        again = bob.post(f"/api/v1/jobs/{job_id}/cancel")
        assert again.status_code == 200 and again.json()["cancelled"] is False


def test_an_invalid_job_file_gets_the_validators_problems(service: Service, jobs: Jobs) -> None:
    jobs.home("skbalice")
    with service.client("skbalice") as alice:
        answer = alice.post("/api/v1/jobs", json={"script": "#!/bin/bash\n#SBATCH --nodes=9\necho no image\n"})
        filters = alice.get("/api/v1/jobs", params={"state": "CD", "limit": 2, "offset": 1}).json()
        bad_since = alice.get("/api/v1/jobs", params={"since": "--allusers"})
    assert answer.status_code == 422
    codes = {problem["code"] for problem in answer.json()["detail"]["problems"]}
    assert codes, answer.text
    assert filters["limit"] == 2 and filters["offset"] == 1 and len(filters["jobs"]) <= 2
    assert all(row["state"] == "COMPLETED" and row["user"] == "skbalice" for row in filters["jobs"])
    assert bad_since.status_code == 422


def test_the_admin_group_sees_every_users_jobs(sandbox: object, jobs: Jobs, tmp_path: object) -> None:
    from pathlib import Path

    admin = start_service(jobs.sandbox, Path(str(tmp_path)), admin_group="skbbob")
    try:
        with admin.client("skbbob") as bob:
            me = bob.get("/api/v1/whoami").json()
            users = {row["user"] for row in bob.get("/api/v1/jobs", params={"since": "now-30days", "limit": 10000})
                     .json()["jobs"]}
        assert me["admin"] is True
        assert "skbalice" in users, users
        with httpx.Client(base_url=admin.url) as anonymous:
            metrics = anonymous.get("/metrics").text
        assert 'skbridge_api_requests_total{method="GET",route="/api/v1/jobs",status="200"}' in metrics
        assert "skbridge_api_request_seconds_bucket" in metrics
    finally:
        stop_service(admin)


def test_the_sandbox_runs_the_service_on_loopback(sandbox: object, users: object) -> None:
    from bridge.sandbox.layout import SandboxLayout
    from bridge.settings import load_settings

    # `skbridge sandbox up` (the session's sandbox fixture) starts it with the bridge config's service section.
    settings = load_settings(SandboxLayout.default().bridge_config)
    assert settings.service.bind_host == "127.0.0.1"
    url = f"http://127.0.0.1:{settings.service.port}"
    assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
    assert httpx.get(f"{url}/api/v1/jobs", timeout=10).status_code == 401
    credential = munge_credential("skbbob")
    me = httpx.get(f"{url}/api/v1/whoami", headers={"Authorization": f"MUNGE {credential}"}, timeout=10).json()
    assert me["user"] == "skbbob"
