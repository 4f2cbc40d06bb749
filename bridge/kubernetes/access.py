"""A credential for `skbridge attach` that reaches the job's own Pod and nothing else.

Per job attempt: a ServiceAccount, a Role naming only that Pod (get/watch, and get on its
log), a RoleBinding, and a token from the TokenRequest API bound to the Pod object, so it
dies with the Pod. The kubeconfig holding it is written into the job's results folder,
readable only by the job's user, and removed by the epilog.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bridge.collect.results import write_file_as
from bridge.kubernetes.client import Kube, KubeError
from bridge.kubernetes.kubeconfig import render_kubeconfig
from bridge.kubernetes.render import LABEL_MANAGED_BY, MANAGED_BY, ObjectNames
from bridge.slurm.jobinfo import JobAllocation

LABEL_ACCESS_FOR_JOB = "skbridge.io/access-for-job"
ATTACH_KUBECONFIG = ".attach.kubeconfig"
_MIN_TOKEN_S = 600


def access_selector(job_id: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ACCESS_FOR_JOB}={job_id}"


def access_name(pod_name: str) -> str:
    return ObjectNames.service_account_for(pod_name)


def _create(kube: Kube, path: str, body: dict[str, Any]) -> None:
    try:
        kube.request("POST", path, body=body)
    except KubeError as exc:
        if exc.status != 409:  # already there from a re-run of the prolog: same name, same rules
            raise


def ensure_attach_identity(kube: Kube, namespace: str, allocation: JobAllocation, pod_name: str) -> None:
    """The attempt's ServiceAccount and its Role on the one Pod; made before the Pod, which runs as it."""
    name = access_name(pod_name)
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ACCESS_FOR_JOB: allocation.job_id,
              "slurm.job-id": allocation.job_id, "slurm.restart-count": str(allocation.restart_count)}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    _create(kube, f"/api/v1/namespaces/{namespace}/serviceaccounts",
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta, "automountServiceAccountToken": False})
    rbac = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{namespace}"
    _create(kube, f"{rbac}/roles", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "resourceNames": [pod_name], "verbs": ["get", "watch"]},
            {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": [pod_name], "verbs": ["get"]},
        ],
    })
    _create(kube, f"{rbac}/rolebindings", {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    })


def issue_attach_token(
    kube: Kube,
    namespace: str,
    allocation: JobAllocation,
    pod: dict[str, Any],
    job_dir: Path,
) -> Path:
    """A token bound to the Pod object (it stops working when the Pod is deleted), written for the user only."""
    pod_name = pod["metadata"]["name"]
    name = access_name(pod_name)
    lifetime_s = max(_MIN_TOKEN_S, (allocation.time_limit_minutes or 7 * 24 * 60) * 60 + 3600)
    answer = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body={
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": lifetime_s,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": pod["metadata"]["uid"]}},
    })
    cfg = kube.api_client.configuration
    ca_pem = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
    text = render_kubeconfig(server=cfg.host, ca_pem=ca_pem, user_name=name, token=answer["status"]["token"],
                             namespace=namespace)
    path = job_dir / ATTACH_KUBECONFIG
    write_file_as(path, text.encode("utf-8"), allocation.uid, allocation.gid, mode=0o600)
    return path
