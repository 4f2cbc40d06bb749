"""Keeps the real node's status what Slurm believes the node is.

The kubelet reports the machine (here 2 cores, 24 GiB, no GPU, no usable address); Slurm's
node says 16 CPUs, 64 GiB and 4 GPUs. The sandbox's scheduler must see Slurm's numbers, or
Pods that Slurm allocated would be unschedulable. The kubelet keeps extended resources and
addresses it did not set but resets CPU and memory on each status report (every 5 minutes in
the sandbox), so this small loop watches the Node and patches capacity, allocatable and an
InternalIP (127.0.0.1 for the host's node, which the kubelet refuses to report itself; the
node's own address for an extra node) back within milliseconds.

Run as `python -m bridge.sandbox.node_keeper KUBECONFIG NODE CPUS MEMORY_MIB GPUS [ADDRESS]`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from kubernetes import client, config, watch
from kubernetes.utils import parse_quantity

GPU_RESOURCE = "nvidia.com/gpu"
NODE_ADDRESS = "127.0.0.1"


def desired_resources(cpus: int, memory_mib: int, gpus: int) -> dict[str, str]:
    return {"cpu": str(cpus), "memory": f"{memory_mib}Mi", GPU_RESOURCE: str(gpus)}


def _same(found: dict[str, str] | None, wanted: dict[str, str]) -> bool:
    found = found or {}
    try:
        return all(key in found and parse_quantity(found[key]) == parse_quantity(value) for key, value in wanted.items())
    except ValueError:
        return False


def needs_patch(node: Any, wanted: dict[str, str], address: str = NODE_ADDRESS) -> bool:
    status = node.status
    if status is None:
        return True
    addresses = {(a.type, a.address) for a in (status.addresses or [])}
    return (not _same(status.capacity, wanted) or not _same(status.allocatable, wanted)
            or ("InternalIP", address) not in addresses)


def patch_status(core: client.CoreV1Api, name: str, wanted: dict[str, str], address: str = NODE_ADDRESS) -> None:
    core.patch_node_status(name, {"status": {
        "capacity": wanted, "allocatable": wanted,
        "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
    }})


def keep(core: client.CoreV1Api, name: str, wanted: dict[str, str], address: str = NODE_ADDRESS) -> None:
    """Watch the node forever; patch its status whenever it drifts from `wanted`."""
    while True:
        try:
            listing = core.list_node(field_selector=f"metadata.name={name}")
            for node in listing.items:
                if needs_patch(node, wanted, address):
                    patch_status(core, name, wanted, address)
            stream = watch.Watch().stream(core.list_node, field_selector=f"metadata.name={name}",
                                          resource_version=listing.metadata.resource_version, timeout_seconds=60)
            for event in stream:
                if event["type"] in {"ADDED", "MODIFIED"} and needs_patch(event["object"], wanted, address):
                    patch_status(core, name, wanted, address)
        except Exception as exc:  # the API server restarts with the sandbox; keep trying
            sys.stderr.write(f"node-keeper: {type(exc).__name__}: {exc}\n")
            time.sleep(1.0)


def main(argv: list[str]) -> int:
    kubeconfig, name, cpus, memory_mib, gpus = argv[:5]
    address = argv[5] if len(argv) > 5 else NODE_ADDRESS
    api = config.new_client_from_config(config_file=kubeconfig)
    keep(client.CoreV1Api(api), name, desired_resources(int(cpus), int(memory_mib), int(gpus)), address)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
