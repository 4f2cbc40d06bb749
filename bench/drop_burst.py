"""Benchmark 1: 1,000 job files dropped at once until all are queued in Slurm, against a bare
`sbatch` loop over the same files (each run as the file's owner, to the parked partition).

    .venv/bin/python bench/drop_burst.py [--quick] [--files N]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

from _harness import PrivateWatcher, drop, ensure_users, job_text, sandbox, slurm, squeue_jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="50 files (CI smoke test)")
    parser.add_argument("--files", type=int, default=1000)
    args = parser.parse_args()
    count = 50 if args.quick else args.files
    layout = sandbox()
    users = ensure_users()
    slurm(layout, "scancel", "--partition=parked", check=False)

    # Baseline: what a user does without the bridge, one sbatch per file.
    watcher = PrivateWatcher(layout)
    files = []
    for index in range(count):
        owner = users[index % len(users)]
        path = watcher.root / f"base{index:04d}.sh"
        path.write_text(job_text(f"base{index}"))
        path.chmod(0o644)
        files.append((path, owner))
    started = time.monotonic()
    for path, owner in files:
        slurm(layout, "sbatch", "--parsable", "--partition=parked", "--output=/dev/null", str(path), user=owner.pw_name)
    baseline_s = time.monotonic() - started
    slurm(layout, "scancel", "--partition=parked", check=False)

    # The bridge: the same files dropped into submit/ at once, until all are queued.
    watcher.start()
    submit = watcher.settings.nas.submit_dir
    texts = [(f"burst{index:04d}.sh", job_text(f"burst{index}"), users[index % len(users)]) for index in range(count)]
    started = time.monotonic()
    for name, text, owner in texts:
        drop(submit, name, text, owner)
    accepted = watcher.settings.nas.accepted_dir
    failed = watcher.settings.nas.failed_dir
    deadline = time.monotonic() + max(300, count)
    while time.monotonic() < deadline:
        done = sum(1 for _ in accepted.iterdir()) + sum(1 for p in failed.iterdir() if not p.name.endswith(".error"))
        if done >= count:
            break
        time.sleep(0.05)
    bridge_s = time.monotonic() - started
    tags = Counter(str(job.get("comment")) for job in squeue_jobs(layout)
                   if job.get("partition") == "parked" and job.get("job_state") == "PENDING"
                   and str(job.get("comment", "")).startswith("skb:"))
    queued = sum(1 for _ in accepted.iterdir())
    lost = count - queued - sum(1 for p in failed.iterdir() if not p.name.endswith(".error"))
    duplicates = sum(n - 1 for n in tags.values() if n > 1)
    watcher.cleanup()
    slurm(layout, "scancel", "--partition=parked", check=False)

    print(f"drop burst: {count} files")
    print(f"  bare sbatch loop : {baseline_s:7.2f} s  ({count / baseline_s:6.1f} files/s)")
    print(f"  bridge (watcher) : {bridge_s:7.2f} s  ({count / bridge_s:6.1f} files/s)")
    print(f"  ratio bridge/baseline: {bridge_s / baseline_s:.2f}x   (target <= 1.0x)")
    print(f"  queued {queued}, lost {lost}, duplicates {duplicates}, Slurm jobs by tag {len(tags)}")


if __name__ == "__main__":
    main()
