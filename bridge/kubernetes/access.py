"""A credential for `skbridge attach` that reaches the job's own Pod and nothing else.

Per job attempt: a ServiceAccount, a Role naming only that Pod (get/watch, and get on its
log; exec too for an interactive job, `skbridge shell`), a RoleBinding, and a token from
the TokenRequest API bound to the Pod object, so it dies with the Pod. The kubeconfig
holding it is written into the job's results folder, readable only by the job's user, and
removed by the epilog.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bridge.kubernetes import lite
from bridge.kubernetes.client import Kube
from bridge.kubernetes.kubeconfig import kubeconfig_document
from bridge.kubernetes.render import (
    LABEL_ARRAY_JOB_ID,
    LABEL_ARRAY_TASK_ID,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    ObjectNames,
    stamp_spec_hash,
)
from bridge.runas import write_file_as
from bridge.slurm.jobinfo import JobAllocation

LABEL_ACCESS_FOR_JOB = "skbridge.io/access-for-job"
ATTACH_KUBECONFIG = lite.ATTACH_KUBECONFIG
_MIN_TOKEN_S = 600
# `skbridge shell` submits its job under this name. The name is the user's to choose, and that
# is safe: all it adds is exec into the job's own Pod, which runs as the user (never root).
INTERACTIVE_JOB_NAME = "skbridge-shell"


def is_interactive(allocation: JobAllocation) -> bool:
    return allocation.name == INTERACTIVE_JOB_NAME


def access_name(pod_name: str) -> str:
    return ObjectNames.service_account_for(pod_name)


def attach_identity(namespace: str, allocation: JobAllocation, pod_name: str,
                    other_pods: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The attempt's ServiceAccount, a Role on the one Pod, and their binding, made with the
    Pod's other objects (`create_objects(extra=...)`): the Pod runs as the account. The
    bridge holds `bind` on Roles in its namespace, so the binding need not wait for the
    API server to see the Role first (the escalation check it replaces costs ~100 ms).

    An interactive job's Role also allows exec into that Pod: `get` and `create` on
    `pods/exec` (a websocket exec is a GET, and since Kubernetes 1.30 the API server also
    asks for `create`, AuthorizePodWebsocketUpgradeCreatePermission); the bridge holds both itself,
    as RBAC's escalation check requires of whoever writes a Role (it holds no `escalate`).

    A multi-node job's `other_pods` (ranks 1..n-1) are named beside rank 0's: attach follows
    them too and ends them with the job. Exec stays on rank 0.
    """
    name = access_name(pod_name)
    pods = [pod_name, *other_pods]
    labels = {LABEL_MANAGED_BY: MANAGED_BY, LABEL_ACCESS_FOR_JOB: allocation.job_id,
              "slurm.job-id": allocation.job_id, "slurm.restart-count": str(allocation.restart_count)}
    if allocation.results_name != allocation.job_id:  # an array task: grouped with its array, as its Pod
        labels |= {LABEL_ARRAY_JOB_ID: allocation.array_job_id, LABEL_ARRAY_TASK_ID: allocation.array_task_id}
    def meta() -> dict[str, Any]:
        return {"name": name, "namespace": namespace, "labels": dict(labels)}

    return [stamp_spec_hash(obj) for obj in (
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(), "automountServiceAccountToken": False},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta(),
         "rules": [
             {"apiGroups": [""], "resources": ["pods"], "resourceNames": pods,
              # delete: on scancel or the time limit, attach ends its own Pod with the grace period.
              "verbs": ["get", "watch", "delete"]},
             {"apiGroups": [""], "resources": ["pods/log"], "resourceNames": pods, "verbs": ["get"]},
             *([{"apiGroups": [""], "resources": ["pods/exec"], "resourceNames": [pod_name],
                 "verbs": ["get", "create"]}]
               if is_interactive(allocation) else []),
         ]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": meta(),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
         "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}]},
    )]


def issue_attach_token(
    kube: Kube,
    namespace: str,
    allocation: JobAllocation,
    pod: dict[str, Any],
    job_dir: Path,
    *,
    termination_grace_period_s: int,
    api_timeout_s: float,
    other_pods: Sequence[str] = (),
) -> Path:
    """A token bound to the Pod object (it stops working when the Pod is deleted), written for the user only.

    As JSON (valid YAML for kubectl and the official client) with what the light `skbridge
    attach` needs besides (`bridge.kubernetes.lite`), so attach loads no settings model.
    """
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
    doc = kubeconfig_document(server=cfg.host, ca_pem=ca_pem, user_name=name, token=answer["status"]["token"],
                              namespace=namespace)
    doc["extensions"] = [lite.attach_extension(
        job_id=allocation.job_id, restart_count=allocation.restart_count, pod=pod_name, namespace=namespace,
        termination_grace_period_s=termination_grace_period_s, api_timeout_s=api_timeout_s,
        other_pods=other_pods)]
    path = job_dir / ATTACH_KUBECONFIG
    write_file_as(path, json.dumps(doc, indent=1).encode("utf-8"), allocation.uid, allocation.gid, mode=0o600)
    return path
