"""Gather what a finished job leaves: Pod log, status, events, results files, summary, SHA256SUMS.

Everything lands in results/<user>/<jobid>/, owned by the user. Re-running overwrites the
same files with the same content, so a repeated epilog (slurmctld restart) or the reaper
collecting after a killed epilog never duplicates anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.collect.results import write_atomic
from bridge.kubernetes.client import Kube, KubeError
from bridge.kubernetes.objects import object_path
from bridge.kubernetes.podstatus import job_termination
from bridge.kubernetes.render import HOME_MOUNT_PATH, ObjectNames
from bridge.log import get_logger
from bridge.settings import Settings

log = get_logger(component="collect")

SUMS_FILE = "SHA256SUMS"
RESULTS_SUBDIR = "results"
MAX_RESULTS_BYTES = 20 * 2**30
_CHUNK = 1 << 20


@dataclass
class Collected:
    files: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    exit_code: int | None = None
    pod_phase: str | None = None
    pod: dict[str, Any] | None = None
    # Files to write into the job's results folder, by name: written by the user's identity
    # in one go (`write_documents`) with the rest, since every switch to the user is a fork.
    documents: dict[str, bytes] = field(default_factory=dict)
    # A multi-node job's ranks 1..n-1: exit code by rank (None: not ended or not found).
    rank_exit_codes: dict[int, int | None] = field(default_factory=dict)


def collect_pod(kube: Kube, namespace: str, pod_name: str, *, expect_labels: dict[str, str]) -> Collected:
    """Read the Pod's final object, log and events (as root, through the bridge's credentials);
    only a Pod whose labels carry `expect_labels` (its job and owner) counts as found."""
    out = Collected()
    pod = kube.get_or_none(object_path("Pod", pod_name, namespace))
    labels = ((pod or {}).get("metadata") or {}).get("labels") or {}
    if pod is not None and any(labels.get(key) != value for key, value in expect_labels.items()):
        log.error("Pod does not belong to the job; not collected", pod=pod_name, labels=labels, expected=expect_labels)
        out.notes.append(f"Pod {pod_name} belongs to another job or user: nothing collected from it")
        return out
    out.pod = pod
    if pod is None:
        out.notes.append(f"Pod {pod_name} not found: nothing to collect from Kubernetes")
        return out
    out.pod_phase = (pod.get("status") or {}).get("phase")
    ended = job_termination(pod)
    out.exit_code = ended.exit_code if ended is not None else None
    out.documents["pod.json"] = _json(pod)
    try:
        log_text = kube.request_text("GET", object_path("Pod", pod_name, namespace) + "/log",
                                     query={"container": "job", "limitBytes": 64 * 2**20})
    except KubeError as exc:
        log_text = ""
        out.notes.append(f"Pod log unavailable: {exc}")
    out.documents["pod.log"] = log_text.encode("utf-8")
    try:
        events = kube.request("GET", f"/api/v1/namespaces/{namespace}/events",
                              query={"fieldSelector": f"involvedObject.name={pod_name}"})
        items = sorted(events.get("items") or [], key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
    except KubeError as exc:
        items = []
        out.notes.append(f"events unavailable: {exc}")
    out.documents["events.json"] = _json(items)
    out.files += list(out.documents)
    return out


def rank_pods_of(pod_names: Sequence[str], rank0: str) -> list[str]:
    """Rank 0's fellow Pods among `pod_names` (`<rank0>-rank<k>`), in rank order."""
    ranks = [(rank, name) for name in pod_names for stem, rank in [ObjectNames.split_rank(name)]
             if stem == rank0 and rank > 0]
    return [name for _rank, name in sorted(ranks)]


def collect_ranks(kube: Kube, namespace: str, rank_pods: Sequence[str], into: Collected, *,
                  expect_labels: dict[str, str]) -> None:
    """A multi-node job's other ranks: their log, object and events as rank<k>-pod.log etc."""
    for rank, name in enumerate(rank_pods, start=1):
        part = collect_pod(kube, namespace, name, expect_labels=expect_labels)
        for document, data in part.documents.items():
            into.documents[f"rank{rank}-{document}"] = data
            into.files.append(f"rank{rank}-{document}")
        into.notes += [f"rank {rank}: {note}" for note in part.notes]
        into.rank_exit_codes[rank] = part.exit_code


def write_documents(job_dir: Path, documents: dict[str, bytes]) -> None:
    """Run as the user: write what `collect_pod` read into the job's results folder."""
    for name, data in documents.items():
        write_atomic(job_dir / name, data)


def host_path_of(settings: Settings, user: str, container_path: str) -> Path | None:
    """Where a path inside the Pod lives on the NAS, if it is under the user's mounted directory."""
    base = Path(HOME_MOUNT_PATH)
    target = Path(os.path.normpath(container_path))
    if target != base and base not in target.parents:
        return None
    return settings.nas.home_root / user / target.relative_to(base)


def _walk_regular_files(root: Path) -> Iterator[Path]:
    # Never follow symlinks: the user controls this tree and root is doing the copying.
    for directory, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(directory) / name
            if stat.S_ISREG(path.lstat().st_mode):
                yield path


def copy_results(source: Path, dest: Path, *, limit_bytes: int = MAX_RESULTS_BYTES) -> tuple[list[str], list[str]]:
    """Copy regular files under `source` into `dest`; returns (files, notes). Run as the user."""
    copied: list[str] = []
    notes: list[str] = []
    try:
        source_stat = source.lstat()
    except OSError:
        return copied, [f"results folder {source} does not exist on the NAS"]
    if not stat.S_ISDIR(source_stat.st_mode):
        return copied, [f"results path {source} is not a directory"]
    total = 0
    for path in _walk_regular_files(source):
        relative = path.relative_to(source)
        target = dest / relative
        st = path.lstat()
        if total + st.st_size > limit_bytes:
            notes.append(f"stopped at {relative}: results exceed {limit_bytes // 2**30} GiB")
            break
        target.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        try:
            existing = target.lstat()
            if existing.st_size == st.st_size and existing.st_mtime_ns == st.st_mtime_ns:
                copied.append(str(relative))
                total += st.st_size
                continue
        except FileNotFoundError:
            pass
        try:
            _copy_file(path, target, st.st_mtime_ns)
        except OSError as exc:
            # A full or failing NAS: say which file stopped the copy and keep what came back
            # (summary.json and SHA256SUMS are small and may still fit).
            notes.append(f"stopped at {relative}: {exc.strerror or exc}")
            break
        copied.append(str(relative))
        total += st.st_size
    return copied, notes


def _copy_file(source: Path, target: Path, mtime_ns: int) -> None:
    src_fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.unlink(missing_ok=True)
    dst_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o640)
    try:
        while chunk := os.read(src_fd, _CHUNK):
            view = memoryview(chunk)
            while view:
                view = view[os.write(dst_fd, view):]
    except OSError:
        tmp.unlink(missing_ok=True)  # no half file left to fill the NAS further
        raise
    finally:
        os.close(src_fd)
        os.close(dst_fd)
    os.utime(tmp, ns=(mtime_ns, mtime_ns))
    tmp.replace(target)


def write_checksums(job_dir: Path) -> list[str]:
    """SHA256SUMS over every file collected (sha256sum -c compatible). Run as the user."""
    lines = []
    for path in _walk_regular_files(job_dir):
        relative = path.relative_to(job_dir).as_posix()
        if relative == SUMS_FILE or any(part.startswith(".") for part in path.relative_to(job_dir).parts):
            continue
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
        lines.append(f"{digest.hexdigest()}  {relative}")
    write_atomic(job_dir / SUMS_FILE, ("\n".join(lines) + "\n").encode("utf-8"))
    return lines


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=2, sort_keys=True, default=str).encode("utf-8") + b"\n"
