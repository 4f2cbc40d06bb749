"""Benchmark: 50 concurrent live log streams of `skbridge serve` against the watcher's pickup latency.

A real job of `skbalice` on the sandbox's node prints one line every 100 ms for ~60 s; 50 clients
open `GET /api/v1/jobs/{id}/logs/stream` (Server-Sent Events, bearer token got for her MUNGE
credential) on it at once. Meanwhile a private watcher's drop-folder pickup latency (file renamed
into submit/ -> `sbatch` returned, inotify hint, one file at a time, as `pickup_latency.py`) is
measured, and the same measurement with no stream open, in the same run, before the job (and
again after the streams ended). Every stream must receive every line, in order, and the end event.

The benchmark's service is its own `skbridge serve` on a free loopback port; the picked-up jobs
go to the `parked` partition (down) and are scancelled at the end.

    .venv/bin/python bench/log_streams.py [--quick] [--streams S] [--lines L] [--files N]
"""

from __future__ import annotations

import argparse
import os
import pwd
import random
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from _harness import PrivateWatcher, drop, ensure_users, env_of, job_text, percentile, sandbox, slurm, summarize, wait_all_ended
from service import start_service, token_for

from bridge.sandbox.images import JOB_IMAGE
from bridge.sandbox.layout import SandboxLayout
from bridge.settings import load_settings

USER = "skbalice"


@dataclass
class Stream:
    """One SSE client: the lines it got, when, and how the stream ended."""

    lines: list[str] = field(default_factory=list)
    first_at: float | None = None
    ended_at: float | None = None
    end: str | None = None
    error: str | None = None


def follow(url: str, token: str, job_id: str, stream: Stream, opened: threading.Barrier) -> None:
    try:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"},
                          timeout=httpx.Timeout(30, read=120)) as client:
            opened.wait(timeout=60)
            with client.stream("GET", f"/api/v1/jobs/{job_id}/logs/stream") as answer:
                if answer.status_code != 200:
                    stream.error = f"HTTP {answer.status_code}"
                    return
                event, data = None, []
                for line in answer.iter_lines():
                    if line.startswith("event: "):
                        event = line[7:]
                    elif line.startswith("data: "):
                        data.append(line[6:])
                    elif line == "" and (event or data):
                        if event == "end":
                            stream.end, stream.ended_at = "\n".join(data), time.monotonic()
                            return
                        stream.lines.append("\n".join(data))
                        stream.first_at = stream.first_at or time.monotonic()
                        event, data = None, []
    except (httpx.HTTPError, threading.BrokenBarrierError) as exc:
        stream.error = repr(exc)


def pickup_round(watcher: PrivateWatcher, users: list[pwd.struct_passwd], tag: str, count: int) -> list[float]:
    """Drop `count` files one at a time; each one's latency from its rename to the watcher's `accepted`."""
    submit = watcher.settings.nas.submit_dir
    rng = random.Random(7)
    dropped: dict[str, float] = {}
    for index in range(count):
        name = f"{tag}{index:04d}.sh"
        dropped[name] = drop(submit, name, job_text(name), users[index % len(users)])
        deadline = time.monotonic() + 30
        while not any(event.get("file") == name for event in watcher.events("accepted")):
            if time.monotonic() > deadline:
                raise SystemExit(f"file {name} not accepted; see {watcher.log_path}")
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 0.5))  # arrivals at random points of the poll cycle
    latencies = []
    for event in watcher.events("accepted"):
        if event.get("file") in dropped:
            when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            latencies.append(when - dropped[event["file"]])
    return latencies


def submit_printer(layout: SandboxLayout, home: Path, lines: int) -> str:
    """A real job of USER that prints `line 1` .. `line N`, one every 100 ms."""
    account = pwd.getpwnam(USER)
    for folder in (home, home / "out"):
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, account.pw_uid, account.pw_gid)
    script = home / "bench-log-streams.sh"
    script.write_text("\n".join(["#!/bin/bash", "#SBATCH --job-name=bench-log-streams", "#SBATCH --mem=512M",
                                 "#SBATCH --cpus-per-task=1", "#SBATCH --time=10", f"#K8S_IMAGE={JOB_IMAGE}",
                                 f"for i in $(seq 1 {lines}); do echo \"line $i\"; sleep 0.1; done", ""]),
                      encoding="utf-8")
    os.chown(script, account.pw_uid, account.pw_gid)
    out = slurm(layout, "sbatch", "--parsable", f"--output={home}/out/%j.out", f"--chdir={home}", str(script),
                user=USER)
    return out.strip().split(";")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 streams, 100 lines, 5 files per round (CI smoke test)")
    parser.add_argument("--streams", type=int, default=50)
    parser.add_argument("--lines", type=int, default=600, help="lines the job prints, one per 100 ms (600: ~60 s)")
    parser.add_argument("--files", type=int, default=30, help="files dropped per pickup round")
    args = parser.parse_args()
    streams_n, lines_n, files_n = (5, 100, 5) if args.quick else (args.streams, args.lines, args.files)
    layout = sandbox()
    users = ensure_users()
    settings = load_settings(layout.bridge_config)
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-streams-", dir="/var/tmp"))
    workdir.chmod(0o755)
    env = {**env_of(layout), "SKBRIDGE_CONFIG": str(layout.bridge_config),
           "SKBRIDGE_HISTORY__PATH": str(workdir / "history.sqlite")}
    watcher = PrivateWatcher(layout, overrides={"SKBRIDGE_INGEST__USE_INOTIFY": "true",
                                                "SKBRIDGE_INGEST__POLL_INTERVAL_S": "2.0"})
    home = settings.nas.home_root / USER
    job_id = ""
    proc, url = start_service(env, workdir / "serve.log")
    try:
        watcher.start()
        idle = pickup_round(watcher, users, "idle", files_n)
        token = token_for(url, USER)
        job_id = submit_printer(layout, home, lines_n)
        streams = [Stream() for _ in range(streams_n)]
        opened = threading.Barrier(streams_n)
        threads = [threading.Thread(target=follow, args=(url, token, job_id, stream, opened), daemon=True)
                   for stream in streams]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 180
        while not all(stream.first_at or stream.error for stream in streams):  # the job runs, every stream flows
            if time.monotonic() > deadline:
                raise SystemExit(f"job {job_id}: not every stream got a line within 180 s")
            time.sleep(0.1)
        loaded_from = time.monotonic()
        loaded = pickup_round(watcher, users, "busy", files_n)
        loaded_to = time.monotonic()
        for thread in threads:
            thread.join(timeout=lines_n * 0.1 + 300)
        after = pickup_round(watcher, users, "after", files_n)
        wait_all_ended(layout, [job_id], 120)
        expected = [f"line {i}" for i in range(1, lines_n + 1)]
        complete = sum(stream.lines == expected and stream.end is not None for stream in streams)
        open_throughout = sum(stream.ended_at is not None and stream.ended_at > loaded_to for stream in streams)
        failed = [stream.error for stream in streams if stream.error]
        print(f"{streams_n} concurrent SSE log streams on job {job_id} ({lines_n} lines, one per 100 ms) "
              f"vs the watcher's pickup latency (inotify hint, renamed in, one file at a time)")
        print(f"  pickup, no stream open (before): {summarize(idle)}")
        print(f"  pickup, {streams_n} streams open     : {summarize(loaded)}  "
              f"(round {loaded_to - loaded_from:.1f} s; streams still open at its end: {open_throughout}/{streams_n})")
        print(f"  pickup, no stream open (after) : {summarize(after)}")
        print(f"  streams with every line in order and the end event: {complete}/{streams_n}; "
              f"failed {len(failed)} {failed[:3] if failed else ''}")
        print(f"ratio streams/idle: p50 {percentile(loaded, 0.5) / percentile(idle, 0.5):.2f}x, "
              f"p99 {percentile(loaded, 0.99) / percentile(idle, 0.99):.2f}x")
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        picked = [str(event["job_id"]) for event in watcher.events("accepted") if event.get("job_id")]
        watcher.cleanup()
        if picked:  # only this run's parked jobs: other users of the sandbox may park jobs too
            slurm(layout, "scancel", *picked, check=False)
        if job_id:
            slurm(layout, "scancel", job_id, check=False)
            for leftover in (home / "out" / f"{job_id}.out", home / "bench-log-streams.sh"):
                leftover.unlink(missing_ok=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
