"""Create, find, wait for and remove the objects of one job attempt.

Idempotent by construction: names are deterministic, a 409 on create is answered by
reading the object and comparing its spec hash, and deletion treats 404 as done.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from bridge.errors import PermanentError, TemporaryError
from bridge.kubernetes.client import Kube, KubeError, KubeNotFound
from bridge.kubernetes.concurrent import run_concurrently
from bridge.kubernetes.render import (
    ANNOTATION_SPEC_HASH,
    ANNOTATION_START,
    LABEL_JOB_ID,
    LABEL_MANAGED_BY,
    LABEL_RESTART,
    MANAGED_BY,
    START_GATE_OPEN,
    RenderedJob,
)

ANNOTATION_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"

# Deletion order: the Pod first (it holds the claims), the PV last (its claim protects it).
KIND_ORDER = ("Pod", "ServiceAccount", "RoleBinding", "Role", "ConfigMap", "PersistentVolumeClaim", "PersistentVolume")


@dataclass(frozen=True)
class ObjectRef:
    kind: str
    name: str
    namespace: str | None

    @property
    def path(self) -> str:
        return object_path(self.kind, self.name, self.namespace)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


_COLLECTIONS = {
    "Pod": ("/api/v1", "pods", True),
    "ConfigMap": ("/api/v1", "configmaps", True),
    "PersistentVolumeClaim": ("/api/v1", "persistentvolumeclaims", True),
    "PersistentVolume": ("/api/v1", "persistentvolumes", False),
    "ServiceAccount": ("/api/v1", "serviceaccounts", True),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles", True),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings", True),
}


def collection_path(kind: str, namespace: str | None) -> str:
    prefix, plural, namespaced = _COLLECTIONS[kind]
    return f"{prefix}/namespaces/{namespace}/{plural}" if namespaced else f"{prefix}/{plural}"


def object_path(kind: str, name: str, namespace: str | None) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


def ref_of(obj: dict[str, Any], default_namespace: str) -> ObjectRef:
    kind = obj["kind"]
    namespaced = _COLLECTIONS[kind][2]
    return ObjectRef(kind, obj["metadata"]["name"], obj["metadata"].get("namespace", default_namespace) if namespaced else None)


@dataclass(frozen=True)
class Made:
    ref: ObjectRef
    created: bool  # False: found from an earlier run of the same hook and reused
    obj: dict[str, Any]


def create_objects(
    kube: Kube,
    rendered: RenderedJob,
    namespace: str,
    made: list[Made],
    *,
    extra: Sequence[dict[str, Any]] = (),
) -> None:
    """Create every object of the attempt (the rendered ones and `extra`), appending to `made`
    as it goes, so a failure midway still knows what to remove. Identical leftovers of an
    earlier run are reused.

    Requests go out side by side where nothing orders them. The Pod's path has three steps:
    everything it needs, then the volumes (their claimRef carries the claim's UID, so each
    binds to its claim alone), then, once the binding is marked complete, the Pod. Roles
    and RoleBindings go their own way beside it: RBAC's escalation checks read the API
    server's watch caches, which can take up to a progress-notify tick (100 ms) to catch up.
    """
    objects = [*rendered.objects, *extra]
    rbac_kinds = ("Role", "RoleBinding")

    def create_all(wave: list[dict[str, Any]]) -> None:
        run_concurrently([partial(_create_one, kube, obj, namespace, made) for obj in wave])

    def pod_path() -> None:
        create_all([obj for obj in objects if obj["kind"] not in ("PersistentVolume", "Pod", *rbac_kinds)])
        claim_uids = {m.ref.name: m.obj["metadata"]["uid"] for m in made if m.ref.kind == "PersistentVolumeClaim"}
        create_all([_with_claim_uid(obj, claim_uids) for obj in objects if obj["kind"] == "PersistentVolume"])
        _complete_binding(kube, made)
        _wait_claims_bound(kube, made)
        create_all([obj for obj in objects if obj["kind"] == "Pod"])

    rbac_path: Callable[[], None] = partial(create_all, [obj for obj in objects if obj["kind"] in rbac_kinds])
    run_concurrently([pod_path, rbac_path])


def _with_claim_uid(volume: dict[str, Any], claim_uids: dict[str, str]) -> dict[str, Any]:
    claim_ref = volume["spec"].get("claimRef") or {}
    if claim_ref.get("name") not in claim_uids:
        return volume
    return {**volume, "spec": {**volume["spec"], "claimRef": {**claim_ref, "uid": claim_uids[claim_ref["name"]]}}}


def _create_one(kube: Kube, obj: dict[str, Any], namespace: str, made: list[Made]) -> None:
    ref = ref_of(obj, namespace)
    try:
        made.append(Made(ref, True, kube.request("POST", collection_path(ref.kind, ref.namespace), body=obj)))
        return
    except KubeError as exc:
        if exc.status != 409:
            raise
    existing = kube.get_or_none(ref.path)
    wanted = obj["metadata"]["annotations"][ANNOTATION_SPEC_HASH]
    found = ((existing or {}).get("metadata", {}).get("annotations") or {}).get(ANNOTATION_SPEC_HASH)
    if existing is not None and found == wanted and not existing["metadata"].get("deletionTimestamp"):
        made.append(Made(ref, False, existing))  # a slurmctld restart re-ran the prolog: keep it
        return
    raise TemporaryError(f"{ref} exists with a different spec (hash {found}, want {wanted}); "
                         "it will be replaced once the old one is removed")


def _complete_binding(kube: Kube, made: list[Made]) -> None:
    """Mark each claim bound once its volume (claimRef with the claim's UID) exists.

    The scheduler takes a claim with a volumeName and the bind-completed annotation as bound,
    so the Pod is placed at once. Marked at creation, the claim would race its volume: a PV
    controller that sees the claim first declares it Lost and the Pod sits out a scheduler
    back-off; left unmarked, binding waits for the controller's next resync. So the volume
    is made visible first (a read at its resourceVersion returns only once the API server's
    watch cache, which feeds every controller, holds it), then the claim is marked.
    """
    run_concurrently([partial(kube.request, "GET", item.ref.path, query={"resourceVersion": version})
                      for item in made if item.ref.kind == "PersistentVolume"
                      and (version := item.obj["metadata"].get("resourceVersion"))])
    mark = {"metadata": {"annotations": {ANNOTATION_BIND_COMPLETED: "yes"}}}
    run_concurrently([partial(kube.request, "PATCH", item.ref.path, body=mark, content_type="application/merge-patch+json")
                      for item in made if item.ref.kind == "PersistentVolumeClaim"
                      and ANNOTATION_BIND_COMPLETED not in (item.obj["metadata"].get("annotations") or {})])


def _wait_claims_bound(kube: Kube, made: list[Made], *, timeout_s: float = 10.0) -> None:
    """Wait until the PV controller has set each claim's phase to Bound (milliseconds after the
    mark above). A kubelet that meets the Pod first finds "PVC is not bound" and retries only
    after a back-off of about 10 s, which the job would otherwise wait out on its allocation."""

    def bound(item: Made) -> None:
        pause_s = 0.01
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            claim = kube.get_or_none(item.ref.path)
            if claim is None or (claim.get("status") or {}).get("phase") == "Bound":
                return
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.2)

    run_concurrently([partial(bound, item) for item in made if item.ref.kind == "PersistentVolumeClaim"
                      and (item.obj.get("status") or {}).get("phase") != "Bound"])


def attempt_selector(job_id: str, restart_count: int | None = None) -> str:
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB_ID}={job_id}"
    if restart_count is not None:
        selector += f",{LABEL_RESTART}={restart_count}"
    return selector


def list_job_objects(kube: Kube, namespace: str, selector: str) -> list[ObjectRef]:
    found: list[ObjectRef] = []
    for kind in KIND_ORDER:
        listing = kube.request("GET", collection_path(kind, namespace if _COLLECTIONS[kind][2] else None),
                               query={"labelSelector": selector})
        for item in listing.get("items") or []:
            found.append(ObjectRef(kind, item["metadata"]["name"], item["metadata"].get("namespace")))
    return found


def delete_objects(kube: Kube, refs: list[ObjectRef], *, grace_period_s: int | None = None) -> list[ObjectRef]:
    """Issue deletes in dependency order; returns those that existed."""
    deleted: list[ObjectRef] = []
    for ref in sorted(refs, key=lambda r: KIND_ORDER.index(r.kind)):
        if kube.delete(ref.path, grace_period_s=grace_period_s if ref.kind == "Pod" else None):
            deleted.append(ref)
    return deleted


def wait_gone(kube: Kube, refs: list[ObjectRef], *, timeout_s: float, max_pause_s: float = 0.5) -> list[ObjectRef]:
    """Poll until every object is gone; returns the ones still present at the deadline.

    Objects go in dependency order (the Pod holds its claims, each claim its volume), so only
    the first one left is asked about until it is gone, with pauses growing from 50 ms to
    `max_pause_s`. Asking about all of them every 0.2 s, 16 epilogs at once sent the API
    server some 500 GETs a second while the Pods' containers stopped.
    """
    deadline = time.monotonic() + timeout_s
    remaining = sorted(refs, key=lambda r: KIND_ORDER.index(r.kind))
    pause_s = 0.05
    while remaining:
        if kube.get_or_none(remaining[0].path) is None:
            remaining = remaining[1:]
            pause_s = 0.05
            continue
        if time.monotonic() > deadline:
            return [ref for ref in remaining if kube.get_or_none(ref.path) is not None]
        time.sleep(min(pause_s, max(0.0, deadline - time.monotonic())))
        pause_s = min(pause_s * 2, max_pause_s)
    return remaining


@dataclass(frozen=True)
class PodVerdict:
    ready: bool
    reason: str = ""
    permanent: bool = False
    address: str | None = None
    """A Ready Pod's address (status.podIP): a multi-node job's rendezvous needs no second read."""


_FATAL_WAITING = {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError",
                  "CreateContainerError", "ErrImageNeverPull", "RunContainerError"}


def judge_pod(pod: dict[str, Any], *, unschedulable_for_s: float, unschedulable_grace_s: float) -> PodVerdict | None:
    """Ready, failed, or None while there is still reason to wait."""
    status = pod.get("status") or {}
    phase = status.get("phase")
    conditions = {c.get("type"): c for c in status.get("conditions") or []}
    if phase in ("Succeeded", "Failed") or conditions.get("Ready", {}).get("status") == "True":
        # A short job may finish before we look: attach reports it.
        return PodVerdict(ready=True, address=status.get("podIP"))
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _FATAL_WAITING:
            return PodVerdict(False, f"{waiting.get('reason')}: {waiting.get('message', '')}".strip(), permanent=False)
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable" \
            and unschedulable_for_s >= unschedulable_grace_s:
        return PodVerdict(False, f"Kubernetes has no room for the Pod: {scheduled.get('message', '')}")
    return None


def wait_pod_ready(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    timeout_s: float,
    unschedulable_grace_s: float,
) -> PodVerdict:
    """Follow the Pod by watch (not by sleeping) until Ready, a failure, or the deadline."""
    deadline = time.monotonic() + timeout_s
    unschedulable_since: float | None = None
    path = collection_path("Pod", namespace)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return PodVerdict(False, f"Pod {name} not Ready after {timeout_s:.0f}s")
        pod = kube.get_or_none(object_path("Pod", name, namespace))
        if pod is None:
            raise PermanentError(f"Pod {name} vanished while starting")
        version = pod["metadata"]["resourceVersion"]
        verdict, unschedulable_since = _judge(pod, unschedulable_since, unschedulable_grace_s)
        if verdict is not None:
            return verdict
        # Wait for the next change; wake up by the unschedulable grace at the latest.
        window = min(remaining, unschedulable_grace_s if unschedulable_since is not None else remaining)
        for event in kube.watch(path, query={"fieldSelector": f"metadata.name={name}", "resourceVersion": version},
                                timeout_s=max(1.0, window)):
            if event.get("type") == "DELETED":
                raise PermanentError(f"Pod {name} was deleted while starting")
            obj = event.get("object") or {}
            if obj.get("kind") != "Pod":
                break  # an ERROR event (e.g. resource version too old): re-read and watch again
            verdict, unschedulable_since = _judge(obj, unschedulable_since, unschedulable_grace_s)
            if verdict is not None:
                return verdict
            if time.monotonic() > deadline:
                break


def open_start_gate(kube: Kube, namespace: str, name: str, *, with_annotations: dict[str, str] | None = None) -> None:
    """Let the Pod's script start (pod-template.yaml waits for this annotation). Only the prolog,
    once everything else has succeeded, calls this: a job Slurm requeues never starts its script.
    `with_annotations` arrive in the same update (the kubelet writes a downwardAPI volume's
    files together), so a multi-node rank reads its rendezvous before it starts."""
    mark = {"metadata": {"annotations": {**(with_annotations or {}), ANNOTATION_START: START_GATE_OPEN}}}
    try:
        kube.request("PATCH", object_path("Pod", name, namespace), body=mark,
                     content_type="application/merge-patch+json")
    except KubeNotFound as exc:
        raise PermanentError(f"Pod {name} vanished before its script could start") from exc


def _judge(pod: dict[str, Any], since: float | None, grace_s: float) -> tuple[PodVerdict | None, float | None]:
    conditions = {c.get("type"): c for c in (pod.get("status") or {}).get("conditions") or []}
    scheduled = conditions.get("PodScheduled") or {}
    if scheduled.get("status") == "False" and scheduled.get("reason") == "Unschedulable":
        since = since if since is not None else time.monotonic()
    else:
        since = None
    age = time.monotonic() - since if since is not None else 0.0
    return judge_pod(pod, unschedulable_for_s=age, unschedulable_grace_s=grace_s), since
