"""Benchmark: `GET /api/v1/jobs` of `skbridge serve` as a lab user with N held jobs queued,
against the plain `sacct` + `squeue` calls the endpoint makes (same user, same moment), and
the same endpoint under concurrent callers (slurmrestd is reported to stall after ~125).

The held jobs sit in the sandbox's `parked` partition (down), so they never run; they are
scancelled at the end. The service authenticates with a bearer token got for a MUNGE
credential, as a client that polls would.

    .venv/bin/python bench/service.py [--quick] [--jobs N] [--requests R] [--concurrency C]
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

from bridge.settings import load_settings
from bridge.userview import listing
from bridge.userview.fields import SEP


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
    parser.add_argument("--quick", action="store_true", help="20 held jobs, 30 requests (CI smoke test)")
    parser.add_argument("--jobs", type=int, default=1000, help="held jobs queued for the user (default 1000)")
    parser.add_argument("--requests", type=int, default=200, help="sequential requests measured (default 200)")
    parser.add_argument("--concurrency", type=int, default=16, help="callers at once in the concurrent round")
    args = parser.parse_args()
    count, requests, concurrency = (20, 30, 4) if args.quick else (args.jobs, args.requests, args.concurrency)
    layout = sandbox()
    ensure_users()
    settings = load_settings(layout.bridge_config)
    env = {**env_of(layout), "SKBRIDGE_CONFIG": str(layout.bridge_config)}
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-service-", dir="/var/tmp"))
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
        fmt = ",".join(f"{f}:{SEP}" for f in listing._QUEUE_FIELDS)
        bin_dir = settings.slurm.bin_dir
        plain = [[str(bin_dir / "sacct"), "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations",
                  f"--starttime={since}", "--format=" + ",".join(listing._FIELDS), f"--user={USER}"],
                 [str(bin_dir / "squeue"), "--noheader", f"--Format={fmt}", f"--user={USER}"]]
        headers = {"Authorization": f"Bearer {token_for(url, USER)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=60) as api:
            first = api.get("/api/v1/jobs", params={"limit": 100})
            first.raise_for_status()
            total = first.json()["total"]
            api_times, plain_times = [], []
            for _ in range(requests):
                at = time.monotonic()
                answer = api.get("/api/v1/jobs", params={"limit": 100})
                api_times.append(time.monotonic() - at)
                assert answer.status_code == 200, answer.text
                at = time.monotonic()
                for argv in plain:
                    subprocess.run(argv, env=env, capture_output=True, check=True)
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

        print(f"GET /api/v1/jobs ({total} jobs of {USER} in the answer's window, page of 100):")
        print(f"  API, sequential:        {summarize(api_times)}")
        print(f"  plain sacct + squeue:   {summarize(plain_times)}")
        print(f"  API, {burst} requests by {concurrency} callers at once: {summarize([t for _, t in results])}, "
              f"{burst / wall:.1f} req/s, {failed} failed")
        print(f"ratio p99 API / plain Slurm calls: {percentile(api_times, 0.99) / percentile(plain_times, 0.99):.2f}  "
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
