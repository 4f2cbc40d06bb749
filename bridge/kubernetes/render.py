"""Render pod-template.yaml into the Kubernetes objects of one job attempt.

The template is the admin's to edit, so its failures must name its line: Jinja2 syntax
and runtime errors report the template line, YAML errors the rendered line.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Protocol

import jinja2
import yaml

from bridge.errors import ConfigError
from bridge.resources import resource_path
from bridge.settings import Settings
from bridge.slurm.jobinfo import JobAllocation

MANAGED_BY = "slurm-k8s-bridge"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_JOB_ID = "slurm.job-id"
LABEL_USER = "slurm.user"
LABEL_RESTART = "slurm.restart-count"
LABEL_ARRAY_JOB_ID = "slurm.array-job-id"
LABEL_ARRAY_TASK_ID = "slurm.array-task-id"
ANNOTATION_SPEC_HASH = "skbridge.io/spec-hash"
# The start gate (see pod-template.yaml): the prolog's last act sets it to START_GATE_OPEN.
ANNOTATION_START = "skbridge.io/start"
START_GATE_OPEN = "go"
ANNOTATION_SCRIPT = "skbridge.io/script"
# A multi-node job's rendezvous (MASTER_ADDR=...) and hostfile, set with the start gate once
# every rank's Pod has its address; the gate loads the first into the script's environment.
ANNOTATION_RENDEZVOUS = "skbridge.io/rendezvous"
ANNOTATION_HOSTFILE = "skbridge.io/hostfile"
MASTER_PORT = 29500
# Kubernetes allows 256 KiB of annotations per object; a larger script goes in a ConfigMap.
SCRIPT_ANNOTATION_MAX_BYTES = 192 * 1024
HOME_MOUNT_PATH = "/workspace"
RANK_SUFFIX = "-rank"


class MountLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def container_path(self) -> str: ...
    @property
    def read_only(self) -> bool: ...


class DirectivesLike(Protocol):
    """What rendering needs of a parsed job file (bridge.jobfile.spec.JobSpec)."""

    @property
    def image(self) -> str: ...
    @property
    def workdir(self) -> str: ...
    @property
    def env(self) -> Sequence[tuple[str, str]]: ...
    @property
    def mounts(self) -> Sequence[Any]: ...
    @property
    def shm(self) -> str | None: ...
    @property
    def results(self) -> str | None: ...


@dataclass(frozen=True)
class ObjectNames:
    pod: str
    configmap: str
    home_claim: str
    attempt: str = ""
    """`skb-<job>-r<restart>`: rank 0's Pod, and the stem of every name of the attempt."""

    @classmethod
    def for_attempt(cls, job_id: str, restart_count: int, rank: int = 0) -> ObjectNames:
        """A multi-node job's rank k > 0 has its own Pod (`<attempt>-rank<k>`); the volumes,
        the script's ConfigMap and the account are the attempt's, shared by all ranks."""
        base = f"skb-{job_id}-r{restart_count}"
        return cls(pod=base if rank == 0 else f"{base}{RANK_SUFFIX}{rank}", configmap=base, home_claim=f"{base}-home",
                   attempt=base)

    @staticmethod
    def split_rank(pod_name: str) -> tuple[str, int]:
        """`skb-7-r0-rank2` -> ("skb-7-r0", 2); rank 0's Pod (the attempt's own name) -> (name, 0).
        deploy/kubernetes/20-admission.yaml reads the names the same way."""
        stem, found, number = pod_name.rpartition(RANK_SUFFIX)
        if found and number.isdigit() and not number.startswith("0"):
            return stem, int(number)
        return pod_name, 0

    @property
    def service_account(self) -> str:
        return self.service_account_for(self.attempt or self.pod)

    @staticmethod
    def service_account_for(pod: str) -> str:
        """The Pod runs as this per-attempt account; `attach` holds a token of it bound to the Pod."""
        return f"{pod}-attach"

    def volume_claim(self, volume: str) -> str:
        return f"{self.attempt or self.pod}-vol-{volume}"


@dataclass(frozen=True)
class RenderedJob:
    names: ObjectNames
    objects: list[dict[str, Any]]  # creation order: ConfigMap (a large script only), PV/PVC pairs, Pod(s)
    manifest_yaml: str

    @property
    def pod(self) -> dict[str, Any]:
        """Rank 0's Pod (the only one of a one-node job)."""
        return next(obj for obj in self.objects if obj["kind"] == "Pod")

    @property
    def pod_names(self) -> list[str]:
        """Every rank's Pod, rank 0 first."""
        return [obj["metadata"]["name"] for obj in self.objects if obj["kind"] == "Pod"]


def bridge_labels(allocation: JobAllocation) -> dict[str, str]:
    """Every object of the attempt carries these. An array task's objects are named and found by
    the task's own job id (unique, as Slurm's SLURM_JOB_ID); the array labels group them."""
    labels = {
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_JOB_ID: allocation.job_id,
        LABEL_USER: allocation.user,
        LABEL_RESTART: str(allocation.restart_count),
    }
    if allocation.results_name != allocation.job_id:
        labels |= {LABEL_ARRAY_JOB_ID: allocation.array_job_id, LABEL_ARRAY_TASK_ID: allocation.array_task_id}
    return labels


@lru_cache(maxsize=4)
def _environment(search_path: tuple[str, ...]) -> jinja2.Environment:
    # A loader lets an admin's template `{% extends "pod-template.yaml" %}` and override blocks.
    return jinja2.Environment(  # noqa: S701 - renders YAML, not HTML; values are quoted with tojson
        loader=jinja2.FileSystemLoader(list(search_path)), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, auto_reload=True,
    )


def _load_template(path: Path) -> jinja2.Template:
    shipped = resource_path("pod-template.yaml").parent
    search = tuple(dict.fromkeys([str(path.parent), str(shipped)]))
    try:
        return _environment(search).get_template(path.name)
    except jinja2.TemplateSyntaxError as exc:
        raise ConfigError(f"{exc.filename or path}:{exc.lineno}: template syntax error: {exc.message}") from exc
    except jinja2.TemplateNotFound as exc:
        raise ConfigError(f"Pod template {exc.name} not found (looked in {', '.join(search)})") from exc


def template_path(settings: Settings) -> Path:
    return settings.kubernetes.pod_template or resource_path("pod-template.yaml")


def _template_line(tb: TracebackType | None) -> tuple[str, int] | None:
    where = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith((".yaml", ".yml", ".j2")):
            where = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return where


def pod_workdir(spec: DirectivesLike, allocation: JobAllocation, home_path: Path) -> str:
    """Where the script starts in the Pod. #K8S_WORKDIR when written; otherwise the job's own
    working directory, as sbatch would have used it on the host, when it lies in the owner's
    NAS folder (mounted at HOME_MOUNT_PATH); otherwise HOME_MOUNT_PATH."""
    if getattr(spec, "workdir_given", True) or not allocation.work_dir:
        return spec.workdir
    work = PurePosixPath(allocation.work_dir)
    home = PurePosixPath(str(home_path))
    if not work.is_absolute() or ".." in work.parts or not (work == home or home in work.parents):
        return spec.workdir
    return str(PurePosixPath(HOME_MOUNT_PATH) / work.relative_to(home))


def stamp_spec_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Annotate `obj` with a hash of its content: a re-run of the prolog that meets an object of
    the same name (409) keeps it only when the hash matches."""
    digest = hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
    obj.setdefault("metadata", {}).setdefault("annotations", {})[ANNOTATION_SPEC_HASH] = digest
    return obj


def render_job(
    settings: Settings,
    allocation: JobAllocation,
    spec: DirectivesLike,
    script: str,
    *,
    kube_node: str | None = None,
    rank: int = 0,
) -> RenderedJob:
    """`kube_node`: the Kubernetes node the Pod is pinned to (bridge.kubernetes.nodemap); the
    settings' node_map (identity when absent) when None. `rank`: which allocated node (a
    multi-node job renders once per node; `render_job_ranks`)."""
    kube = settings.kubernetes
    nas = settings.nas
    path = template_path(settings)
    template = _load_template(path)
    names = ObjectNames.for_attempt(allocation.job_id, allocation.restart_count, rank)
    node = allocation.nodes[rank]
    home_path = nas.home_root / allocation.user
    mounts = []
    claims = [{"name": names.home_claim, "host_path": str(home_path), "read_only": False}]
    for mount in spec.mounts:
        volume = nas.shared_volumes[mount.name]
        read_only = bool(mount.read_only or volume.read_only)
        claim = names.volume_claim(mount.name)
        host = str(nas.shared_volume_path(mount.name))
        mounts.append({"name": mount.name, "container_path": mount.container_path, "read_only": read_only,
                       "claim": claim, "host_path": host})
        claims.append({"name": claim, "host_path": host, "read_only": read_only})
    context = {
        "job": {
            "id": allocation.job_id, "name": allocation.name, "user": allocation.user, "uid": allocation.uid,
            "gid": allocation.gid, "groups": list(allocation.groups), "partition": allocation.partition,
            "restart_count": allocation.restart_count, "time_limit_minutes": allocation.time_limit_minutes,
            "node": node.node, "kube_node": kube_node or kube.kube_node(node.node), "cpus": node.cpus,
            "memory_mib": node.memory_mib, "gpus": node.gpus, "gpu_type": node.gpu_type,
            "gpu_indices": list(node.gpu_indices),
            "array_job_id": allocation.array_job_id if allocation.results_name != allocation.job_id else "",
            "array_task_id": allocation.array_task_id if allocation.results_name != allocation.job_id else "",
            "array_env": [list(pair) for pair in allocation.array_env],
            "node_rank": rank, "nnodes": len(allocation.nodes), "nodes": [n.node for n in allocation.nodes],
            "master_port": MASTER_PORT,
        },
        "spec": {"image": spec.image, "workdir": pod_workdir(spec, allocation, home_path),
                 "env": [list(pair) for pair in spec.env], "shm": spec.shm, "results": spec.results, "mounts": mounts},
        "names": {"pod": names.pod, "configmap": names.configmap, "home_claim": names.home_claim,
                  "service_account": names.service_account},
        "labels": bridge_labels(allocation),
        "claims": claims,
        "script": script,
        "script_in_annotation": len(script.encode("utf-8")) <= SCRIPT_ANNOTATION_MAX_BYTES,
        "cfg": {"namespace": kube.namespace, "gpu_resource": kube.gpu_resource, "gpu_mode": kube.gpu_mode,
                "termination_grace_period_s": kube.termination_grace_period_s, "home_path": str(home_path),
                "nas_server": nas.server, "home_mount_path": HOME_MOUNT_PATH},
    }
    try:
        text = template.render(context)
    except jinja2.TemplateError as exc:
        found = _template_line(exc.__traceback__)
        where = f"{found[0]}:{found[1]}" if found else str(path)
        raise ConfigError(f"{where}: template error: {exc}") from exc
    try:
        objects = [doc for doc in yaml.safe_load_all(text) if doc]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        rendered_line = f" (rendered line {mark.line + 1}: {text.splitlines()[mark.line]!r})" if mark else ""
        raise ConfigError(f"{path}: rendered template is not valid YAML{rendered_line}: {exc}") from exc
    for obj in objects:
        stamp_spec_hash(obj)
    if sum(1 for obj in objects if obj.get("kind") == "Pod") != 1:
        raise ConfigError(f"{path}: the template must render exactly one Pod")
    return RenderedJob(names=names, objects=objects, manifest_yaml=text)


def render_job_ranks(settings: Settings, allocation: JobAllocation, spec: DirectivesLike, script: str,
                     kube_nodes: Sequence[str]) -> RenderedJob:
    """Every allocated node's Pod (rank k on `kube_nodes[k]`) with the attempt's shared objects
    once: what rank 0 renders besides its Pod (volumes, a large script's ConfigMap)."""
    first = render_job(settings, allocation, spec, script, kube_node=kube_nodes[0])
    if len(allocation.nodes) == 1:
        return first
    objects = list(first.objects)
    texts = [first.manifest_yaml]
    for rank in range(1, len(allocation.nodes)):
        other = render_job(settings, allocation, spec, script, kube_node=kube_nodes[rank], rank=rank)
        objects.append(other.pod)
        texts.append(f"# rank {rank}: its Pod (the objects above are the attempt's, shared)\n"
                     + yaml.safe_dump(other.pod, sort_keys=False))
    return RenderedJob(names=first.names, objects=objects, manifest_yaml="\n---\n".join(texts))
