"""Where the sandbox keeps its files, which ports it uses, and what its nodes look like."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ProgressFn = Callable[[str], None]

DEFAULT_ROOT = Path("/var/tmp/skbridge-sandbox")
SANDBOX_MARKER_ENV = "SKBRIDGE_SANDBOX_ROOT"
"""Set in the environment of every process the sandbox starts; `down` finds strays by it."""


@dataclass(frozen=True)
class SandboxPorts:
    slurmctld: int = 16817
    slurmd: int = 16818
    slurmdbd: int = 16819
    mariadb: int = 16306
    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 16257
    scheduler: int = 16259
    kwok_server: int = 16250
    kubelet: int = 16262
    kubelet_healthz: int = 16263


NODE_NETWORK = "10.89.0"
"""Extra nodes sit on a host bridge (10.89.0.0/16): the host is 10.89.0.1, node N is
10.89.0.N, simulated node N is 10.89.(1 + N // 250).(N % 250 + 1)."""
DEFAULT_NODE_COUNT = 2
NODE_COUNT_FILE = "node-count"
"""Under the sandbox's root: `<nodes> <simulated nodes>` as the last `up` asked for them."""
MAX_SIM_NODES = 1000


@dataclass(frozen=True)
class SandboxNode:
    """One compute node: a Slurm node and the real kubelet node of the same name.

    Slurm and Kubernetes both see these numbers (the node's status is patched to them), not
    the machine's: Pods' limits are cgroup quotas, so oversubscribing the machine is fine.
    The first node is the host itself; every other one runs its slurmd, containerd and
    kubelet in a network namespace of its own (`netns`), with its own address and hostname."""

    name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = 16
    memory_mib: int = 65536
    gpus: int = 4
    gpu_type: str = "a100"
    address: str = "127.0.0.1"
    netns: str | None = None
    pod_subnet: str = "10.88.0.0/24"
    weight: int = 1
    """Slurm fills lower weights first: jobs that fit the host node stay there."""

    @property
    def on_host(self) -> bool:
        return self.netns is None


def extra_node(index: int) -> SandboxNode:
    """Node `index` (2, 3, ...): even ones are smaller H100 nodes, odd ones A100 like the host."""
    if index < 2 or index > 200:
        raise ValueError(f"extra sandbox nodes are numbered 2..200, not {index}")
    name = f"skbnode{index}"
    h100 = index % 2 == 0
    return SandboxNode(name=name, cpus=8 if h100 else 16, memory_mib=32768 if h100 else 65536, gpus=2 if h100 else 4,
                       gpu_type="h100" if h100 else "a100", address=f"{NODE_NETWORK}.{index}", netns=f"skb-{name}",
                       pod_subnet=f"10.88.{index - 1}.0/24", weight=index)


def sim_node(index: int) -> SandboxNode:
    """Simulated node `index` (1, 2, ...): a real slurmd in its own namespaces, mirrored by a
    kwok node of the same name (its Pods are simulated: scale work only, never proof a job runs)."""
    if index < 1 or index > MAX_SIM_NODES:
        raise ValueError(f"simulated sandbox nodes are numbered 1..{MAX_SIM_NODES}, not {index}")
    name = f"skbsim{index:04d}"
    return SandboxNode(name=name, cpus=16, memory_mib=65536, gpus=4, gpu_type="a100",
                       address=f"10.89.{1 + index // 250}.{index % 250 + 1}", netns=f"skb-{name}",
                       pod_subnet="", weight=1000)


def sandbox_nodes(count: int) -> tuple[SandboxNode, ...]:
    if count < 1:
        raise ValueError(f"a sandbox has at least one node, not {count}")
    return (SandboxNode(), *(extra_node(index) for index in range(2, count + 1)))


@dataclass(frozen=True)
class SandboxLayout:
    root: Path
    ports: SandboxPorts = SandboxPorts()
    nodes: tuple[SandboxNode, ...] = field(default_factory=lambda: sandbox_nodes(DEFAULT_NODE_COUNT))
    sim_nodes: tuple[SandboxNode, ...] = ()

    @classmethod
    def default(cls, node_count: int | None = None, sim_node_count: int | None = None) -> SandboxLayout:
        """The sandbox at $SKBRIDGE_SANDBOX_DIR with as many nodes as its last `up` started."""
        root = Path(os.environ.get("SKBRIDGE_SANDBOX_DIR", str(DEFAULT_ROOT)))
        saved = [DEFAULT_NODE_COUNT, 0]
        try:
            numbers = [int(word) for word in (root / NODE_COUNT_FILE).read_text(encoding="ascii").split()]
            saved[: len(numbers)] = numbers[:2]
        except (OSError, ValueError):
            pass
        nodes = saved[0] if node_count is None else node_count
        sims = saved[1] if sim_node_count is None else sim_node_count
        return cls(root=root, nodes=sandbox_nodes(nodes), sim_nodes=tuple(sim_node(i) for i in range(1, sims + 1)))

    @property
    def node(self) -> SandboxNode:
        """The host's own node, where jobs land first."""
        return self.nodes[0]

    @property
    def extra_nodes(self) -> tuple[SandboxNode, ...]:
        return self.nodes[1:]

    @property
    def slurm_nodes(self) -> tuple[SandboxNode, ...]:
        """Every node Slurm has: the real ones, then the simulated ones."""
        return self.nodes + self.sim_nodes

    @property
    def namespaced_nodes(self) -> tuple[SandboxNode, ...]:
        """Every node with a network namespace of its own: the extra and the simulated ones."""
        return self.extra_nodes + self.sim_nodes

    def save_node_count(self) -> None:
        (self.root / NODE_COUNT_FILE).write_text(f"{len(self.nodes)} {len(self.sim_nodes)}", encoding="ascii")

    # directories
    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def slurm_dir(self) -> Path:
        return self.root / "slurm"

    @property
    def kube_dir(self) -> Path:
        return self.root / "kubernetes"

    @property
    def nas_dir(self) -> Path:
        return self.root / "nas"

    @property
    def node_dir(self) -> Path:
        """containerd, CNI and kubelet state of the real compute node."""
        return self.root / "node"

    @property
    def gpu_device_dir(self) -> Path:
        return self.slurm_dir / "dev"

    # files
    @property
    def slurm_conf(self) -> Path:
        return self.slurm_dir / "slurm.conf"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.kube_dir / "admin.kubeconfig"

    @property
    def bridge_kubeconfig(self) -> Path:
        return self.kube_dir / "bridge.kubeconfig"

    @property
    def bridge_config(self) -> Path:
        return self.root / "bridge-config.yaml"

    def env(self) -> dict[str, str]:
        """Variables a shell needs to talk to the sandbox's Slurm and Kubernetes."""
        return {
            "SLURM_CONF": str(self.slurm_conf),
            "KUBECONFIG": str(self.admin_kubeconfig),
            "SKBRIDGE_CONFIG": str(self.bridge_config),
        }
