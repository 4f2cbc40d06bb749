"""The sandbox's Kubernetes is real: the scheduler places Pods, a real kubelet runs them."""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.utils import parse_quantity

from bridge.sandbox import kube_cluster
from bridge.sandbox.images import JOB_IMAGE
from tests.conftest import Sandbox, wait_for


def _pod(name: str, node: str | None, *, gpus: int = 1, script: str = "sleep 600") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "main",
            "image": JOB_IMAGE,
            "command": ["/bin/bash", "-c", script],
            "resources": {"limits": {"cpu": "1", "memory": "1Gi", "nvidia.com/gpu": str(gpus)}},
        }],
    }
    if node is not None:
        spec["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}}
    return {"metadata": {"name": name}, "spec": spec}


def _phase(core: client.CoreV1Api, ns: str, name: str) -> str:
    return str(core.read_namespaced_pod(name, ns).status.phase)


def test_mirror_node_matches_the_slurm_node(sandbox: Sandbox) -> None:
    node = sandbox.core.read_node(sandbox.node_name)
    capacity = node.status.capacity
    assert capacity["nvidia.com/gpu"] == str(sandbox.layout.node.gpus)
    assert capacity["cpu"] == str(sandbox.layout.node.cpus)
    assert parse_quantity(capacity["memory"]) == sandbox.layout.node.memory_mib * 2**20
    assert any(c.type == "Ready" and c.status == "True" for c in node.status.conditions)


def test_pod_runs_then_succeeds(sandbox: Sandbox, test_namespace: str) -> None:
    core = sandbox.core
    core.create_namespaced_pod(test_namespace, _pod("ok", sandbox.node_name, script="sleep 3"))
    wait_for(lambda: _phase(core, test_namespace, "ok") == "Running", timeout_s=30, what="pod Running")
    pod = core.read_namespaced_pod("ok", test_namespace)
    assert pod.spec.node_name == sandbox.node_name
    assert any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)
    wait_for(lambda: _phase(core, test_namespace, "ok") == "Succeeded", timeout_s=30, what="pod Succeeded")
    terminated = core.read_namespaced_pod("ok", test_namespace).status.container_statuses[0].state.terminated
    assert terminated.exit_code == 0


def test_pod_fails_with_its_exit_code(sandbox: Sandbox, test_namespace: str) -> None:
    core = sandbox.core
    core.create_namespaced_pod(test_namespace, _pod("bad", sandbox.node_name, script="sleep 1; exit 3"))
    wait_for(lambda: _phase(core, test_namespace, "bad") == "Failed", timeout_s=30, what="pod Failed")
    terminated = core.read_namespaced_pod("bad", test_namespace).status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert terminated.reason == "Error"


def test_pod_asking_more_gpus_than_the_node_has_stays_unschedulable(sandbox: Sandbox, test_namespace: str) -> None:
    core = sandbox.core
    core.create_namespaced_pod(test_namespace, _pod("huge", sandbox.node_name, gpus=sandbox.layout.node.gpus + 1))

    def unschedulable() -> bool:
        conditions = core.read_namespaced_pod("huge", test_namespace).status.conditions or []
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable" for c in conditions)

    wait_for(unschedulable, timeout_s=30, what="PodScheduled=False/Unschedulable")
    pod = core.read_namespaced_pod("huge", test_namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None
    message = next(c.message for c in pod.status.conditions if c.type == "PodScheduled")
    assert "nvidia.com/gpu" in message


def test_deletion_leaves_nothing_behind(sandbox: Sandbox, test_namespace: str) -> None:
    core = sandbox.core
    core.create_namespaced_pod(test_namespace, _pod("doomed", sandbox.node_name))
    wait_for(lambda: _phase(core, test_namespace, "doomed") == "Running", timeout_s=30, what="pod Running")
    core.delete_namespaced_pod("doomed", test_namespace, grace_period_seconds=5)

    def gone() -> bool:
        try:
            core.read_namespaced_pod("doomed", test_namespace)
        except ApiException as exc:
            return exc.status == 404
        return False

    wait_for(gone, timeout_s=30, what="pod deleted")
    assert core.list_namespaced_pod(test_namespace).items == []


def test_the_node_keeps_the_slurm_nodes_numbers_when_the_kubelet_reports_the_machine(sandbox: Sandbox) -> None:
    # What the kubelet writes on each status report: the machine's CPUs and memory, no GPUs.
    machine = {"cpu": str(os.cpu_count()), "memory": "1Gi", "nvidia.com/gpu": "0"}
    sandbox.core.patch_node_status(sandbox.node_name, {"status": {"capacity": machine, "allocatable": machine}})

    def restored() -> bool:
        status = sandbox.core.read_node(sandbox.node_name).status
        return all(r["cpu"] == str(sandbox.layout.node.cpus) and r["nvidia.com/gpu"] == str(sandbox.layout.node.gpus)
                   and parse_quantity(r["memory"]) == sandbox.layout.node.memory_mib * 2**20
                   for r in (status.capacity, status.allocatable))

    wait_for(restored, timeout_s=5, what="node-keeper restoring the Slurm node's numbers", interval_s=0.05)


def test_kwok_still_plays_extra_simulated_nodes(sandbox: Sandbox, test_namespace: str) -> None:
    name = f"{sandbox.node_name}-sim-{test_namespace[-4:]}"
    kube_cluster.ensure_simulated_node(sandbox.api, sandbox.layout, name)
    try:
        wait_for(lambda: kube_cluster.node_ready(sandbox.api, name), timeout_s=30, what="the kwok node Ready")
        body = _pod("sim", name, script="exit 0")
        body["metadata"]["annotations"] = {"sandbox.skbridge.io/run-duration": "1s", "sandbox.skbridge.io/exit-code": "4"}
        sandbox.core.create_namespaced_pod(test_namespace, body)
        wait_for(lambda: _phase(sandbox.core, test_namespace, "sim") == "Failed", timeout_s=30, what="simulated Pod ended")
        terminated = sandbox.core.read_namespaced_pod("sim", test_namespace).status.container_statuses[0].state.terminated
        assert terminated.exit_code == 4, "kwok played the annotated exit code: nothing ran"
    finally:
        sandbox.core.delete_node(name)
