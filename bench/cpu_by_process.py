"""Where the CPU goes while a command runs: CPU seconds per process name, short-lived ones included.

Samples /proc every 20 ms and keeps each process's last CPU reading (a process that lives
less than one sample is missed; the total from /proc/stat shows how much that is).

    .venv/bin/python bench/cpu_by_process.py .venv/bin/python bench/end_to_end.py --jobs 60
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _busy_cpu_s() -> float:
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    return (sum(values) - values[3] - values[4]) * TICK_S  # all but idle and iowait


def _processes() -> dict[tuple[str, str], tuple[str, float]]:
    """(pid, start time) -> (name, CPU seconds so far)."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            name = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        found[(pid, fields[19])] = (name, (int(fields[11]) + int(fields[12])) * TICK_S)
    return found


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    before = _processes()
    last: dict[tuple[str, str], tuple[str, float]] = {}
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            last.update(_processes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    busy_start, wall_start = _busy_cpu_s(), time.monotonic()
    sampler.start()
    subprocess.run(sys.argv[1:], check=False)
    done.set()
    sampler.join()
    busy, wall = _busy_cpu_s() - busy_start, time.monotonic() - wall_start
    per_name: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for key, (name, cpu_s) in last.items():
        used = cpu_s - before[key][1] if key in before else cpu_s
        per_name[name][0] += 1 if key not in before else 0
        per_name[name][1] += used
    print(f"\nwall {wall:.1f} s, CPU busy {busy:.1f} s (of {wall * (os.cpu_count() or 1):.1f} s available)")
    print("  CPU s   new procs  name")
    for name, (count, cpu_s) in sorted(per_name.items(), key=lambda item: -item[1][1])[:20]:
        print(f"  {cpu_s:6.2f}  {int(count):9d}  {name}")
    accounted = sum(cpu_s for _count, cpu_s in per_name.values())
    print(f"  {busy - accounted:6.2f}  {'':9}  (processes too short to sample, and the kernel)")


if __name__ == "__main__":
    main()
