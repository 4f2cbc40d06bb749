"""`skbridge attach`: the batch step of a bridge job, run by slurmd as the job's user.

It never runs the user's commands. It follows the job's Pod with the job's own credential,
copies the Pod's log to stdout (which Slurm writes to the job's --output file), and exits
with the Pod's exit code, so `sacct` shows what the container did. scancel and the time
limit send SIGTERM: attach deletes the Pod with its grace period (below Slurm's KillWait),
so the container gets SIGTERM too, copies what the job prints until its container is gone,
then exits; the epilog removes the rest.

Two ways in, one behaviour. The light path (standard library and PyYAML only: attach runs
once per job on a busy node) finds the job's folder through `bridge.configfile` and talks to
the API server with `bridge.kubernetes.lite`, from the bundle the prolog put in the job's
kubeconfig. When that bundle is missing or does not name this job's attempt (a job started
by an older prolog), the full path loads the settings model and the official client. Both
drive the same code below through `PodAccess`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, BinaryIO

from bridge.collect.results import read_status
from bridge.configfile import config_file, read_config_mapping, results_root
from bridge.errors import BridgeError, ConfigError
from bridge.kubernetes.lite import ATTACH_KUBECONFIG, LitePod, PodAccess, read_attach_bundle
from bridge.kubernetes.podstatus import JOB_CONTAINER, TERMINAL_PHASES, job_termination
from bridge.slurm.arraytask import array_task_name

if TYPE_CHECKING:  # the full path imports these when it runs
    from bridge.kubernetes.client import Kube
    from bridge.settings import Settings

TRACE_ENV = "SKBRIDGE_ATTACH_TRACE"
EXIT_REJECTED = 1
EXIT_LOST = 1
EXIT_OOM = 128 + signal.SIGKILL
_TERMINAL = TERMINAL_PHASES


def _say(out: BinaryIO, text: str) -> None:
    out.write(f"skbridge attach: {text}\n".encode())
    out.flush()


class _LogCopy:
    """Copies the Pod's log to stdout and counts the bytes, so the tail can be completed exactly."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.written = 0
        self.stopped = False
        self.lock = threading.Lock()

    def write(self, chunk: bytes) -> bool:
        with self.lock:
            if self.stopped:
                return False
            self.out.write(chunk)
            self.out.flush()
            self.written += len(chunk)
            return True

    def stop(self) -> int:
        with self.lock:
            self.stopped = True
            return self.written


def _follow_log(pod: PodAccess, copy: _LogCopy) -> None:
    """Follow the job container's log until the Pod has ended and its log was read to the end.

    A stream broken by an API server or kubelet restart is opened again and the bytes already
    written are skipped, so the output has every line once. Once the container has ended, a
    followed log returns all of it and closes, which completes the copy.
    """
    while not copy.stopped:
        skip = copy.written
        try:
            for chunk in pod.follow_log():
                fresh, skip = chunk[skip:], max(0, skip - len(chunk))
                if fresh and not copy.write(fresh):
                    return
            if _ended(pod):
                return
        except BridgeError:
            pass
        time.sleep(1.0)


def _ended(pod: PodAccess) -> bool:
    try:
        current = pod.get()
    except BridgeError:
        return False
    return current is None or job_termination(current) is not None


def _finish_log(pod: PodAccess, copy: _LogCopy, follower: threading.Thread) -> None:
    """After the Pod ended: the follower completes the copy by itself (a kubelet closes the
    stream once the container's log is read); a node that never closes it gets one full read.

    A stream still open half a second after the end is asked once how long the whole log is:
    when the copy has it all, there is nothing to wait for (kwok's nodes keep a followed log
    open, which made every job there wait out the 5 s below)."""
    follower.join(timeout=0.5)
    if follower.is_alive():
        try:
            whole_bytes = len(pod.read_log())
        except BridgeError:
            whole_bytes = None
        if whole_bytes is not None and copy.written >= whole_bytes:
            copy.stop()
            return
        follower.join(timeout=4.5)
    written = copy.stop()
    if not follower.is_alive():
        return
    try:
        full = pod.read_log()
    except BridgeError:
        _say(copy.out, "the end of the job's log could not be read: see pod.log in the job's results folder")
        return
    rest = full[written:]
    if rest:
        copy.out.write(rest)
        copy.out.flush()


def _wait_terminal(pod: PodAccess) -> dict[str, Any] | None:
    """Follow the Pod by watch until it ends; None if it disappears first.

    The API server may go away meanwhile (restart, upgrade): the container runs on, so this
    keeps asking until it answers again; only the Pod's own absence (404) ends the wait early.
    """
    while True:
        try:
            current = pod.get()
            if current is None:
                return None
            if (current.get("status") or {}).get("phase") in _TERMINAL:
                return current
            for event in pod.watch(current["metadata"]["resourceVersion"], timeout_s=300):
                obj = event.get("object") or {}
                if event.get("type") == "DELETED":
                    return None
                if obj.get("kind") == "Pod" and (obj.get("status") or {}).get("phase") in _TERMINAL:
                    return obj
        except BridgeError:
            # Unreachable, a broken watch, or an API server just back whose RBAC cache has not
            # yet loaded this job's Role (403): the container runs on, so ask again.
            time.sleep(1.0)


def _termination(pod: dict[str, Any]) -> tuple[int, str]:
    ended = job_termination(pod)
    return (ended.exit_code, ended.reason) if ended is not None else (EXIT_LOST, "")


_REASONS = {"OOMKilled": "out of memory: the job used more than its --mem and the kernel killed it"}


class _Signals:
    """SIGTERM/SIGINT only set a flag; the main thread acts on it between waits."""

    def __init__(self) -> None:
        self.received: int | None = None

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        self.received = signum


def _stop_pod(pod: PodAccess, grace_s: int) -> None:
    # Gone already, or the API server is away: the epilog deletes it.
    with contextlib.suppress(BridgeError):
        pod.delete(grace_s)


class _KubePod:
    """`PodAccess` through the official client (the full path)."""

    def __init__(self, kube: Kube, namespace: str, pod: str) -> None:
        from bridge.kubernetes.objects import collection_path, object_path

        self.kube = kube
        self.namespace = namespace
        self.pod = pod
        self._path = object_path("Pod", pod, namespace)
        self._collection = collection_path("Pod", namespace)

    def get(self) -> dict[str, Any] | None:
        return self.kube.get_or_none(self._path)

    def watch(self, resource_version: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        return self.kube.watch(self._collection, query={"fieldSelector": f"metadata.name={self.pod}",
                                                        "resourceVersion": resource_version}, timeout_s=timeout_s)

    def follow_log(self) -> Iterator[bytes]:
        return self.kube.stream_lines(self._path + "/log", query={"container": JOB_CONTAINER, "follow": "true"},
                                      read_timeout_s=3600 * 24)

    def read_log(self) -> bytes:
        return self.kube.request_text("GET", self._path + "/log", query={"container": JOB_CONTAINER}).encode("utf-8")

    def delete(self, grace_period_s: int) -> None:
        self.kube.delete(self._path, grace_period_s=grace_period_s)

    def for_pod(self, name: str) -> _KubePod:
        return _KubePod(self.kube, self.namespace, name)


def run_attach(settings: Settings, job_id: str, user: str, restart_count: int, out: BinaryIO | None = None,
               signals: _Signals | None = None, results_name: str | None = None) -> int:
    """The full path. `results_name`: the job's folder in results/<user>/ (`<arrayjob>_<task>`
    for an array task); the job id when None."""
    from bridge.collect.results import results_dir
    from bridge.kubernetes.client import load_client
    from bridge.kubernetes.render import ObjectNames

    out = out or sys.stdout.buffer
    job_dir = results_dir(settings.nas, user, results_name or job_id)
    status = read_status(job_dir) or {}
    if status.get("state") == "rejected":
        _say(out, f"the bridge rejected job {job_id}: {status.get('reason')}")
        return EXIT_REJECTED
    kubeconfig = job_dir / ATTACH_KUBECONFIG
    if not kubeconfig.exists():
        _say(out, f"no Pod credential at {kubeconfig}: was the job submitted through the bridge's prolog?")
        return EXIT_LOST
    pod = ObjectNames.for_attempt(job_id, restart_count).pod
    namespace = settings.kubernetes.namespace
    kube = load_client(kubeconfig, timeout_s=settings.kubernetes.api_timeout_s)
    bundle = read_attach_bundle(kubeconfig)
    return follow_pod(_KubePod(kube, namespace, pod), job_id, settings.kubernetes.termination_grace_period_s,
                      out, signals, other_pods=bundle.other_pods if bundle is not None else ())


class _Ranks:
    """A multi-node job's ranks 1..n-1, each waited for on a thread of its own."""

    def __init__(self, pods: list[PodAccess]) -> None:
        self.pods = pods
        self.ended: dict[int, dict[str, Any] | None] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._wait, args=(rank, pod), daemon=True)
                        for rank, pod in enumerate(pods, start=1)]
        for thread in self.threads:
            thread.start()

    def _wait(self, rank: int, pod: PodAccess) -> None:
        final = _wait_terminal(pod)
        with self.lock:
            self.ended[rank] = final

    def describe(self, failure: tuple[int, int, str]) -> str:
        rank, code, reason = failure
        return f"rank {rank} (Pod {self.pods[rank - 1].pod}) ended with exit code {code}{f' ({reason})' if reason else ''}"

    def first_failure(self) -> tuple[int, int, str] | None:
        """(rank, exit code, reason) of the first rank that ended badly, if any."""
        with self.lock:
            for rank in sorted(self.ended):
                final = self.ended[rank]
                code, reason = _termination(final) if final is not None else (EXIT_LOST, "disappeared")
                if code != 0:
                    return rank, code, reason
        return None

    def all_ended(self) -> bool:
        return all(not thread.is_alive() for thread in self.threads)

    def stop(self, grace_s: int) -> None:
        """Stop the ranks still running; an ended rank's Pod stays for the epilog to collect
        (the one that failed holds the job's reason)."""
        with self.lock:
            running = [pod for rank, pod in enumerate(self.pods, start=1) if rank not in self.ended]
        for pod in running:
            _stop_pod(pod, grace_s)


def follow_pod(pod: PodAccess, job_id: str, grace_s: int, out: BinaryIO, signals: _Signals | None,
               other_pods: tuple[str, ...] = ()) -> int:
    """Copy the Pod's log to `out` until it ends; its exit code (or 128+signal when stopped).

    A multi-node job's `other_pods` (ranks 1..n-1): their logs go to the results folder, not
    here; the job waits for every rank, and ends as soon as one fails (the others are stopped)."""
    ranks = _Ranks([pod.for_pod(name) for name in other_pods]) if other_pods else None
    copy = _LogCopy(out)
    follower = threading.Thread(target=_follow_log, args=(pod, copy), daemon=True)
    follower.start()
    result: list[dict[str, Any] | None] = []
    waiter = threading.Thread(target=lambda: result.append(_wait_terminal(pod)), daemon=True)
    waiter.start()

    def interrupted() -> bool:
        return signals is not None and signals.received is not None

    while waiter.is_alive() and not interrupted() and (ranks is None or ranks.first_failure() is None):
        waiter.join(timeout=0.2)
    if interrupted():
        assert signals is not None and signals.received is not None
        # scancel or the time limit: the container gets SIGTERM now and SIGKILL after the grace
        # period; what it prints meanwhile (a trap's last words) still reaches the output.
        _stop_pod(pod, grace_s)
        if ranks is not None:
            ranks.stop(grace_s)
        waiter.join(timeout=grace_s + 5)
        follower.join(timeout=1.0)
        copy.stop()
        _say(out, f"job {job_id} ended by {signal.Signals(signals.received).name}")
        return 128 + signals.received
    failed = ranks.first_failure() if ranks is not None else None
    if failed is not None and waiter.is_alive():
        assert ranks is not None
        _say(out, f"{ranks.describe(failed)}: stopping the job's other ranks")
        _stop_pod(pod, grace_s)
        ranks.stop(grace_s)
        waiter.join(timeout=grace_s + 5)
        _finish_log(pod, copy, follower)
        return failed[1]
    final = result[0] if result else None
    _finish_log(pod, copy, follower)
    if final is None:
        _say(out, f"Pod {pod.pod} disappeared before it finished")
        return EXIT_LOST
    code, reason = _termination(final)
    if reason == "OOMKilled" and code == 0:
        # A process of the job was killed for memory but the script went on: as under Slurm's
        # own cgroup enforcement, the job did not complete.
        code = EXIT_OOM
    if code != 0:
        why = f" ({reason}: {_REASONS[reason]})" if reason in _REASONS else (f" ({reason})" if reason else "")
        _say(out, f"Pod {pod.pod} ended {final['status'].get('phase')} with exit code {code}{why}")
    if ranks is None:
        return code
    # Rank 0 is done: the job lasts until every rank is.
    while not ranks.all_ended() and not interrupted():
        time.sleep(0.2)
    if interrupted():
        ranks.stop(grace_s)
    failed = ranks.first_failure()
    if failed is not None and code == 0:
        _say(out, ranks.describe(failed))
        return failed[1]
    return code


class _JobEnv:
    """What slurmd tells the batch step about its job."""

    def __init__(self) -> None:
        self.job_id = os.environ.get("SLURM_JOB_ID", "")
        self.user = os.environ.get("SLURM_JOB_USER") or os.environ.get("USER", "")
        self.restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
        # slurmd sets these for an array task's batch step; the prolog's folder is named after them.
        self.results_name = array_task_name(os.environ.get("SLURM_ARRAY_JOB_ID", ""),
                                            os.environ.get("SLURM_ARRAY_TASK_ID", "")) or self.job_id


def _trace(job: _JobEnv, path: str) -> None:
    """With $SKBRIDGE_ATTACH_TRACE naming a file, note which path attach took (tests and
    benchmarks check it there: never in the job's own output)."""
    target = os.environ.get(TRACE_ENV)
    if target:
        with contextlib.suppress(OSError), open(target, "a", encoding="utf-8") as trace:
            trace.write(f"{job.job_id} {path}\n")


def _install_signals() -> _Signals:
    signals = _Signals()
    signal.signal(signal.SIGTERM, signals.handler)
    signal.signal(signal.SIGINT, signals.handler)
    return signals


def attach_light(config: Path | None) -> int | None:
    """The light path; None when it cannot be taken (the full path then runs, unchanged)."""
    job = _JobEnv()
    if not job.job_id:
        return None
    try:
        job_dir = results_root(read_config_mapping(config_file(config)), os.environ) / job.user / job.results_name
    except ConfigError:
        return None  # the full path reports it as before
    status = read_status(job_dir) or {}
    bundle = read_attach_bundle(job_dir / ATTACH_KUBECONFIG)
    if bundle is None or (bundle.job_id, bundle.restart_count) != (job.job_id, job.restart):
        return None
    _trace(job, "light")
    out = sys.stdout.buffer
    if status.get("state") == "rejected":
        _say(out, f"the bridge rejected job {job.job_id}: {status.get('reason')}")
        return EXIT_REJECTED
    try:
        pod = LitePod(bundle)
    except (ssl.SSLError, ValueError):
        return None  # CA data the standard library cannot load: leave it to the official client
    return follow_pod(pod, job.job_id, bundle.termination_grace_period_s, out, _install_signals(),
                      other_pods=bundle.other_pods)


def attach_main(settings: Settings) -> int:
    job = _JobEnv()
    if not job.job_id:
        print("skbridge attach: run by Slurm as a bridge job's batch step (SLURM_JOB_ID is unset)", file=sys.stderr)
        return 2
    _trace(job, "full")
    return run_attach(settings, job.job_id, job.user, job.restart, signals=_install_signals(),
                      results_name=job.results_name)


def attach_command(config: Path | None) -> int:
    """`skbridge attach [--config FILE]`: the light path, else load the settings and follow the job's Pod."""
    light = attach_light(config)
    if light is not None:
        return light
    from bridge.settings import load_settings

    try:
        settings = load_settings(config)
    except BridgeError as exc:
        print(f"skbridge attach: {exc}", file=sys.stderr)
        return 2
    return attach_main(settings)
