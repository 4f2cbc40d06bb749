"""Benchmark 4: N one-second jobs end to end (drop -> Slurm -> Pod -> epilog -> results) versus
the same N jobs as plain Slurm jobs without the bridge (`sbatch --wrap "sleep 1"`).

Both batches have the same resources (1 CPU, 512 MiB) on the same sandbox node; the figure
is the makespan from the first submission to the last job ended (and, for the bridge, its
results folder complete).

    .venv/bin/python bench/end_to_end.py [--quick] [--jobs N]
"""

from __future__ import annotations

import argparse
import time

from _harness import drop, ensure_users, job_text, sandbox, slurm, wait_all_ended

from bridge.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 jobs (CI smoke test)")
    parser.add_argument("--jobs", type=int, default=200)
    args = parser.parse_args()
    count = 8 if args.quick else args.jobs
    layout = sandbox()
    settings = load_settings(layout.bridge_config)
    users = ensure_users()

    # Baseline: plain Slurm jobs on the bare host. Every lab user's job takes the bridge's one
    # road (a --wrap job runs in a Pod with the default image), so root submits these: root's
    # own jobs stay on the host (bridge.jobfile.routing).
    started = time.monotonic()
    plain = [slurm(layout, "sbatch", "--parsable", "--cpus-per-task=1", "--mem=512M", "--output=/dev/null",
                   "--chdir=/tmp", "--wrap", "sleep 1").strip()
             for _ in range(count)]
    baseline_s = wait_all_ended(layout, plain, 600) - started

    # The bridge: the sandbox's own watcher picks the files up from its submit/ folder.
    stamp = time.strftime("%H%M%S")
    names = [f"e2e-{stamp}-{i:04d}.sh" for i in range(count)]
    started = time.monotonic()
    for i, name in enumerate(names):
        drop(settings.nas.submit_dir, name, job_text(name, env=("SANDBOX_RUN_DURATION=1s",)), users[i % len(users)])
    job_ids: dict[str, str] = {}
    deadline = time.monotonic() + 600
    while len(job_ids) < count and time.monotonic() < deadline:
        for path in settings.nas.accepted_dir.iterdir():
            job_id, _, name = path.name.partition("-")
            if name in names:
                job_ids[name] = job_id
        time.sleep(0.1)
    ended = wait_all_ended(layout, list(job_ids.values()), 1200)
    owners = {name: users[i % len(users)].pw_name for i, name in enumerate(names)}
    while time.monotonic() < deadline and not all(
            (settings.nas.results_root / owners[name] / job_id / "SHA256SUMS").exists() for name, job_id in job_ids.items()):
        time.sleep(0.1)
    bridge_s = max(ended, time.monotonic()) - started
    states = slurm(layout, "sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(job_ids.values())).split()
    print(f"end to end: {count} one-second jobs")
    print(f"  plain Slurm jobs        : {baseline_s:7.2f} s")
    print(f"  through the bridge      : {bridge_s:7.2f} s  (drop -> results; {states.count('COMPLETED')} COMPLETED)")
    print(f"  ratio bridge/baseline   : {bridge_s / baseline_s:.2f}x   (target <= 1.3x)")


if __name__ == "__main__":
    main()
