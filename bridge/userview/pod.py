"""The job's Pod, read with the job's own credential (results/<user>/<jobid>/.attach.kubeconfig).

Users hold no Kubernetes rights of their own; while a job runs, the prolog leaves a token
that may get and watch that one Pod. Without it (job pending or ended, or unreadable),
there is no live Pod view and callers fall back to what the results folder says.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError

if TYPE_CHECKING:
    from bridge.kubernetes.client import Kube

POD_TIMEOUT_S = 5.0
# bridge.kubernetes.access.ATTACH_KUBECONFIG; not imported: the Kubernetes client costs ~0.15 s
# of start-up, paid only when a credential is there to use.
ATTACH_KUBECONFIG = ".attach.kubeconfig"


@dataclass(frozen=True)
class PodView:
    name: str
    phase: str | None
    ready_at: str | None
    node: str | None
    exists: bool
    error: str | None = None


def credential(job_dir: Path) -> Path | None:
    path = job_dir / ATTACH_KUBECONFIG
    return path if os.access(path, os.R_OK) else None


def client_for(job_dir: Path) -> Kube | None:
    path = credential(job_dir)
    if path is None:
        return None
    from bridge.kubernetes.client import load_client

    try:
        return load_client(path, timeout_s=POD_TIMEOUT_S)
    except BridgeError:
        return None


def ready_time(pod: dict[str, Any]) -> str | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready" and condition.get("status") == "True":
            return str(condition.get("lastTransitionTime") or "") or None
    return None


def read_pod(job_dir: Path, namespace: str, pod_name: str) -> PodView | None:
    """The live Pod (one GET), or None when there is no usable credential."""
    kube = client_for(job_dir)
    if kube is None:
        return None
    from bridge.kubernetes.objects import object_path

    try:
        pod = kube.get_or_none(object_path("Pod", pod_name, namespace))
    except BridgeError as exc:
        # A token bound to a deleted Pod is refused: the Pod is gone.
        return PodView(pod_name, None, None, None, exists=False, error=str(exc).splitlines()[0][:200])
    if pod is None:
        return PodView(pod_name, None, None, None, exists=False)
    status = pod.get("status") or {}
    return PodView(pod_name, status.get("phase"), ready_time(pod), (pod.get("spec") or {}).get("nodeName"), exists=True)


def pod_gone(job_dir: Path, namespace: str, pod_name: str) -> bool:
    """True when the Pod no longer exists or the credential is gone (the epilog removes it with the Pod)."""
    view = read_pod(job_dir, namespace, pod_name)
    return view is None or not view.exists
