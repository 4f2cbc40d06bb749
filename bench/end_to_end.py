"""Benchmark 4: N one-second jobs end to end (drop -> Slurm -> Pod -> epilog -> results) versus
the same N jobs as plain Slurm jobs without the bridge (`sbatch --wrap "sleep 1"`), and, on a
real node, a second baseline: the container runtime's own floor, the same script as a Slurm job
that runs it in a container of the job image with the node's containerd (`ctr run --rm`), so
Slurm schedules it with the very concurrency the other two get.

Every batch has the same resources (1 CPU, 512 MiB) on the same sandbox node; the figure is the
makespan from the first submission to the last job ended (and, for the bridge, its results
folder complete). The runtime floor's containers live in a ctr namespace of their own
(`skbridge-bench`, the job image imported there from the sandbox's archive), never in the
kubelet's `k8s.io`; the namespace is emptied and removed at the end. After the figures, where a
bridge job's time goes: each batch's mean time in its Slurm slot (sacct) and the prolog's stages
(the hooks log's `timings_s`); for CPU per process run it under `bench/cpu_by_process.py`.

    .venv/bin/python bench/end_to_end.py [--quick] [--jobs N] [--partition sim] [--cpus-per-job K]

`--partition sim` runs both batches on the sandbox's simulated nodes (`skbridge sandbox up
--sim-nodes M`): real slurmds whose Pods kwok plays for the job's 1 s, so the figure is the
bridge's own cost without the container runtime's (no `ctr run` floor there).

`--cpus-per-job K` gives every job of every batch K CPUs, so fewer run at once (a node of C
CPUs takes C/K): on a machine whose CPUs the control plane, Slurm and the jobs share, that is
the difference between measuring the bridge's latency per job (few at once, CPUs to spare)
and its CPU cost per job (every slot full, the CPUs saturated).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

from _harness import drop, ensure_users, job_text, sandbox, slurm, wait_all_ended

from bridge.sandbox.images import JOB_IMAGE, archive_path
from bridge.sandbox.kube_node import NodePaths
from bridge.sandbox.layout import SandboxLayout
from bridge.settings import load_settings

CTR_NAMESPACE = "skbridge-bench"  # never the kubelet's k8s.io


def _ctr(layout: SandboxLayout, *argv: str) -> list[str]:
    return ["/usr/bin/ctr", "--address", str(NodePaths(layout).containerd_socket), "--namespace", CTR_NAMESPACE, *argv]


def _ctr_cleanup(layout: SandboxLayout) -> None:
    """Every container, task and snapshot of the benchmark's namespace, its image, then the namespace."""
    def run(*argv: str) -> str:
        return subprocess.run(_ctr(layout, *argv), capture_output=True, text=True, timeout=120, check=False).stdout

    for task in run("tasks", "list", "--quiet").split():
        run("tasks", "kill", "--signal", "SIGKILL", task)
        run("tasks", "delete", "--force", task)
    for container in run("containers", "list", "--quiet").split():
        run("containers", "delete", container)
    for line in run("snapshots", "list").splitlines()[1:]:
        run("snapshots", "remove", line.split()[0])
    run("images", "remove", "--sync", JOB_IMAGE)
    remove = ["/usr/bin/ctr", "--address", str(NodePaths(layout).containerd_socket), "namespaces", "remove", CTR_NAMESPACE]
    deadline = time.monotonic() + 30
    # containerd collects the image's content and snapshots behind the removal; the namespace goes once it is empty.
    while subprocess.run(remove, capture_output=True, timeout=60, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"ctr namespace {CTR_NAMESPACE} still holds something; see `ctr -n {CTR_NAMESPACE} snapshots ls`")
        for line in run("snapshots", "list").splitlines()[1:]:
            run("snapshots", "remove", line.split()[0])
        time.sleep(0.5)


def runtime_floor(layout: SandboxLayout, count: int, cpus: int) -> tuple[float, list[str]]:
    """The same one-second script, each as a root Slurm job running it with `ctr run --rm` in the job image."""
    subprocess.run(_ctr(layout, "images", "import", str(archive_path(JOB_IMAGE))), capture_output=True, text=True,
                   timeout=300, check=True)
    stamp = time.strftime("%H%M%S")
    try:
        started = time.monotonic()
        ids = []
        for index in range(count):
            # Constant text only (no user input reaches this shell line).
            run = " ".join(_ctr(layout, "run", "--rm", "--memory-limit", str(512 << 20), JOB_IMAGE,
                                f"skb-floor-{stamp}-{index:04d}", "/bin/bash", "-c", "'echo hello; sleep 1'"))
            ids.append(slurm(layout, "sbatch", "--parsable", f"--cpus-per-task={cpus}", "--mem=512M", "--output=/dev/null",
                             "--chdir=/tmp", "--wrap", run).strip())
        ended = wait_all_ended(layout, ids, 600) - started
        states = slurm(layout, "sacct", "-n", "-X", "-P", "-o", "State", "-j", ",".join(ids)).split()
        if states.count("COMPLETED") != count:
            raise SystemExit(f"runtime floor: only {states.count('COMPLETED')} of {count} `ctr run` jobs completed")
        return ended, ids
    finally:
        _ctr_cleanup(layout)


def slot_s(layout: SandboxLayout, job_ids: list[str]) -> float:
    """Mean seconds each job held its Slurm slot."""
    out = slurm(layout, "sacct", "-n", "-X", "-P", "-o", "ElapsedRaw", "-j", ",".join(job_ids))
    return statistics.fmean(int(value) for value in out.split() if value.isdigit())


def prolog_splits(hook_log: Path, job_ids: set[str]) -> list[dict[str, float]]:
    splits = []
    for line in hook_log.read_text(errors="replace").splitlines():
        if '"prolog done"' in line:
            record = json.loads(line)
            if str(record.get("job_id")) in job_ids and record.get("timings_s"):
                splits.append(dict(record["timings_s"]))
    return splits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 jobs (CI smoke test)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--no-runtime-floor", action="store_true", help="skip the `ctr run` baseline (kwok node)")
    parser.add_argument("--partition", default=None, help="run both batches there (`sim`: the simulated nodes)")
    parser.add_argument("--cpus-per-job", type=int, default=1, help="CPUs of every job (fewer at once)")
    args = parser.parse_args()
    where = [f"--partition={args.partition}"] if args.partition else []
    count = 8 if args.quick else args.jobs
    layout = sandbox()
    settings = load_settings(layout.bridge_config)
    users = ensure_users()

    # Baseline: plain Slurm jobs on the bare host. Every lab user's job takes the bridge's one
    # road (a --wrap job runs in a Pod with the default image), so root submits these: root's
    # own jobs stay on the host (bridge.jobfile.routing).
    started = time.monotonic()
    plain = [slurm(layout, "sbatch", "--parsable", f"--cpus-per-task={args.cpus_per_job}", "--mem=512M", "--output=/dev/null",
                   "--chdir=/tmp", *where, "--wrap", "sleep 1").strip()
             for _ in range(count)]
    baseline_s = wait_all_ended(layout, plain, 600) - started
    floor = None if args.no_runtime_floor or args.partition else runtime_floor(layout, count, args.cpus_per_job)

    # The bridge: the sandbox's own watcher picks the files up from its submit/ folder.
    stamp = time.strftime("%H%M%S")
    names = [f"e2e-{stamp}-{i:04d}.sh" for i in range(count)]
    started = time.monotonic()
    for i, name in enumerate(names):
        drop(settings.nas.submit_dir, name, job_text(name, env=("SANDBOX_RUN_DURATION=1s",), partition=args.partition,
                                                     cpus=args.cpus_per_job), users[i % len(users)])
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
    print(f"end to end: {count} one-second jobs of {args.cpus_per_job} CPU(s)"
          + (f" in partition {args.partition}" if args.partition else ""))
    print(f"  plain Slurm jobs        : {baseline_s:7.2f} s")
    print(f"  through the bridge      : {bridge_s:7.2f} s  (drop -> results; {states.count('COMPLETED')} COMPLETED)")
    if floor is not None:
        floor_s, floor_ids = floor
        print(f"  Slurm + `ctr run` floor : {floor_s:7.2f} s  (the script in a container of the job image)")
    print(f"  ratio bridge/baseline   : {bridge_s / baseline_s:.2f}x   (target <= 1.3x)")
    if floor is not None:
        print(f"  ratio bridge/(Slurm + runtime floor): {bridge_s / floor_s:.2f}x   "
              f"(floor/plain {floor_s / baseline_s:.2f}x)")
    print("where the time goes (means per job):")
    print(f"  in its Slurm slot (sacct Elapsed): plain {slot_s(layout, plain):.2f} s"
          + (f", ctr run {slot_s(layout, floor_ids):.2f} s" if floor is not None else "")
          + f", bridge {slot_s(layout, list(job_ids.values())):.2f} s")
    splits = prolog_splits(settings.hook_log_path, set(job_ids.values()))
    if splits:
        print(f"  prolog stages ({len(splits)} jobs; hooks log timings_s), total "
              f"{statistics.fmean(sum(split.values()) for split in splits):.3f} s:")
        for stage in splits[0]:
            print(f"    {stage:<26} {statistics.fmean(split.get(stage, 0.0) for split in splits):6.3f}")


if __name__ == "__main__":
    main()
