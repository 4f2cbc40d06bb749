"""Slurm node -> Kubernetes node: identity, the node map, a node label; and size disagreements."""

from __future__ import annotations

from typing import Any, cast

import pytest

from bridge.kubernetes.client import Kube
from bridge.kubernetes.nodemap import (
    NodeMappingError,
    NodeSize,
    disagreements,
    kube_node_for,
    kube_node_size,
    map_nodes,
)
from bridge.settings import KubernetesSettings

LABEL = "slurm.schedmd.com/node"


def node(name: str, slurm_name: str | None = None, *, cpu: str = "16", memory: str = "64Gi",
         gpus: str | None = "4") -> dict[str, Any]:
    capacity = {"cpu": cpu, "memory": memory, **({"nvidia.com/gpu": gpus} if gpus is not None else {})}
    return {"metadata": {"name": name, "labels": {LABEL: slurm_name} if slurm_name else {}},
            "status": {"capacity": capacity, "allocatable": capacity}}


class FakeNodes:
    """The one call kube_node_for makes: GET /api/v1/nodes with a label selector."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.queries: list[dict[str, str] | None] = []

    def request(self, method: str, path: str, *, query: dict[str, str] | None = None) -> dict[str, Any]:
        assert (method, path) == ("GET", "/api/v1/nodes")
        self.queries.append(query)
        key, _, value = (query or {}).get("labelSelector", "").partition("=")
        return {"items": [n for n in self.nodes if n["metadata"]["labels"].get(key) == value]}


def kube_of(fake: FakeNodes) -> Kube:
    return cast(Kube, fake)


def test_identity_by_default_asks_nothing() -> None:
    fake = FakeNodes([])
    assert kube_node_for(KubernetesSettings(), "gpu01", kube_of(fake)) == "gpu01"
    assert fake.queries == []


def test_an_explicit_map_entry_wins_over_the_label() -> None:
    fake = FakeNodes([node("k8s-gpu01", "gpu01")])
    settings = KubernetesSettings(node_map={"gpu01": "other"}, node_label=LABEL)
    assert kube_node_for(settings, "gpu01", kube_of(fake)) == "other"
    assert fake.queries == []


def test_the_label_names_the_node_with_one_selected_get() -> None:
    fake = FakeNodes([node("k8s-a", "gpu01"), node("k8s-b", "gpu02")])
    settings = KubernetesSettings(node_label=LABEL)
    assert kube_node_for(settings, "gpu02", kube_of(fake)) == "k8s-b"
    assert fake.queries == [{"labelSelector": f"{LABEL}=gpu02"}]


@pytest.mark.parametrize("nodes", [[], [node("a", "gpu01"), node("b", "gpu01")]])
def test_no_node_or_two_by_label_is_an_admins_error(nodes: list[dict[str, Any]]) -> None:
    with pytest.raises(NodeMappingError, match=f"{LABEL}=gpu01"):
        kube_node_for(KubernetesSettings(node_label=LABEL), "gpu01", kube_of(FakeNodes(nodes)))


def test_map_nodes_follows_the_same_rule() -> None:
    nodes = [node("vm"), node("k8s-b", "gpu02"), node("twin1", "gpu03"), node("twin2", "gpu03")]
    assert map_nodes(KubernetesSettings(node_map={"gpu01": "vm"}), ["gpu01", "vm", "ghost"], nodes) == \
        {"gpu01": "vm", "vm": "vm", "ghost": None}
    labelled = KubernetesSettings(node_label=LABEL, node_map={"gpu01": "vm"})
    assert map_nodes(labelled, ["gpu01", "gpu02", "gpu03", "ghost"], nodes) == \
        {"gpu01": "vm", "gpu02": "k8s-b", "gpu03": None, "ghost": None}


@pytest.mark.parametrize(("memory", "mib"), [("64Gi", 65536), ("67108864Ki", 65536), ("68719476736", 65536),
                                              ("1G", 953), ("512Mi", 512)])
def test_kubernetes_memory_quantities(memory: str, mib: int) -> None:
    assert kube_node_size(node("n", memory=memory), "nvidia.com/gpu").memory_mib == mib


def test_node_size_reads_cpus_and_gpus() -> None:
    assert kube_node_size(node("n", cpu="15500m", gpus=None), "nvidia.com/gpu") == NodeSize(15, 65536, 0)


def test_disagreements() -> None:
    kube = NodeSize(cpus=16, memory_mib=65536, gpus=4)
    assert disagreements(NodeSize(16, 65536, 4), kube) == []
    assert disagreements(NodeSize(16, 60000, 4), kube) == []  # Slurm's RealMemory below the kubelet's: fine
    found = disagreements(NodeSize(32, 70000, 8), kube)
    assert len(found) == 3 and "32 CPUs" in found[0] and "70000 MiB" in found[1] and "8 GPUs" in found[2]
