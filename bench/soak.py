"""Benchmark: soak (not in CI): jobs dropped at a steady rate for a long window while the
sandbox's own watcher (the one that serves the hooks) is sampled: RSS and CPU. What matters
is the slope: memory that grows per job handled is a leak that a lab's months-long uptime
turns into an outage.

The jobs are dropped files of one-second scripts on the sandbox's real node, so each one
goes through the whole path (claim, sbatch as the owner, prolog, Pod, attach, epilog,
results). On a small machine the node cannot run them as fast as they come: the queue then
grows, which the watcher must also take without growing itself.

Reported: RSS and CPU at the start and the end of the window, the least-squares slope of RSS
(MiB per hour and KiB per 1,000 jobs handled), the ratio of the last quarter's mean RSS to
the first quarter's, and how many jobs ended how (lost: accepted files with no job).

    .venv/bin/python bench/soak.py [--jobs 2000] [--minutes 30] [--sample-s 10] [--quick]
                                   [--warmup-jobs 100] [--partition sim]

`--warmup-jobs` first runs that many jobs through and waits for them to end, so that the
window starts on a warm watcher (modules imported, caches and hook threads made) and its
slope is growth per job, not warm-up. `--partition sim` sends the jobs to the sandbox's
simulated nodes (`skbridge sandbox up --sim-nodes M`), whose Pods kwok plays: the watcher
does all of its work for them, and the node is no longer the limit on throughput.
"""

from __future__ import annotations

import argparse
import os
import pwd
import statistics
import time
from pathlib import Path

from _harness import TERMINAL, drop, ensure_users, job_states, job_text, sandbox

from bridge.sandbox.layout import SandboxLayout
from bridge.sandbox.procs import Daemons
from bridge.settings import Settings, load_settings


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) pairs, per hour."""
    if len(samples) < 2:
        return 0.0
    slope, _intercept = statistics.linear_regression([t for t, _ in samples], [v for _, v in samples])
    return slope * 3600


def accepted_job_ids(accepted: Path, prefix: str) -> list[str]:
    return [p.name.split("-", 1)[0] for p in accepted.iterdir() if p.name.split("-", 1)[-1].startswith(prefix)]


def warm_up(settings: Settings, layout: SandboxLayout, owner: pwd.struct_passwd, prefix: str,
            jobs: int, partition: str | None, drain_minutes: float) -> None:
    warm_prefix = f"warm{prefix}"
    for n in range(jobs):
        drop(settings.nas.submit_dir, f"{warm_prefix}{n:05d}.sh",
             job_text(f"warm-{n}", body="sleep 1", partition=partition), owner)
    deadline = time.monotonic() + drain_minutes * 60
    while time.monotonic() < deadline:
        ids = accepted_job_ids(settings.nas.accepted_dir, warm_prefix)
        states = job_states(layout, ids)
        if len(ids) == jobs and len(states) == jobs and all(s in TERMINAL for s in states.values()):
            print(f"soak: warm-up of {jobs} jobs ended", flush=True)
            return
        time.sleep(5)
    raise SystemExit(f"the {jobs} warm-up jobs did not end within {drain_minutes} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--drain-minutes", type=float, default=20.0,
                        help="after the window, how long to wait for the queue to empty")
    parser.add_argument("--warmup-jobs", type=int, default=100,
                        help="jobs run through (and ended) before the window starts")
    parser.add_argument("--partition", default=None, help="Slurm partition of the jobs (default: the sandbox's)")
    parser.add_argument("--quick", action="store_true", help="20 jobs over 1 minute (CI smoke test)")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.minutes, args.sample_s, args.drain_minutes, args.warmup_jobs = 20, 1.0, 5.0, 5.0, 5
    layout: SandboxLayout = sandbox()
    settings = load_settings(layout.bridge_config)
    record = Daemons(layout).running("watcher")
    if record is None:
        raise SystemExit("the sandbox's watcher is not running: skbridge sandbox up")
    pid = record.pid
    owner = ensure_users()[0]
    prefix = f"soak-{int(time.time())}-"
    if args.warmup_jobs:
        warm_up(settings, layout, owner, prefix, args.warmup_jobs, args.partition, args.drain_minutes)
    interval_s = args.minutes * 60 / args.jobs
    samples_rss: list[tuple[float, float]] = []
    samples_cpu: list[tuple[float, float]] = []
    started = time.monotonic()
    cpu_start = cpu_s(pid)
    next_sample = started
    last_cpu, last_t = cpu_start, started
    for n in range(args.jobs):
        due = started + n * interval_s
        while (now := time.monotonic()) < due:
            if now >= next_sample:
                cpu = cpu_s(pid)
                samples_rss.append((now - started, rss_mib(pid)))
                samples_cpu.append((now - started, (cpu - last_cpu) / max(now - last_t, 1e-9) * 100))
                last_cpu, last_t, next_sample = cpu, now, next_sample + args.sample_s
            time.sleep(min(0.05, max(0.0, due - now)))
        drop(settings.nas.submit_dir, f"{prefix}{n:05d}.sh",
             job_text(f"soak-{n}", body="sleep 1", partition=args.partition), owner)
    window_s = time.monotonic() - started
    cpu_window = (cpu_s(pid) - cpu_start) / window_s * 100
    deadline = time.monotonic() + args.drain_minutes * 60
    ids: list[str] = []
    states: dict[str, str] = {}
    while time.monotonic() < deadline:
        ids = accepted_job_ids(settings.nas.accepted_dir, prefix)
        states = job_states(layout, ids)
        if len(ids) == args.jobs and len(states) == len(ids) and all(s in TERMINAL for s in states.values()):
            break
        now = time.monotonic()
        samples_rss.append((now - started, rss_mib(pid)))
        time.sleep(args.sample_s)
    counts: dict[str, int] = {}
    for state in states.values():
        counts[state or "unknown"] = counts.get(state or "unknown", 0) + 1
    quarter = max(1, len(samples_rss) // 4)
    first = statistics.fmean(v for _, v in samples_rss[:quarter])
    last = statistics.fmean(v for _, v in samples_rss[-quarter:])
    slope = slope_per_hour(samples_rss)
    handled = max(1, sum(counts.values()))
    hours = samples_rss[-1][0] / 3600 if samples_rss else 0.0
    print(f"soak: {args.jobs} one-second jobs dropped over {window_s / 60:.1f} min, watcher pid {pid}")
    print(f"  watcher RSS: start {samples_rss[0][1]:.1f} MiB, end {samples_rss[-1][1]:.1f} MiB, "
          f"slope {slope:+.2f} MiB/h ({slope * hours / handled * 1000 * 1024:+.1f} KiB per 1,000 jobs)")
    print(f"  RSS ratio, last quarter's mean / first quarter's: {last / first:.3f}x")
    print(f"  watcher CPU over the drop window: {cpu_window:.1f} % of one core "
          f"(samples p50 {statistics.median(c for _, c in samples_cpu) if samples_cpu else 0:.1f} %)")
    print(f"  jobs: {len(ids)} accepted of {args.jobs} dropped; ended: "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


if __name__ == "__main__":
    main()
