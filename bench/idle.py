"""Benchmark 5: the watcher's idle cost with a large archive: CPU and RSS over a window with
100,000 files in accepted/, and the submit/ scan time per cycle against an empty archive.

    .venv/bin/python bench/idle.py [--quick] [--archive N] [--window S]
"""

from __future__ import annotations

import argparse
import os
import time

from _harness import PrivateWatcher, sandbox

from bridge.ingest.detect import SubmitScanner


def cpu_s(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()  # noqa: SIM115
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):  # noqa: SIM115
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def scan_ms(watcher: PrivateWatcher, cycles: int) -> float:
    scanner = SubmitScanner(watcher.settings.nas.submit_dir, settle_s=0.5)
    started = time.perf_counter()
    for _ in range(cycles):
        scanner.scan()
    return (time.perf_counter() - started) / cycles * 1000


def idle_run(layout, archive: int, window_s: float) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    watcher = PrivateWatcher(layout)
    accepted = watcher.settings.nas.accepted_dir
    for index in range(archive):
        (accepted / f"{100000 + index}-old{index}.sh").write_bytes(b"#!/bin/bash\n")
    try:
        watcher.start()
        assert watcher.proc is not None
        time.sleep(2)  # past start-up
        cpu_before = cpu_s(watcher.proc.pid)
        time.sleep(window_s)
        cpu = (cpu_s(watcher.proc.pid) - cpu_before) / window_s * 100
        return cpu, rss_mib(watcher.proc.pid), scan_ms(watcher, 200)
    finally:
        watcher.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5,000 files, 5 s window (CI smoke test)")
    parser.add_argument("--archive", type=int, default=100_000)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    archive, window = (5000, 5.0) if args.quick else (args.archive, args.window)
    layout = sandbox()
    empty_cpu, empty_rss, empty_scan = idle_run(layout, 0, window)
    full_cpu, full_rss, full_scan = idle_run(layout, archive, window)
    print(f"idle watcher over {window:.0f} s (poll interval of the sandbox config)")
    print(f"  empty archive      : CPU {empty_cpu:5.2f} %, RSS {empty_rss:6.1f} MiB, scan {empty_scan:6.3f} ms/cycle")
    print(f"  {archive:>6} in accepted/: CPU {full_cpu:5.2f} %, RSS {full_rss:6.1f} MiB, scan {full_scan:6.3f} ms/cycle")
    print(f"  ratio scan full/empty: {full_scan / empty_scan:.2f}x   (target: ~1x; CPU < 1 %, RSS < 100 MB)")


if __name__ == "__main__":
    main()
