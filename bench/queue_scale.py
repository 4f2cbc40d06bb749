"""Benchmark: the allocation path with a long queue (issue 17, "Scale"). The prolog's cost
per job, and the watcher's memory, with 10 held jobs queued and then with ~10,000.

Slinky slurm-bridge #45/#46 is the anchor: every scheduling pass there decoded the whole job
list (30 MB, 1.4 s at ~900 jobs). Here nothing on the allocation path lists jobs; each call
asks slurmctld about one job by its id (a hash lookup in slurmctld, whatever the queue):

  allocation path (PrologSlurmctld -> thin client `bridge/hooks/fastpath.py` -> watcher's
  hook server -> `bridge/hooks/prolog.py`; EpilogSlurmctld -> `bridge/hooks/epilog.py`):
    scontrol write batch_script <id> -              fastpath.certainly_not_bridge_job (only when no
                                                    watcher answers), jobinfo.read_batch_script
    scontrol show job -d <id>  (<arrayjob>_<task>)  jobinfo.read_allocation (prolog, epilog)
    squeue --noheader --jobs <id> --format %A|%U|%u|%G|%N|%F|%K
                                                    jobinfo.complete_hook_env, only when slurmctld's
                                                    SLURM_JOB_UID/GID/USER are missing (an admin's
                                                    manual `skbridge hooks prolog ID`); one id makes
                                                    squeue use slurm_load_job, not the whole list
    scontrol update JobId=<id> AdminComment=...     prolog._admin_comment (reject/requeue only)
  no Slurm call at all: slurm/identity.py (slurmctld's variables + the password database),
  the job history writes (bridge/history/: SQLite, one row by primary key), root's job record
  (bridge/collect/records.py: <jobid>.json), the metrics (bridge/metrics.py), and attach
  (`bridge/hooks/attach.py`: the batch step's Pod GET/watch/log with the job's own token).
  Kubernetes calls are per job too (label selector slurm.job-id=<id>, GETs by name).

  off the allocation path, listing every job:
    squeue --noheader --all --states=all --format=%A|%T|%e   reaper (collect/reaper.py), once per
                                                    ingest.reaper_interval_s and only while bridge
                                                    objects exist
    squeue --noheader --all --format=%i|%F          retention (collect/retention.py), once per
                                                    retention.interval_s / `skbridge housekeeping`
    squeue --noheader --all --states=all --format=%i|%u|%k and
    sacct --allusers --allocations ...              ingest, only after an sbatch whose outcome is
                                                    unknown (slurm/submit.find_tagged_jobs)
    squeue --states=all --jobs=<ids> / --user=<u>   the service's history live refresh
                                                    (service/live.py), at most every
                                                    history.live_refresh_s per caller; several ids
                                                    make squeue load the whole list
    squeue --states=PENDING [--partition=P]         `skbridge status` of a pending job
                                                    (userview/queue.queue_position)

Measured: the prolog's total (`timings_s` in the hooks log, hand-over included), the same
without its wait for Pod Ready (the kubelet's container start, ~1 s and noisy), and its Slurm
part (slurm_script + slurm_allocation) for N small real jobs run one after another, each
Slurm command above timed against one held job, the watcher's and slurmctld's RSS from /proc.
The queue is filled with held plain jobs (`sbatch --hold --partition=parked --wrap true`) of a
dedicated user (skbscale) that no test uses; at most MaxJobCount minus the records slurmctld
holds minus a headroom left for the other users of the sandbox. Every one is cancelled at the end.

    .venv/bin/python bench/queue_scale.py [--quick] [--queued N] [--jobs N] [--headroom N]
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import subprocess
import time
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from _harness import ensure_users, env_of, percentile, sandbox, slurm, wait_all_ended
from prolog import SCRIPT as GPU_SCRIPT
from prolog import hook_timings

from bridge.sandbox.layout import SandboxLayout
from bridge.sandbox.procs import Daemons
from bridge.settings import Settings, load_settings

SCALE_USER, SCALE_UID = "skbscale", 1590
JOB_NAME = "skbscale-held"
# A CPU job: the sandbox's GPUs are shared with the other engineers' tests.
SCRIPT = GPU_SCRIPT.replace("#SBATCH --gres=gpu:a100:1\n", "").replace("--cpus-per-task=2", "--cpus-per-task=1")
SLURM_PART = ("slurm_script", "slurm_allocation")


def ensure_scale_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SCALE_USER)
    except KeyError:
        subprocess.run(["useradd", "--uid", str(SCALE_UID), "--create-home", "--shell", "/bin/bash", SCALE_USER],
                       check=True)
        return pwd.getpwnam(SCALE_USER)


def status_kib(pid: int) -> dict[str, int]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


@dataclass
class Phase:
    queued: int
    prolog_total: list[float] = field(default_factory=list)
    prolog_own: list[float] = field(default_factory=list)  # all but kube_wait_ready (the kubelet's)
    prolog_slurm: list[float] = field(default_factory=list)
    commands: dict[str, list[float]] = field(default_factory=dict)


class HeldQueue:
    """The dedicated user's held jobs; `cancel_all` is the only way they leave."""

    def __init__(self, layout: SandboxLayout, owner: pwd.struct_passwd) -> None:
        self.layout, self.owner = layout, owner
        self.env = {**env_of(layout), "HOME": owner.pw_dir}
        self.ids: list[str] = []

    def _one(self, _index: int) -> str:
        # Held, and in the sandbox's `parked` partition (down): never run, even if released.
        done = subprocess.run(["sbatch", "--hold", "--partition=parked", "--parsable", f"--job-name={JOB_NAME}",
                               "--output=/dev/null", "--time=1", "--wrap", "true"], env=self.env, cwd="/tmp",
                              user=self.owner.pw_uid, group=self.owner.pw_gid, extra_groups=[], capture_output=True,
                              text=True, check=True)
        return done.stdout.strip().split(";")[0]

    def grow_to(self, total: int) -> float:
        """Submit held jobs until `total` are queued; returns the seconds it took."""
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.ids += pool.map(self._one, range(total - len(self.ids)))
        return time.monotonic() - started

    def live(self) -> int:
        return len(slurm(self.layout, "squeue", "--noheader", f"--user={SCALE_USER}", "--format=%i").split())

    def cancel_all(self, timeout_s: float = 120) -> float:
        started = time.monotonic()
        # By user: one RPC, and only this benchmark's user has jobs under that name.
        slurm(self.layout, "scancel", f"--user={SCALE_USER}", check=False)
        while self.live() and time.monotonic() - started < timeout_s:
            time.sleep(1)
        return time.monotonic() - started


def queue_size(layout: SandboxLayout) -> int:
    """Pending and running jobs of everyone (array tasks folded, as squeue shows them)."""
    return len(slurm(layout, "squeue", "--noheader", "--all", "--format=%i").split())


def records_held(layout: SandboxLayout) -> int:
    """Job records slurmctld holds (ended ones until MinJobAge): what MaxJobCount counts."""
    return len(slurm(layout, "squeue", "--noheader", "--all", "--states=all", "--format=%i").split())


def max_job_count(layout: SandboxLayout) -> int:
    found = re.search(r"^MaxJobCount\s*=\s*(\d+)", slurm(layout, "scontrol", "show", "config"), re.MULTILINE)
    return int(found.group(1)) if found else 10_000


def time_commands(layout: SandboxLayout, probe: str, reps: int) -> dict[str, list[float]]:
    """Seconds per call of each Slurm command the audit names, against the held job `probe`."""
    commands: dict[str, tuple[Sequence[str], int]] = {
        "scontrol write batch_script ID": (["scontrol", "write", "batch_script", probe, "-"], reps),
        "scontrol show job -d ID": (["scontrol", "show", "job", "-d", probe], reps),
        "squeue --jobs ID (one id)": (["squeue", "--noheader", "--jobs", probe, "--format", "%A|%U|%u|%G|%N|%F|%K"],
                                      reps),
        "[off path] squeue --all (reaper)": (["squeue", "--noheader", "--all", "--states=all", "--format=%A|%T|%e"],
                                             reps),
        "[off path] squeue --jobs ID,1 (live)": (["squeue", "--noheader", "--states=all", f"--jobs={probe},1",
                                                  "--format=%i|%T"], reps),
        "[anchor] squeue --json --all": (["squeue", "--json", "--all"], max(1, reps // 5)),
    }
    timings: dict[str, list[float]] = {}
    for name, (argv, count) in commands.items():
        for _ in range(count):
            started = time.perf_counter()
            subprocess.run(list(argv), env=env_of(layout), capture_output=True, check=False)
            timings.setdefault(name, []).append(time.perf_counter() - started)
    return timings


def run_jobs(layout: SandboxLayout, settings: Settings, count: int, phase: Phase, partition: str | None = None) -> None:
    """`count` small real jobs one after another; their prolog timings from the hooks log."""
    user = ensure_users()[0]
    home = settings.nas.home_root / user.pw_name
    home.mkdir(parents=True, exist_ok=True)
    script = home / "bench-queue-scale.sh"
    script.write_text(SCRIPT)
    for _ in range(count):
        where = [f"--partition={partition}"] if partition else []
        job_id = slurm(layout, "sbatch", "--parsable", f"--chdir={home}", *where, str(script),
                       user=user.pw_name).strip()
        wait_all_ended(layout, [job_id], 180)
        timings = None
        for _attempt in range(50):
            timings = hook_timings(settings.hook_log_path.read_text(errors="replace"), job_id)
            if timings:
                break
            time.sleep(0.1)
        if not timings:
            raise SystemExit(f"no prolog timings for job {job_id} in {settings.hook_log_path}")
        phase.prolog_total.append(sum(timings.values()))
        phase.prolog_own.append(sum(timings.values()) - timings.get("kube_wait_ready", 0.0))
        phase.prolog_slurm.append(sum(timings.get(stage, 0.0) for stage in SLURM_PART))


def reaper_passes(settings: Settings) -> float:
    """The sandbox watcher's reaper passes so far (its /metrics), NaN when not served."""
    url = f"http://{settings.metrics.listen_address}:{settings.metrics.port}/metrics"
    try:
        text = urllib.request.urlopen(url, timeout=5).read().decode()
    except OSError:
        return float("nan")
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("skbridge_reaper_passes_total{"))


@dataclass(frozen=True)
class Memory:
    """One daemon's RSS at one moment; `pid` tells a restart (others restart the watcher)."""

    moment: str
    pid: int
    rss_kib: int
    peak_kib: int


def memory(layout: SandboxLayout, moment: str) -> dict[str, Memory]:
    found = {}
    for name in ("watcher", "slurmctld"):
        record = Daemons(layout).running(name)
        if record is not None:
            kib = status_kib(record.pid)
            found[name] = Memory(moment, record.pid, kib.get("VmRSS", 0), kib.get("VmHWM", 0))
    return found


def measure(layout: SandboxLayout, settings: Settings, queue: HeldQueue, phase: Phase, jobs: int, reps: int,
            partition: str | None = None) -> None:
    run_jobs(layout, settings, jobs, phase, partition)
    phase.commands = time_commands(layout, queue.ids[0], reps)


def ms(values: list[float], fraction: float) -> str:
    return f"{percentile(values, fraction) * 1000:7.1f}"


def report(small: Phase, large: Phase, samples: list[dict[str, Memory]], *, submit_s: float,
           reaper_during: float) -> None:
    print(f"queue scale: prolog per job with {small.queued} vs {large.queued} held jobs queued "
          f"({len(small.prolog_total)} jobs each; submitting the held jobs took {submit_s:.0f} s)")
    print(f"  {'':38} {'p50 ms':>9} {'p95 ms':>9}   {'p50 ms':>9} {'p95 ms':>9}   p50 ratio")
    rows = [("prolog total (hooks log)", small.prolog_total, large.prolog_total),
            ("prolog but the wait for Pod Ready", small.prolog_own, large.prolog_own),
            ("prolog Slurm part (script+allocation)", small.prolog_slurm, large.prolog_slurm),
            *((name, small.commands[name], large.commands[name]) for name in small.commands)]
    for name, few, many in rows:
        ratio = percentile(many, 0.5) / percentile(few, 0.5)
        print(f"  {name:38} {ms(few, 0.5)}   {ms(few, 0.95)}   {ms(many, 0.5)}   {ms(many, 0.95)}   {ratio:6.2f}x")
    for name in ("watcher", "slurmctld"):
        seen = [sample[name] for sample in samples if name in sample]
        steps = ", ".join(f"{m.moment} {m.rss_kib / 1024:.1f}" + (f" (pid {m.pid}: restarted)" if index and
                                                                 m.pid != seen[index - 1].pid else "")
                          for index, m in enumerate(seen))
        peak = f"; peak of that process {seen[-1].peak_kib / 1024:.1f}" if seen else ""
        print(f"  {name} RSS MiB: {steps}{peak}")
    passes = f"{reaper_during:.0f}" if reaper_during >= 0 else "n/a (watcher restarted or /metrics unreachable)"
    print(f"  reaper passes (squeue --all) while {large.queued} were queued: {passes}")
    ratio = percentile(large.prolog_total, 0.5) / percentile(small.prolog_total, 0.5)
    print(f"  ratio prolog p50 {large.queued}/{small.queued} queued: {ratio:.2f}x   (target <= 1.2x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 vs 40 queued, 2 jobs each (CI smoke test)")
    parser.add_argument("--queued", type=int, default=10_000, help="held jobs for the long queue (at most)")
    parser.add_argument("--jobs", type=int, default=12, help="real jobs per phase")
    parser.add_argument("--headroom", type=int, default=300,
                        help="job records left free below MaxJobCount for everyone else")
    parser.add_argument("--partition", default=None,
                        help="run the measured jobs there (`sim`: the simulated nodes of `sandbox up --sim-nodes M`)")
    args = parser.parse_args()
    target, jobs, reps = (40, 2, 3) if args.quick else (args.queued, args.jobs, 20)
    layout = sandbox()
    settings = load_settings(layout.bridge_config)
    queue = HeldQueue(layout, ensure_scale_user())
    if queue.live():
        queue.cancel_all()  # a previous run's, interrupted before its own cleanup
    before = queue_size(layout)
    allowed = max_job_count(layout) - records_held(layout) - args.headroom
    target = max(20, min(target, allowed))
    samples = [memory(layout, "start")]
    try:
        queue.grow_to(10)
        small = Phase(queued=queue.live())
        measure(layout, settings, queue, small, jobs, reps, args.partition)
        samples.append(memory(layout, f"{small.queued} queued"))
        submit_s = queue.grow_to(target)
        large = Phase(queued=queue.live())
        samples.append(memory(layout, "filled"))
        passes = reaper_passes(settings)
        measure(layout, settings, queue, large, jobs, reps, args.partition)
        passes = reaper_passes(settings) - passes
        samples.append(memory(layout, f"{large.queued} queued"))
    finally:
        cancel_s = queue.cancel_all()
        left = queue.live()
    report(small, large, samples, submit_s=submit_s, reaper_during=passes)
    print(f"  cleanup: {len(queue.ids)} held jobs cancelled in {cancel_s:.1f} s, {left} left; queue size "
          f"{before} before, {queue_size(layout)} after (others' jobs come and go); "
          f"MaxJobCount {max_job_count(layout)}, records held now {records_held(layout)}")
    if left:
        raise SystemExit(f"{left} held jobs of {SCALE_USER} are still queued: scancel --user={SCALE_USER}")


if __name__ == "__main__":
    os.umask(0o022)
    main()
