"""The network of the sandbox's extra nodes: one namespace per node on a host bridge.

Each extra or simulated node gets a network namespace (`skb-<node>`) with a veth on the host
bridge `skbnodes0` (host `10.89.0.1/16`, see `layout.NODE_NETWORK`): slurmctld reaches its slurmd and the API
server reaches its kubelet there, as on a cluster. The other way round, the node finds the
controllers where the host node finds them, on its own loopback: one relay process
(`loopback_relay`) listens on every node's 127.0.0.1 and carries each connection to the host's.
So slurm.conf, kubeconfigs and certificates keep one address for the controllers, and nothing
listens on an address beyond loopback and the sandbox bridge.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from bridge.errors import PermanentError
from bridge.sandbox.layout import NODE_NETWORK, ProgressFn, SandboxLayout, SandboxNode
from bridge.sandbox.procs import Daemons

HOST_BRIDGE = "skbnodes0"
HOST_ADDRESS = f"{NODE_NETWORK}.1"
PREFIX_LEN = 16
NODE_IF = "eth0"
NETNS_DIR = Path("/run/netns")


def _ip(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["ip", *argv], capture_output=True, text=True, timeout=30, check=False)
    if check and done.returncode != 0:
        raise PermanentError(f"ip {' '.join(argv)} failed: {done.stderr.strip()}")
    return done


def _host_veth(node: SandboxNode) -> str:
    return f"skbv{node.name.removeprefix('skb')}"  # skbvnode2, skbvsim0001: names stop at 15 characters


def in_node(node: SandboxNode, argv: Sequence[str], *, hostname: bool = False) -> list[str]:
    """argv run in the node's network namespace (and, with `hostname`, a UTS namespace named
    after the node, so `hostname` in a batch step says where it runs). The mount namespace is
    the host's: the kubelet's volume mounts must be the ones containerd sees."""
    if node.netns is None:
        return list(argv)
    enter = ["nsenter", f"--net={NETNS_DIR / node.netns}", "--"]
    if not hostname:
        return [*enter, *argv]
    # The node's name is ours, never a user's; it is passed as $0, not spliced into the script.
    return [*enter, "unshare", "--uts", "--", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', node.name, *argv]


def netns_exists(node: SandboxNode) -> bool:
    return node.netns is not None and (NETNS_DIR / node.netns).exists()


def ensure_network(layout: SandboxLayout, progress: ProgressFn) -> None:
    """The host bridge, then every namespaced node on it (idempotent)."""
    if not layout.namespaced_nodes:
        return
    _ensure_bridge()
    if layout.sim_nodes:
        progress(f"network namespaces of {len(layout.sim_nodes)} simulated node(s)")
    for node in layout.namespaced_nodes:
        _ensure_node_netns(node, progress if node in layout.extra_nodes else lambda _message: None)


def _ensure_bridge() -> None:
    if not Path(f"/sys/class/net/{HOST_BRIDGE}").exists():
        _ip("link", "add", HOST_BRIDGE, "type", "bridge")
    addresses = json.loads(_ip("-j", "addr", "show", "dev", HOST_BRIDGE).stdout or "[]")
    have = {info.get("local") for entry in addresses for info in entry.get("addr_info", [])}
    if HOST_ADDRESS not in have:
        _ip("addr", "add", f"{HOST_ADDRESS}/{PREFIX_LEN}", "dev", HOST_BRIDGE)
    _ip("link", "set", HOST_BRIDGE, "up")


def _ensure_node_netns(node: SandboxNode, progress: ProgressFn) -> None:
    """The node's namespace, its veth on the host bridge, its address and loopback (idempotent)."""
    assert node.netns is not None
    if not netns_exists(node):
        progress(f"creating network namespace {node.netns} ({node.address})")
        _ip("netns", "add", node.netns)
    veth = _host_veth(node)
    if not Path(f"/sys/class/net/{veth}").exists():
        _ip("-n", node.netns, "link", "del", NODE_IF, check=False)
        _ip("link", "add", veth, "type", "veth", "peer", "name", NODE_IF, "netns", node.netns)
    _ip("link", "set", veth, "master", HOST_BRIDGE, "up")
    addresses = json.loads(_ip("-n", node.netns, "-j", "addr", "show", "dev", NODE_IF).stdout or "[]")
    if node.address not in {info.get("local") for entry in addresses for info in entry.get("addr_info", [])}:
        _ip("-n", node.netns, "addr", "add", f"{node.address}/{PREFIX_LEN}", "dev", NODE_IF)
    _ip("-n", node.netns, "link", "set", NODE_IF, "up")
    _ip("-n", node.netns, "link", "set", "lo", "up")


def remove_node_netns(node: SandboxNode) -> None:
    if node.netns is not None and netns_exists(node):
        _ip("netns", "delete", node.netns, check=False)
    veth = _host_veth(node)
    if Path(f"/sys/class/net/{veth}").exists():
        _ip("link", "delete", veth, check=False)


def route_pod_subnets(layout: SandboxLayout) -> None:
    """Each node reaches every other real node's Pod subnet through that node's address.

    Routing between the Pod bridges needs forwarding on every node (the CNI bridge plugin, as
    a gateway, turns it on on the host anyway; `remember_forwarding` puts the host's back)."""
    real = layout.nodes
    if len(real) < 2:
        return
    for here in real:
        where = [] if here.netns is None else ["-n", here.netns]
        subprocess.run(in_node(here, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]), capture_output=True, timeout=30,
                       check=False)
        for there in real:
            if there is here:
                continue
            via = HOST_ADDRESS if there.on_host else there.address
            dev = HOST_BRIDGE if here.on_host else NODE_IF
            _ip(*where, "route", "replace", there.pod_subnet, "via", via, "dev", dev)


IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def remember_forwarding(layout: SandboxLayout) -> None:
    """Note the host's forwarding setting before the sandbox first changes it."""
    saved = layout.run_dir / "ip_forward.before"
    if not saved.exists() and IP_FORWARD.exists():
        saved.write_text(IP_FORWARD.read_text(encoding="ascii"), encoding="ascii")


def restore_forwarding(layout: SandboxLayout) -> None:
    saved = layout.run_dir / "ip_forward.before"
    if saved.exists():
        value = saved.read_text(encoding="ascii").strip()
        if value in {"0", "1"} and IP_FORWARD.exists():
            IP_FORWARD.write_text(value, encoding="ascii")
        saved.unlink()


def remove_bridge() -> None:
    if Path(f"/sys/class/net/{HOST_BRIDGE}").exists():
        _ip("link", "delete", HOST_BRIDGE, check=False)


# ---- the controllers on the node's loopback ------------------------------------------------

RELAY = "loopback-relay"


def forwarded_ports(layout: SandboxLayout) -> list[int]:
    """What a node's daemons and batch steps dial on 127.0.0.1: slurmctld and the API server."""
    return [layout.ports.slurmctld, layout.ports.apiserver]


def _relay_argv(layout: SandboxLayout) -> list[str]:
    ports = [arg for port in forwarded_ports(layout) for arg in ("--port", str(port))]
    paths = [str(NETNS_DIR / node.netns) for node in layout.namespaced_nodes if node.netns]
    return [sys.executable, "-m", "bridge.sandbox.loopback_relay", *ports, *paths]


def _stop_socat_relays(layout: SandboxLayout, daemons: Daemons) -> None:
    """Sandboxes of an earlier version ran a pair of socats per node and port (relay-*, listen-*):
    they hold the ports the relay listens on."""
    for pid_file in layout.run_dir.glob("*-skbnode*.pid"):
        if pid_file.stem.startswith(("relay-", "listen-")):
            daemons.stop(pid_file.stem)


def start_loopback_relay(layout: SandboxLayout, daemons: Daemons) -> None:
    """The relay for every namespaced node; restarted when the set of nodes changed."""
    _stop_socat_relays(layout, daemons)
    stamp = layout.run_dir / f"{RELAY}.argv"
    argv = _relay_argv(layout)
    wanted = "\0".join(argv)
    if daemons.running(RELAY) and stamp.exists() and stamp.read_text(encoding="utf-8") == wanted:
        return
    daemons.stop(RELAY)
    if not layout.namespaced_nodes:
        stamp.unlink(missing_ok=True)
        return
    record = daemons.start(RELAY, argv)
    stamp.write_text(wanted, encoding="utf-8")
    log = daemons.log_path(RELAY)
    mark = log.stat().st_size if log.exists() else 0
    daemons.wait_ready(record, lambda: b"loopback-relay: ports" in log.read_bytes()[mark:],
                       timeout_s=60)


def stop_loopback_relay(layout: SandboxLayout, daemons: Daemons) -> list[str]:
    (layout.run_dir / f"{RELAY}.argv").unlink(missing_ok=True)
    return [RELAY] if daemons.stop(RELAY) else []
