"""Benchmark: `GET /api/v1/jobs` of `skbridge serve` as a lab user, answered from the job
history filled with H finished jobs of that user (10,000 by default) plus N held jobs queued in
Slurm that the service merges in live; against the old Slurm-backed path measured in the same
run, interleaved (`bridge.userview.listing.list_jobs`: sacct + squeue, what the endpoint did
before the history), and the same endpoint under concurrent callers (slurmrestd is reported to
stall after ~125).

The benchmark's service has a history file of its own (the sandbox's is left alone). The held
jobs sit in the sandbox's `parked` partition (down), so they never run; they are scancelled at
the end. The service authenticates with a bearer token got for a MUNGE credential, as a client
that polls would.

    .venv/bin/python bench/service.py [--quick] [--history H] [--jobs N] [--requests R] [--concurrency C]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from _harness import SKBRIDGE, ensure_users, env_of, percentile, sandbox, slurm, summarize
from user_commands import SCRIPT, USER, submit_held

from bridge.history.store import JobHistory, Update
from bridge.settings import load_settings
from bridge.userview import listing


def fill_history(path: Path, count: int, uid: int, user: str) -> None:
    """`count` finished jobs of `user` over the last 6 days, each with its timeline, ids far above
    Slurm's own (they never clash with a real job)."""
    now = time.time()
    history = JobHistory(path)
    states = ("COMPLETED", "COMPLETED", "COMPLETED", "FAILED", "CANCELLED")
    updates = []
    for number in range(count):
        submit = now - 6 * 86400 + number * (6 * 86400 / count)
        state = states[number % len(states)]
        job_id = str(90_000_000 + number)
        values = {"uid": uid, "user": user, "name": f"train-{number}.sh", "partition": "gpu", "gpus": 1, "node": "vm",
                  "submit_time": submit, "start_time": submit + 5, "end_time": submit + 65,
                  "exit_code": 0 if state == "COMPLETED" else 1, "signal": 0,
                  "results_dir": f"/nas/results/{user}/{job_id}"}
        updates.append(Update(job_id, state="PENDING", event="submitted", detail="api", at=submit, values=values))
        updates.append(Update(job_id, state="RUNNING", event="allocated", at=submit + 5))
        updates.append(Update(job_id, state=state, event="ended", at=submit + 65))
    for start in range(0, len(updates), 3000):
        history.record_many(updates[start:start + 3000])
    history.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_service(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with open(log, "wb") as handle:
        proc = subprocess.Popen([SKBRIDGE, "serve", "--port", str(port)], env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.terminate()
    raise SystemExit(f"skbridge serve did not start: {log.read_text(errors='replace')[-2000:]}")


def token_for(url: str, user: str) -> str:
    credential = subprocess.run(["runuser", "-u", user, "--", "munge", "-n"], capture_output=True, text=True,
                                check=True).stdout.strip()
    answer = httpx.post(f"{url}/api/v1/token", headers={"Authorization": f"MUNGE {credential}"}, timeout=30)
    answer.raise_for_status()
    token: str = answer.json()["token"]
    return token


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 jobs in history, 20 held, 30 requests (CI smoke test)")
    parser.add_argument("--history", type=int, default=10000, help="finished jobs of the user in the history (10,000)")
    parser.add_argument("--jobs", type=int, default=100, help="held jobs queued for the user (default 100)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests measured (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="callers at once in the concurrent round")
    args = parser.parse_args()
    count, requests, concurrency = (20, 30, 4) if args.quick else (args.jobs, args.requests, args.concurrency)
    in_history = 1000 if args.quick else args.history
    layout = sandbox()
    accounts = {account.pw_name: account for account in ensure_users()}
    settings = load_settings(layout.bridge_config)
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-service-", dir="/var/tmp"))
    history_path = workdir / "history.sqlite"
    env = {**env_of(layout), "SKBRIDGE_CONFIG": str(layout.bridge_config), "SKBRIDGE_HISTORY__PATH": str(history_path)}
    started = time.monotonic()
    fill_history(history_path, in_history, accounts[USER].pw_uid, USER)
    print(f"{in_history} finished jobs of {USER} written to the benchmark's history in {time.monotonic() - started:.1f}s")
    workdir.chmod(0o755)
    script = workdir / "held.sh"
    script.write_text(SCRIPT, encoding="utf-8")
    script.chmod(0o644)
    job_ids: list[str] = []
    proc, url = start_service(env, workdir / "serve.log")
    try:
        started = time.monotonic()
        job_ids = submit_held(layout, script, count)
        print(f"{count} held jobs submitted as {USER} in {time.monotonic() - started:.1f}s")
        since = settings.service.default_since

        def old_path() -> list[dict[str, object]]:
            """What GET /api/v1/jobs did before the history: sacct + squeue, newest first, a page of 100."""
            rows = listing.list_jobs(settings.slurm, user=USER, since=since)
            rows.reverse()
            return [row.as_json() for row in rows[:100]]

        headers = {"Authorization": f"Bearer {token_for(url, USER)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
            first = api.get("/api/v1/jobs", params={"limit": 100})
            first.raise_for_status()
            total = first.json()["total"]
            slurm_total = len(listing.list_jobs(settings.slurm, user=USER, since=since))
            api_times, plain_times = [], []
            for _ in range(requests):
                at = time.monotonic()
                answer = api.get("/api/v1/jobs", params={"limit": 100})
                api_times.append(time.monotonic() - at)
                assert answer.status_code == 200, answer.text
                at = time.monotonic()
                old_path()
                plain_times.append(time.monotonic() - at)

        def one(_index: int) -> tuple[int, float]:
            at = time.monotonic()
            with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
                code = client.get("/api/v1/jobs", params={"limit": 100}).status_code
            return code, time.monotonic() - at

        burst = max(requests, 150)
        at = time.monotonic()
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            results = list(pool.map(one, range(burst)))
        wall = time.monotonic() - at
        failed = sum(code != 200 for code, _ in results)

        print(f"GET /api/v1/jobs ({total} jobs of {USER} in the history's window, page of 100; "
              f"the old path's Slurm has {slurm_total}):")
        print(f"  API from the history, sequential:   {summarize(api_times)}")
        print(f"  old path (sacct + squeue, in-process, no HTTP): {summarize(plain_times)}")
        print(f"  API, {burst} requests by {concurrency} callers at once: {summarize([t for _, t in results])}, "
              f"{burst / wall:.1f} req/s, {failed} failed")
        print(f"ratio p99 API / old Slurm-backed path: {percentile(api_times, 0.99) / percentile(plain_times, 0.99):.2f}  "
              f"(p50 {percentile(api_times, 0.5) / percentile(plain_times, 0.5):.2f})")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        for start in range(0, len(job_ids), 500):
            slurm(layout, "scancel", *job_ids[start:start + 500], check=False)
        for item in workdir.iterdir():
            os.unlink(item)
        workdir.rmdir()


if __name__ == "__main__":
    main()
