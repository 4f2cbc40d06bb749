"""Issue 11, item 9: the bridge's own credential cannot make root-equivalent objects.

Whoever steals the bridge's token (or bends its code) holds RBAC rights to create
PersistentVolumes and Pods. The admission policy (deploy/kubernetes/20-admission.yaml)
must refuse, with that very token, everything the bridge itself never makes.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bridge.kubernetes.client import Kube, KubeRejected, KubeUnauthorized
from bridge.kubernetes.render import SCRIPT_ANNOTATION_MAX_BYTES
from tests.jobs.conftest import Jobs, job_script

POLICY = "slurm-k8s-bridge"


def _refused_by_policy(kube: Kube, path: str, body: dict[str, Any], *, by: tuple[str, ...] = (POLICY,)) -> str:
    with pytest.raises(KubeRejected) as refused:
        kube.request("POST", path, body=body, query={"dryRun": "All"})
    message = str(refused.value)
    assert any(guard in message for guard in by), f"refused, but not by {by}: {message}"
    return message


# Pods meet two cluster-side guards the bridge's credential cannot change: Pod Security's
# "restricted" level on the namespace (first), then the bridge's own policy.
POD_GUARDS = (POLICY, 'PodSecurity "restricted', "disallowed by cluster policy")


def _accepted(kube: Kube, path: str, body: dict[str, Any]) -> None:
    kube.request("POST", path, body=body, query={"dryRun": "All"})


def _rendered(jobs: Jobs, script: str | None = None) -> dict[str, dict[str, Any]]:
    """What the bridge really renders for a job (names skb-999999-r0...), by kind."""
    return {obj["kind"]: obj for obj in jobs.render("999999", script or job_script()).objects}


def test_what_the_bridge_renders_is_admitted(jobs: Jobs) -> None:
    objects = _rendered(jobs)
    ns = jobs.namespace
    _accepted(jobs.kube, "/api/v1/persistentvolumes", objects["PersistentVolume"])
    _accepted(jobs.kube, f"/api/v1/namespaces/{ns}/persistentvolumeclaims", objects["PersistentVolumeClaim"])
    # A script too large for the Pod's annotation comes in a ConfigMap, which the Pod mounts.
    large = _rendered(jobs, job_script(body="#" * (SCRIPT_ANNOTATION_MAX_BYTES + 1)))
    _accepted(jobs.kube, f"/api/v1/namespaces/{ns}/configmaps", large["ConfigMap"])
    large["Pod"]["spec"]["serviceAccountName"] = "default"
    _accepted(jobs.kube, f"/api/v1/namespaces/{ns}/pods", large["Pod"])


@pytest.mark.parametrize("path", ["/", "/etc", "/var/lib/kubelet", "{nas}x", "{nas}x/home", "{nas}//etc", "{nas}/./home"])
def test_a_volume_outside_the_nas_root_is_refused(jobs: Jobs, path: str) -> None:
    volume = copy.deepcopy(_rendered(jobs)["PersistentVolume"])
    volume["spec"]["hostPath"]["path"] = path.format(nas=str(jobs.settings.nas.root).rstrip("/"))
    volume["spec"]["hostPath"].pop("type", None)
    assert "NAS directories" in _refused_by_policy(jobs.kube, "/api/v1/persistentvolumes", volume)


@pytest.mark.parametrize("path", ["{nas}/../../etc", "{nas}/home/../../../root"])
def test_a_volume_climbing_out_of_the_nas_root_is_refused(jobs: Jobs, path: str) -> None:
    # The API server's own validation refuses `..` before any admission runs.
    volume = copy.deepcopy(_rendered(jobs)["PersistentVolume"])
    volume["spec"]["hostPath"]["path"] = path.format(nas=str(jobs.settings.nas.root).rstrip("/"))
    with pytest.raises(KubeRejected):
        jobs.kube.request("POST", "/api/v1/persistentvolumes", body=volume, query={"dryRun": "All"})


def test_a_volume_for_someone_elses_claim_is_refused(jobs: Jobs) -> None:
    volume = copy.deepcopy(_rendered(jobs)["PersistentVolume"])
    volume["spec"]["claimRef"] = {"namespace": "default", "name": "stolen"}
    _refused_by_policy(jobs.kube, "/api/v1/persistentvolumes", volume)
    claim = copy.deepcopy(_rendered(jobs)["PersistentVolumeClaim"])
    claim["spec"]["volumeName"] = "skb-1-r0-home"  # another job's volume
    _refused_by_policy(jobs.kube, f"/api/v1/namespaces/{jobs.namespace}/persistentvolumeclaims", claim)


def _pod(jobs: Jobs) -> dict[str, Any]:
    pod = copy.deepcopy(_rendered(jobs)["Pod"])
    # The per-attempt account does not exist for this probe; the namespace's default does.
    pod["spec"]["serviceAccountName"] = "default"
    return pod


def test_the_bridges_own_pod_is_admitted(jobs: Jobs) -> None:
    _accepted(jobs.kube, f"/api/v1/namespaces/{jobs.namespace}/pods", _pod(jobs))


def test_a_multi_node_rank_pod_is_admitted_with_its_attempts_claims(jobs: Jobs) -> None:
    """Rank k > 0 of a multi-node job is `<attempt>-rank<k>` and mounts the attempt's claims."""
    pod = _pod(jobs)
    pod["metadata"]["name"] = "skb-999999-r0-rank1"
    _accepted(jobs.kube, f"/api/v1/namespaces/{jobs.namespace}/pods", pod)


def _mutations(jobs: Jobs) -> dict[str, Any]:
    def host_path(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}})

    def other_claim(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] = "skb-1-r0-home"

    def as_root(pod: dict[str, Any]) -> None:
        pod["spec"]["securityContext"]["runAsUser"] = 0
        pod["spec"]["securityContext"]["runAsNonRoot"] = False

    def container_as_system_user(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"] = 1

    def privileged(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["securityContext"]["privileged"] = True

    def capabilities(pod: dict[str, Any]) -> None:
        pod["spec"]["containers"][0]["securityContext"]["capabilities"] = {"add": ["SYS_ADMIN"], "drop": ["ALL"]}

    def host_network(pod: dict[str, Any]) -> None:
        pod["spec"]["hostNetwork"] = True

    def foreign_name(pod: dict[str, Any]) -> None:
        pod["metadata"]["name"] = "innocent"

    def foreign_configmap(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"].append({"name": "other", "configMap": {"name": "skb-1-r0"}})

    def projected_token(pod: dict[str, Any]) -> None:
        # Where the gate's downwardAPI volume is allowed, a projected one could carry a token.
        pod["spec"]["volumes"].append({"name": "token", "projected": {"sources": [
            {"serviceAccountToken": {"path": "token"}}]}})

    def rank_with_other_claim(pod: dict[str, Any]) -> None:
        # A rank's name reaches its own attempt's claims, never another job's.
        pod["metadata"]["name"] = "skb-999999-r0-rank1"
        pod["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] = "skb-1-r0-home"

    def rank_lookalike_name(pod: dict[str, Any]) -> None:
        # Only `-rank<digits>` at the end names a rank: this is not the attempt skb-1-r0.
        pod["metadata"]["name"] = "skb-1-r0-rankx"
        pod["spec"]["volumes"][1]["persistentVolumeClaim"]["claimName"] = "skb-1-r0-home"

    def other_downward_field(pod: dict[str, Any]) -> None:
        pod["spec"]["volumes"].append({"name": "meta", "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}})

    return {f.__name__: f for f in (host_path, other_claim, as_root, container_as_system_user, privileged, capabilities,
                                    host_network, foreign_name, foreign_configmap, projected_token,
                                    other_downward_field, rank_with_other_claim, rank_lookalike_name)}


# What Pod Security lets through and only the bridge's policy stops.
POLICY_ONLY = ("other_claim", "container_as_system_user", "foreign_name", "foreign_configmap", "projected_token",
               "other_downward_field", "rank_with_other_claim", "rank_lookalike_name")


@pytest.mark.parametrize("attack", ["host_path", "other_claim", "as_root", "container_as_system_user", "privileged",
                                    "capabilities", "host_network", "foreign_name", "foreign_configmap",
                                    "projected_token", "other_downward_field", "rank_with_other_claim",
                                    "rank_lookalike_name"])
def test_a_pod_beyond_what_the_bridge_makes_is_refused(jobs: Jobs, attack: str) -> None:
    pod = _pod(jobs)
    _mutations(jobs)[attack](pod)
    guards = (POLICY,) if attack in POLICY_ONLY else POD_GUARDS
    _refused_by_policy(jobs.kube, f"/api/v1/namespaces/{jobs.namespace}/pods", pod, by=guards)


def test_a_rolebinding_to_the_bridges_own_role_is_refused(jobs: Jobs) -> None:
    # Binding the bridge's Role to an account of one's own would copy the bridge's power.
    binding = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": "skb-1-r0-attach", "namespace": jobs.namespace},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "skbridge"},
               "subjects": [{"kind": "ServiceAccount", "name": "skb-1-r0-attach", "namespace": jobs.namespace}]}
    _refused_by_policy(jobs.kube, f"/apis/rbac.authorization.k8s.io/v1/namespaces/{jobs.namespace}/rolebindings",
                       binding)


def test_the_policy_cannot_be_switched_off_with_the_bridges_credential(jobs: Jobs) -> None:
    api = "/apis/admissionregistration.k8s.io/v1"
    for method, path in (("DELETE", f"{api}/validatingadmissionpolicies/{POLICY}-volumes"),
                         ("DELETE", f"{api}/validatingadmissionpolicybindings/{POLICY}-volumes"),
                         ("PUT", f"{api}/validatingadmissionpolicies/{POLICY}-volumes")):
        # RBAC says no before the object is even looked at: the bridge's own rights lack it.
        with pytest.raises(KubeUnauthorized) as refused:
            jobs.kube.request(method, path, query={"dryRun": "All"})
        assert refused.value.status == 403 and "cannot" in str(refused.value)


def test_the_test_suite_reports_the_policy(jobs: Jobs) -> None:
    import subprocess
    import sys
    from pathlib import Path

    out = subprocess.run([str(Path(sys.executable).parent / "skbridge"), "test-suite", "--only", "kubernetes", "--json"],
                         env=jobs.sandbox.env, capture_output=True, text=True, timeout=120, check=False)
    assert "admission policy confines the bridge's credential" in out.stdout, out.stdout + out.stderr
    import json

    rows = json.loads(out.stdout)["results"]
    row = next(r for r in rows if r["name"] == "admission policy confines the bridge's credential")
    assert row["outcome"] == "PASS", row
