"""Benchmark: `skbridge status`, `jobs` and `nodes` as a lab user with N held jobs in the queue,
against the plain Slurm calls each of them makes (same user, same moment).

The held jobs sit in the sandbox's `parked` partition (down), so they never run. Each
command's Slurm calls are counted with strace (execve of Slurm's binaries) at a small and
at the full queue size: the same count at both sizes means no per-job calls.

    .venv/bin/python bench/user_commands.py [--quick] [--jobs N] [--repeat R]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _harness import JOB_IMAGE, SKBRIDGE, ensure_users, env_of, sandbox, slurm, timed

from bridge.sandbox.layout import SandboxLayout
from bridge.settings import load_settings
from bridge.userview.fields import SEP

USER = "skbalice"
SCRIPT = f"""#!/bin/bash
#SBATCH --job-name=bench-held
#SBATCH --mem=256M
#SBATCH --time=5
#SBATCH --partition=parked
#SBATCH --hold
#SBATCH --output=/dev/null
#K8S_IMAGE={JOB_IMAGE}
true
"""
SLURM_BINARIES = ("squeue", "sacct", "sinfo", "scontrol", "sbatch", "scancel", "sacctmgr")


def as_user(layout: SandboxLayout, argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(["runuser", "-u", USER, "--", *argv], env=env_of(layout), capture_output=True, check=True,
                   cwd="/")
    return time.monotonic() - started


def median_time(layout: SandboxLayout, argvs: list[list[str]], repeat: int) -> float:
    """Median over `repeat` rounds of running every argv once, in sequence."""
    rounds = []
    for _ in range(repeat):
        rounds.append(sum(as_user(layout, argv) for argv in argvs))
    return statistics.median(rounds)


def slurm_calls(layout: SandboxLayout, argv: list[str]) -> dict[str, int]:
    """Slurm commands started by `argv` (strace -f, execve only)."""
    with tempfile.NamedTemporaryFile(prefix="skb-strace-", suffix=".log", delete=False) as handle:
        trace = handle.name
    try:
        subprocess.run(["strace", "-f", "-qq", "-e", "trace=execve", "-o", trace, "runuser", "-u", USER, "--", *argv],
                       env=env_of(layout), capture_output=True, check=True, cwd="/")
        counts: dict[str, int] = {}
        for line in Path(trace).read_text(errors="replace").splitlines():
            if "execve(" not in line or "= 0" not in line:
                continue
            program = line.split('execve("', 1)[1].split('"', 1)[0]
            name = os.path.basename(program)
            if name in SLURM_BINARIES:
                counts[name] = counts.get(name, 0) + 1
        return counts
    finally:
        os.unlink(trace)


def submit_held(layout: SandboxLayout, script: Path, count: int) -> list[str]:
    def one(_index: int) -> str:
        return slurm(layout, "sbatch", "--parsable", str(script), user=USER).strip().split(";")[0]

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, range(count)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100 held jobs, 3 rounds (CI smoke test)")
    parser.add_argument("--jobs", type=int, default=1000, help="held jobs in the queue (default 1000)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds per measurement; the median is reported")
    args = parser.parse_args()
    count, repeat = (100, 3) if args.quick else (args.jobs, args.repeat)
    layout = sandbox()
    ensure_users()
    settings = load_settings(layout.bridge_config)
    workdir = Path(tempfile.mkdtemp(prefix="skb-bench-user-", dir="/var/tmp"))
    workdir.chmod(0o755)
    script = workdir / "held.sh"
    script.write_text(SCRIPT, encoding="utf-8")
    script.chmod(0o644)
    job_ids: list[str] = []
    try:
        job_ids += submit_held(layout, script, 10)
        probe = job_ids[0]
        commands = {
            "status": [SKBRIDGE, "status", probe, "--json"],
            "jobs": [SKBRIDGE, "jobs", "--json"],
            "nodes": [SKBRIDGE, "nodes", "--json"],
        }
        small_calls = {name: slurm_calls(layout, argv) for name, argv in commands.items()}
        started = time.monotonic()
        job_ids += submit_held(layout, script, count - len(job_ids))
        queued = len(slurm(layout, "squeue", "--noheader", "--all", "--format=%i").split())
        print(f"{count} held jobs submitted as {USER} in {time.monotonic() - started:.1f}s; {queued} jobs in the queue")
        large_calls = {name: slurm_calls(layout, argv) for name, argv in commands.items()}

        fmt = lambda fields: ",".join(f"{f}:{SEP}" for f in fields)  # noqa: E731
        from bridge.userview import listing, nodes, queue

        baselines = {
            # What each command runs, with the same arguments.
            "status": [["squeue", "--noheader", "--states=all", f"--jobs={probe}", f"--Format={fmt(queue._SQUEUE_FIELDS)}"],
                       ["squeue", "--noheader", "--states=PENDING", "--sort=-p,i", "--format=%i", "--partition=parked"]],
            "jobs": [["sacct", "--noheader", "--parsable2", f"--delimiter={SEP}", "--allocations",
                      "--starttime=now-1days", "--format=" + ",".join(listing._FIELDS), f"--user={USER}"],
                     ["squeue", "--noheader", f"--Format={fmt(listing._QUEUE_FIELDS)}", f"--user={USER}"]],
            "nodes": [["sinfo", "--Node", "--noheader", f"--Format={fmt(nodes._FIELDS)}"]],
        }
        from bridge.userview.status import job_status

        in_process = {
            # The command's own work without Python start-up (same calls, run here as root).
            "status": lambda: job_status(settings, probe),
            "jobs": lambda: listing.list_jobs(settings.slurm, user=USER, since="now-1days"),
            "nodes": lambda: nodes.slurm_nodes(settings),
        }
        bin_dir = settings.slurm.bin_dir
        print(f"{'command':<8} {'skbridge':>10} {'in-process':>11} {'plain Slurm calls':>18} {'ratio':>7} "
              f"{'in-process ratio':>17}   Slurm calls at 10 / {count} jobs")
        for name, argv in commands.items():
            ours = median_time(layout, [argv], repeat)
            inner = statistics.median(timed(in_process[name]) for _ in range(repeat))
            base = median_time(layout, [[str(bin_dir / a[0]), *a[1:]] for a in baselines[name]], repeat)
            calls = f"{sum(small_calls[name].values())} / {sum(large_calls[name].values())} ({large_calls[name]})"
            print(f"{name:<8} {ours * 1000:>8.0f}ms {inner * 1000:>9.0f}ms {base * 1000:>16.0f}ms {ours / base:>6.1f}x "
                  f"{inner / base:>16.1f}x   {calls}")
        python_start = median_time(layout, [[SKBRIDGE, "init", "--help"]], repeat)
        print(f"(Python start-up + CLI imports alone, `skbridge init --help`: {python_start * 1000:.0f}ms)")
        print(f"ratio = skbridge command / the plain Slurm calls it makes, median of {repeat} rounds")
    finally:
        for start in range(0, len(job_ids), 500):
            subprocess.run(["scancel", *job_ids[start:start + 500]], env=env_of(layout), capture_output=True, check=False)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
