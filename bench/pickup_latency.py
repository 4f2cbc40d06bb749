"""Benchmark 2: file complete -> `sbatch` returned, p50/p99, polling only versus polling plus the
inotify hint, for files renamed into submit/ (rsync, cp-then-mv) and files written in place
(`cp job.sh submit/`). One file at a time, so each latency is the watcher's own.

    .venv/bin/python bench/pickup_latency.py [--quick] [--files N]
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime

from _harness import PrivateWatcher, drop, ensure_users, job_text, sandbox, slurm, summarize, write_in_place


def measure(layout, users, count: int, *, inotify: bool, in_place: bool = False) -> list[float]:  # type: ignore[no-untyped-def]
    watcher = PrivateWatcher(layout, overrides={"SKBRIDGE_INGEST__USE_INOTIFY": str(inotify).lower(),
                                                "SKBRIDGE_INGEST__POLL_INTERVAL_S": "2.0"})
    watcher.start()
    submit = watcher.settings.nas.submit_dir
    dropped: dict[str, float] = {}
    rng = random.Random(7)
    try:
        for index in range(count):
            name = f"lat{index:04d}.sh"
            put = write_in_place if in_place else drop
            dropped[name] = put(submit, name, job_text(name), users[index % len(users)])
            deadline = time.monotonic() + 30
            while not watcher.events("accepted") or len(watcher.events("accepted")) <= index:
                if time.monotonic() > deadline:
                    raise SystemExit(f"file {name} not accepted; see {watcher.log_path}")
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))  # arrivals at random points of the poll cycle
        latencies = []
        for event in watcher.events("accepted"):
            when = datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00")).timestamp()
            latencies.append(when - dropped[event["file"]])
        return latencies
    finally:
        watcher.cleanup()
        slurm(layout, "scancel", "--partition=parked", check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 files per mode (CI smoke test)")
    parser.add_argument("--files", type=int, default=30)
    args = parser.parse_args()
    count = 5 if args.quick else args.files
    layout = sandbox()
    users = ensure_users()
    polling = measure(layout, users, count, inotify=False)
    hinted = measure(layout, users, count, inotify=True)
    in_place = measure(layout, users, count, inotify=True, in_place=True)
    print("pickup latency: file complete -> sbatch returned (poll interval 2.0 s, settle 2.0 s)")
    print(f"  polling only, renamed in   : {summarize(polling)}")
    print(f"  inotify hint, renamed in   : {summarize(hinted)}")
    print(f"  inotify hint, written in place: {summarize(in_place)}   (target p50 <= 200 ms, p99 <= 1000 ms)")
    p50 = sorted(in_place)[len(in_place) // 2] / sorted(polling)[len(polling) // 2]
    print(f"  ratio hint/polling p50: {p50:.2f}x")


if __name__ == "__main__":
    main()
