"""Every node's CPUs, memory and GPUs by type, free and total: one `sinfo` call.

Free GPUs are the configured GRES minus GresUsed. Whether Kubernetes has the node too (by
the bridge's node mapping, bridge.kubernetes.nodemap) and whether both sides count the same
CPUs, memory and GPUs is only known to someone who may list nodes (root with the bridge's
kubeconfig); users see it as unknown.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError
from bridge.settings import Settings
from bridge.slurm.commands import run_slurm
from bridge.userview.fields import SEP, parse_gres, split_record

_FIELDS = ("NodeList", "StateLong", "CPUsState", "Memory", "AllocMem", "Gres", "GresUsed", "Partition")


@dataclass
class NodeRow:
    name: str
    state: str
    cpus_total: int
    cpus_alloc: int
    memory_mib: int
    memory_alloc_mib: int
    gpus_total: dict[str, int]
    gpus_used: dict[str, int]
    partitions: list[str] = field(default_factory=list)
    kubernetes: str = "unknown"
    kube_node: str | None = None
    disagreements: list[str] = field(default_factory=list)

    @property
    def gpus_free(self) -> dict[str, int]:
        return {kind: max(0, total - self.gpus_used.get(kind, 0)) for kind, total in self.gpus_total.items()}

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "state": self.state, "partitions": self.partitions,
                "cpus": {"total": self.cpus_total, "allocated": self.cpus_alloc,
                         "free": max(0, self.cpus_total - self.cpus_alloc)},
                "memory_mib": {"total": self.memory_mib, "allocated": self.memory_alloc_mib,
                               "free": max(0, self.memory_mib - self.memory_alloc_mib)},
                "gpus": {kind: {"total": total, "free": self.gpus_free[kind]} for kind, total in self.gpus_total.items()},
                "kubernetes": self.kubernetes, "kubernetes_node": self.kube_node,
                "disagreements": self.disagreements}


def _int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        return 0


def slurm_nodes(settings: Settings) -> list[NodeRow]:
    fmt = ",".join(f"{name}:{SEP}" for name in _FIELDS)
    out = run_slurm(settings.slurm, ["sinfo", "--Node", "--noheader", f"--Format={fmt}"])
    nodes: dict[str, NodeRow] = {}
    for line in out.stdout.splitlines():
        if not line.strip():
            continue
        values = dict(zip(_FIELDS, split_record(line, len(_FIELDS)), strict=True))
        name = values["NodeList"].strip()
        partition = values["Partition"].strip()
        if name in nodes:  # one line per partition the node is in
            if partition and partition not in nodes[name].partitions:
                nodes[name].partitions.append(partition)
            continue
        alloc, _idle, _other, total = ([*(_int(p) for p in values["CPUsState"].split("/")), 0, 0, 0, 0])[:4]
        nodes[name] = NodeRow(
            name=name, state=values["StateLong"].strip(), cpus_total=total, cpus_alloc=alloc,
            memory_mib=_int(values["Memory"]), memory_alloc_mib=_int(values["AllocMem"]),
            gpus_total=parse_gres(values["Gres"]), gpus_used=parse_gres(values["GresUsed"]),
            partitions=[partition] if partition else [],
        )
    return sorted(nodes.values(), key=lambda n: n.name)


def add_kubernetes_view(settings: Settings, nodes: list[NodeRow]) -> list[str]:
    """Mark each node present/missing in Kubernetes (one list call); returns Kubernetes nodes
    Slurm does not have. Only possible with read access to the bridge's kubeconfig (root)."""
    path = settings.kubernetes.kubeconfig
    if os.geteuid() != 0 or not os.access(path, os.R_OK):
        return []
    from bridge.kubernetes.client import load_client
    from bridge.kubernetes.nodemap import NODES_PATH, NodeSize, disagreements, kube_node_size, map_nodes

    try:
        kube = load_client(path, timeout_s=settings.kubernetes.api_timeout_s)
        listing = kube.request("GET", NODES_PATH)
    except BridgeError:
        for node in nodes:
            node.kubernetes = "unreachable"
        return []
    items = {str(item["metadata"]["name"]): item for item in listing.get("items") or []}
    mapping = map_nodes(settings.kubernetes, [node.name for node in nodes], items.values())
    for node in nodes:
        kube_name = mapping.get(node.name)
        if kube_name is None:
            node.kubernetes = "missing"
            continue
        item = items[kube_name]
        conditions = (item.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        node.kube_node = kube_name
        node.disagreements = disagreements(
            NodeSize(cpus=node.cpus_total, memory_mib=node.memory_mib, gpus=sum(node.gpus_total.values())),
            kube_node_size(item, settings.kubernetes.gpu_resource))
        node.kubernetes = "disagrees" if node.disagreements else ("Ready" if ready else "NotReady")
    mapped = {name for name in mapping.values() if name is not None}
    return sorted(name for name in items if name not in mapped)

