"""`skbridge attach`: the batch step of a bridge job, run by slurmd as the job's user.

It never runs the user's commands. It follows the job's Pod with the job's own credential,
copies the Pod's log to stdout (which Slurm writes to the job's --output file), and exits
with the Pod's exit code, so `sacct` shows what the container did. scancel and the time
limit send SIGTERM: attach deletes the Pod with its grace period (below Slurm's KillWait),
so the container gets SIGTERM too, copies what the job prints until its container is gone,
then exits; the epilog removes the rest.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO

from bridge.collect.results import read_status, results_dir
from bridge.errors import BridgeError
from bridge.kubernetes.access import ATTACH_KUBECONFIG
from bridge.kubernetes.client import Kube, load_client
from bridge.kubernetes.objects import collection_path, object_path
from bridge.kubernetes.podstatus import job_termination
from bridge.kubernetes.render import ObjectNames
from bridge.settings import Settings
from bridge.slurm.jobinfo import array_task_name

EXIT_REJECTED = 1
EXIT_LOST = 1
EXIT_OOM = 128 + signal.SIGKILL
_TERMINAL = ("Succeeded", "Failed")


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


def _follow_log(kube: Kube, namespace: str, pod: str, copy: _LogCopy) -> None:
    """Follow the job container's log until the Pod has ended and its log was read to the end.

    A stream broken by an API server or kubelet restart is opened again and the bytes already
    written are skipped, so the output has every line once. Once the container has ended, a
    followed log returns all of it and closes, which completes the copy.
    """
    path = object_path("Pod", pod, namespace) + "/log"
    while not copy.stopped:
        skip = copy.written
        try:
            for chunk in kube.stream_lines(path, query={"container": "job", "follow": "true"}, read_timeout_s=3600 * 24):
                fresh, skip = chunk[skip:], max(0, skip - len(chunk))
                if fresh and not copy.write(fresh):
                    return
            if _ended(kube, namespace, pod):
                return
        except BridgeError:
            pass
        time.sleep(1.0)


def _ended(kube: Kube, namespace: str, pod: str) -> bool:
    try:
        current = kube.get_or_none(object_path("Pod", pod, namespace))
    except BridgeError:
        return False
    return current is None or job_termination(current) is not None


def _finish_log(kube: Kube, namespace: str, pod: str, copy: _LogCopy, follower: threading.Thread) -> None:
    """After the Pod ended: the follower completes the copy by itself (a kubelet closes the
    stream once the container's log is read); a node that never closes it gets one full read."""
    follower.join(timeout=5.0)
    written = copy.stop()
    if not follower.is_alive():
        return
    try:
        full = kube.request_text("GET", object_path("Pod", pod, namespace) + "/log", query={"container": "job"})
    except BridgeError:
        _say(copy.out, "the end of the job's log could not be read: see pod.log in the job's results folder")
        return
    rest = full.encode("utf-8")[written:]
    if rest:
        copy.out.write(rest)
        copy.out.flush()


def _wait_terminal(kube: Kube, namespace: str, pod: str) -> dict[str, Any] | None:
    """Follow the Pod by watch until it ends; None if it disappears first.

    The API server may go away meanwhile (restart, upgrade): the container runs on, so this
    keeps asking until it answers again; only the Pod's own absence (404) ends the wait early.
    """
    path = collection_path("Pod", namespace)
    while True:
        try:
            current = kube.get_or_none(object_path("Pod", pod, namespace))
            if current is None:
                return None
            if (current.get("status") or {}).get("phase") in _TERMINAL:
                return current
            for event in kube.watch(path, query={"fieldSelector": f"metadata.name={pod}",
                                                 "resourceVersion": current["metadata"]["resourceVersion"]},
                                    timeout_s=300):
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


def _stop_pod(kube: Kube, namespace: str, pod: str, grace_s: int) -> None:
    # Gone already, or the API server is away: the epilog deletes it.
    with contextlib.suppress(BridgeError):
        kube.delete(object_path("Pod", pod, namespace), grace_period_s=grace_s)


def run_attach(settings: Settings, job_id: str, user: str, restart_count: int, out: BinaryIO | None = None,
               signals: _Signals | None = None, results_name: str | None = None) -> int:
    """`results_name`: the job's folder in results/<user>/ (`<arrayjob>_<task>` for an array
    task); the job id when None."""
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
    copy = _LogCopy(out)
    follower = threading.Thread(target=_follow_log, args=(kube, namespace, pod, copy), daemon=True)
    follower.start()
    result: list[dict[str, Any] | None] = []
    waiter = threading.Thread(target=lambda: result.append(_wait_terminal(kube, namespace, pod)), daemon=True)
    waiter.start()
    while waiter.is_alive() and (signals is None or signals.received is None):
        waiter.join(timeout=0.2)
    if signals is not None and signals.received is not None:
        # scancel or the time limit: the container gets SIGTERM now and SIGKILL after the grace
        # period; what it prints meanwhile (a trap's last words) still reaches the output.
        grace_s = settings.kubernetes.termination_grace_period_s
        _stop_pod(kube, namespace, pod, grace_s)
        waiter.join(timeout=grace_s + 5)
        follower.join(timeout=1.0)
        copy.stop()
        _say(out, f"job {job_id} ended by {signal.Signals(signals.received).name}")
        return 128 + signals.received
    final = result[0] if result else None
    _finish_log(kube, namespace, pod, copy, follower)
    if final is None:
        _say(out, f"Pod {pod} disappeared before it finished")
        return EXIT_LOST
    code, reason = _termination(final)
    if reason == "OOMKilled" and code == 0:
        # A process of the job was killed for memory but the script went on: as under Slurm's
        # own cgroup enforcement, the job did not complete.
        code = EXIT_OOM
    if code != 0:
        why = f" ({reason}: {_REASONS[reason]})" if reason in _REASONS else (f" ({reason})" if reason else "")
        _say(out, f"Pod {pod} ended {final['status'].get('phase')} with exit code {code}{why}")
    return code


def attach_main(settings: Settings) -> int:
    job_id = os.environ.get("SLURM_JOB_ID", "")
    user = os.environ.get("SLURM_JOB_USER") or os.environ.get("USER", "")
    restart = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
    # slurmd sets these for an array task's batch step; the prolog's folder is named after them.
    results_name = array_task_name(os.environ.get("SLURM_ARRAY_JOB_ID", ""), os.environ.get("SLURM_ARRAY_TASK_ID", ""))
    if not job_id:
        print("skbridge attach: run by Slurm as a bridge job's batch step (SLURM_JOB_ID is unset)", file=sys.stderr)
        return 2

    signals = _Signals()
    signal.signal(signal.SIGTERM, signals.handler)
    signal.signal(signal.SIGINT, signals.handler)
    return run_attach(settings, job_id, user, restart, signals=signals, results_name=results_name or None)


def attach_command(config: Path | None) -> int:
    """`skbridge attach [--config FILE]`: load the settings, then follow the job's Pod."""
    from bridge.settings import load_settings

    try:
        settings = load_settings(config)
    except BridgeError as exc:
        print(f"skbridge attach: {exc}", file=sys.stderr)
        return 2
    return attach_main(settings)
