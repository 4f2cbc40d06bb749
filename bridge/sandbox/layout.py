"""Where the sandbox keeps its files, which ports it uses, and what its one node looks like."""

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


@dataclass(frozen=True)
class SandboxNode:
    """The single compute node: a Slurm node and the real kubelet node of the same name.

    Slurm and Kubernetes both see these numbers (the node's status is patched to them), not
    the machine's: Pods' limits are cgroup quotas, so oversubscribing the machine is fine."""

    name: str = field(default_factory=lambda: socket.gethostname().split(".")[0])
    cpus: int = 16
    memory_mib: int = 65536
    gpus: int = 4
    gpu_type: str = "a100"


@dataclass(frozen=True)
class SandboxLayout:
    root: Path
    ports: SandboxPorts = SandboxPorts()
    node: SandboxNode = field(default_factory=SandboxNode)

    @classmethod
    def default(cls) -> SandboxLayout:
        return cls(root=Path(os.environ.get("SKBRIDGE_SANDBOX_DIR", str(DEFAULT_ROOT))))

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
