"""Which Kubernetes node stands for a Slurm node, and whether the two agree on its size.

One rule, in this order: an entry in `kubernetes.node_map`; else, with `kubernetes.node_label`
set, the one Kubernetes node whose label of that name holds the Slurm node's name; else the
same name (identity). The prolog pins each Pod with `kube_node_for` (one label-selected GET,
never a list of every node); `skbridge nodes` and the test-suite use `map_nodes` over a node
list they fetched once, and `disagreements` to flag nodes whose counts differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bridge.errors import ConfigError
from bridge.kubernetes.client import Kube
from bridge.settings import KubernetesSettings

NODES_PATH = "/api/v1/nodes"


class NodeMappingError(ConfigError):
    """The mapping names no Kubernetes node for a Slurm node, or several: an admin's to fix."""


@dataclass(frozen=True)
class NodeSize:
    """What one side says a node holds: CPUs, memory (MiB) and GPUs."""

    cpus: int
    memory_mib: int
    gpus: int


def _labelled(settings: KubernetesSettings, slurm_node: str, nodes: Iterable[Mapping[str, Any]]) -> list[str]:
    label = settings.node_label or ""
    return sorted(str(node["metadata"]["name"]) for node in nodes
                  if ((node.get("metadata") or {}).get("labels") or {}).get(label) == slurm_node)


def kube_node_for(settings: KubernetesSettings, slurm_node: str, kube: Kube) -> str:
    """The Kubernetes node the Pod of a job on `slurm_node` must run on.

    Raises NodeMappingError when the label names no node or more than one (an admin's mistake that
    would hit every job on that node), KubeError when the API server cannot answer.
    """
    explicit = settings.node_map.get(slurm_node)
    if explicit or not settings.node_label:
        return explicit or slurm_node
    listing = kube.request("GET", NODES_PATH, query={"labelSelector": f"{settings.node_label}={slurm_node}"})
    names = _labelled(settings, slurm_node, listing.get("items") or [])
    if len(names) != 1:
        found = ", ".join(names) or "none"
        raise NodeMappingError(f"kubernetes.node_label: {len(names)} Kubernetes nodes carry "
                          f"{settings.node_label}={slurm_node} (found: {found}); exactly one must")
    return names[0]


def map_nodes(settings: KubernetesSettings, slurm_nodes: Iterable[str],
              kube_nodes: Iterable[Mapping[str, Any]]) -> dict[str, str | None]:
    """Each Slurm node's Kubernetes node by the same rule as `kube_node_for`, over a node list
    fetched once; None where the rule names no node that exists (or, by label, several)."""
    items = list(kube_nodes)
    existing = {str(node["metadata"]["name"]) for node in items}
    mapped: dict[str, str | None] = {}
    for name in slurm_nodes:
        explicit = settings.node_map.get(name)
        if explicit or not settings.node_label:
            target = explicit or name
            mapped[name] = target if target in existing else None
            continue
        labelled = _labelled(settings, name, items)
        mapped[name] = labelled[0] if len(labelled) == 1 else None
    return mapped


def _quantity_mib(text: str) -> int:
    """Kubernetes memory quantities (`64Gi`, `65536Ki`, `68719476736`, `64G`) in MiB."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for suffix in sorted(units, key=len, reverse=True):
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * units[suffix]) // 2**20
    return int(float(text or 0)) // 2**20


def _cpus(text: str) -> int:
    return int(text[:-1]) // 1000 if text.endswith("m") else int(float(text or 0))


def kube_node_size(node: Mapping[str, Any], gpu_resource: str) -> NodeSize:
    """The node's capacity as the kubelet reports it (allocatable memory: what Pods can get)."""
    status = node.get("status") or {}
    capacity = status.get("capacity") or {}
    allocatable = status.get("allocatable") or capacity
    return NodeSize(cpus=_cpus(str(capacity.get("cpu", "0"))),
                    memory_mib=_quantity_mib(str(allocatable.get("memory", "0"))),
                    gpus=int(str(capacity.get(gpu_resource, "0")) or 0))


def disagreements(slurm: NodeSize, kube: NodeSize) -> list[str]:
    """Where the two sides disagree. CPUs and GPUs must be equal; Slurm's memory may be lower
    than the kubelet's allocatable (RealMemory is usually set below the physical size) but never
    higher, or Slurm hands out memory no Pod can get."""
    found = []
    if slurm.cpus != kube.cpus:
        found.append(f"Slurm {slurm.cpus} CPUs, Kubernetes {kube.cpus}")
    if slurm.memory_mib > kube.memory_mib:
        found.append(f"Slurm {slurm.memory_mib} MiB of memory, Kubernetes only {kube.memory_mib} MiB allocatable")
    if slurm.gpus != kube.gpus:
        found.append(f"Slurm {slurm.gpus} GPUs, Kubernetes {kube.gpus}")
    return found
