"""The sandbox's real compute nodes: containerd + runc + CNI bridge from Debian and a kubelet
built from the pinned `k8s.io/kubernetes`, registered under the Slurm node's name.

The host's node keeps its state under `<sandbox>/node`; each extra node has its own containerd
(root, state, socket), CNI network and Pod subnet, kubelet root and cgroup root
(`/skb-<node>`), all started in the node's network namespace (`node_net`).

Facts this machine kind imposes (see DESIGN.md section 5): cgroup v1 (`failCgroupV1: false`,
`cgroupDriver: cgroupfs`); root without CAP_SYS_RESOURCE (`restrict_oom_score_adj`); no
registry (images built by `images` and imported with `ctr`); the kubelet refuses a loopback
node IP (`node_keeper` patches an InternalIP of 127.0.0.1, plus Slurm's CPU, memory and GPU
numbers). Everything lives under `<sandbox>/node`; `stop` leaves no process, mount, network
namespace, interface or cgroup behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from bridge.errors import PermanentError
from bridge.kubernetes.kubeconfig import write_kubeconfig
from bridge.sandbox import images
from bridge.sandbox.kube_cluster import SLURM_NODE_LABEL
from bridge.sandbox.layout import SANDBOX_MARKER_ENV, ProgressFn, SandboxLayout, SandboxNode
from bridge.sandbox.node_keeper import GPU_RESOURCE
from bridge.sandbox.node_net import in_node
from bridge.sandbox.pki import SandboxPKI
from bridge.sandbox.procs import Daemons, wait_until

COMPONENTS = ("containerd", "kubelet", "node-keeper")
NODE_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "debootstrap")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_NETWORK = "skbridge-sandbox"
BRIDGE_IF = "skbcni0"
POD_NETWORK = "10.88.0.0/16"
"""Every node's Pod subnet (`SandboxNode.pod_subnet`, a /24 each) is in here."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
NETNS_DIR = Path("/run/netns")
CNI_CACHE = Path("/var/lib/cni/results")
SHIM_SOCKETS = Path("/run/containerd/s")
"""containerd 1.6 puts every shim's socket here, named sha256(<grpc address>/<namespace>/<id>)."""
NODE_KIND_LABEL = "skbridge.io/node-kind"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def daemon_name(component: str, node: SandboxNode) -> str:
    """`kubelet` for the host's node, `kubelet-skbnode2` for an extra one."""
    return component if node.on_host else f"{component}-{node.name}"


def cni_network(node: SandboxNode) -> str:
    return CNI_NETWORK if node.on_host else f"{CNI_NETWORK}-{node.name}"


def cgroup_parent(node: SandboxNode) -> str:
    """The cgroup the node's kubelet puts `kubepods` in (two kubelets must not share one)."""
    return "" if node.on_host else f"skb-{node.name}"


class NodePaths:
    def __init__(self, layout: SandboxLayout, node: SandboxNode | None = None) -> None:
        node = node or layout.node
        base = layout.node_dir if node.on_host else layout.root / "nodes" / node.name
        suffix = "" if node.on_host else f"-{node.name}"
        self.base = base
        self.containerd_root = base / "containerd"
        self.containerd_state = base / "containerd-state"
        self.containerd_config = base / "containerd.toml"
        self.containerd_socket = layout.run_dir / f"containerd{suffix}.sock"
        self.cni_conf_dir = base / "cni" / "net.d"
        self.cni_ipam_dir = base / "cni" / "ipam"
        self.kubelet_root = base / "kubelet"
        self.pod_logs = base / "pod-logs"
        self.kubelet_config = base / "kubelet.yaml"
        self.kubelet_kubeconfig = layout.kube_dir / f"kubelet{suffix}.kubeconfig"


def missing_tools() -> list[str]:
    tools = [Path("/usr/bin/containerd"), Path("/usr/bin/containerd-shim-runc-v2"), Path("/usr/bin/ctr"),
             Path("/usr/sbin/runc"), CNI_BIN_DIR / "bridge", CNI_BIN_DIR / "host-local", CNI_BIN_DIR / "loopback",
             Path("/usr/sbin/debootstrap")]
    return [str(tool) for tool in tools if not os.access(tool, os.X_OK)]


def ensure_packages(progress: ProgressFn) -> None:
    from bridge.sandbox.slurm_cluster import apt_install

    missing = missing_tools()
    if missing:
        apt_install(NODE_PACKAGES, missing, progress)


def ctr(layout: SandboxLayout, *argv: str, timeout_s: float = 120,
        node: SandboxNode | None = None) -> subprocess.CompletedProcess[str]:
    socket = NodePaths(layout, node).containerd_socket
    return subprocess.run(["ctr", "--address", str(socket), "--namespace", "k8s.io", *argv],
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _containerd_config(paths: NodePaths) -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join([
        "# Written by `skbridge sandbox up`.",
        "version = 2",
        f"root = {json.dumps(str(paths.containerd_root))}",
        f"state = {json.dumps(str(paths.containerd_state))}",
        'disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", '
        '"io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]',
        "[grpc]",
        f"  address = {json.dumps(str(paths.containerd_socket))}",
        "[ttrpc]",
        '  address = ""',
        "[debug]",
        '  address = ""',
        "[metrics]",
        '  address = ""',
        '[plugins."io.containerd.internal.v1.opt"]',
        f"  path = {json.dumps(str(paths.base / 'containerd-opt'))}",
        f"[{cri}]",
        f"  sandbox_image = {json.dumps(images.PAUSE_IMAGE)}",
        # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj would fail the sandbox.
        "  restrict_oom_score_adj = true",
        "  enable_selinux = false",
        f"[{cri}.containerd]",
        '  snapshotter = "overlayfs"',
        '  default_runtime_name = "runc"',
        f"[{cri}.containerd.runtimes.runc]",
        '  runtime_type = "io.containerd.runc.v2"',
        f"[{cri}.containerd.runtimes.runc.options]",
        "  SystemdCgroup = false",
        f"  Root = {json.dumps(str(paths.base / 'runc'))}",  # runc's state stays under the sandbox too
        f"[{cri}.cni]",
        f"  bin_dir = {json.dumps(str(CNI_BIN_DIR))}",
        f"  conf_dir = {json.dumps(str(paths.cni_conf_dir))}",
        "",
    ])


def _cni_config(paths: NodePaths, node: SandboxNode) -> dict[str, object]:
    # The bridge is the Pods' gateway to the other nodes' Pods (10.88.0.0/16, routed over the
    # node bridge by `node_net.route_pod_subnets`) and to nothing else: no default route, no
    # masquerading, so a Pod reaches other Pods and never the host's networks.
    return {
        "cniVersion": "0.4.0", "name": cni_network(node),
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE_IF, "isGateway": True, "isDefaultGateway": False, "ipMasq": False,
            "hairpinMode": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": node.pod_subnet}]],
                     "routes": [{"dst": POD_NETWORK}], "dataDir": str(paths.cni_ipam_dir)},
        }],
    }


def _kubelet_config(layout: SandboxLayout, paths: NodePaths, pki: SandboxPKI, node: SandboxNode) -> dict[str, object]:
    name = node.name
    extra: dict[str, object] = {} if node.on_host else {"cgroupRoot": f"/{cgroup_parent(node)}"}
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.address, "port": layout.ports.kubelet, "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1", "healthzPort": layout.ports.kubelet_healthz,
        "tlsCertFile": str(pki.path(f"kubelet-serving-{name}.crt")),
        "tlsPrivateKeyFile": str(pki.path(f"kubelet-serving-{name}.key")),
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki.ca_cert)}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_socket}",
        # This machine kind has cgroup v1 and no systemd as init.
        "cgroupDriver": "cgroupfs", "failCgroupV1": False, "failSwapOn": False,
        "podLogsDir": str(paths.pod_logs),
        "resolvConf": "/etc/resolv.conf",
        # The node's status carries Slurm's numbers (node_keeper); the kubelet resets CPU and
        # memory whenever it reports, so report rarely (the Lease is the heartbeat).
        "nodeStatusUpdateFrequency": "5m", "nodeStatusReportFrequency": "5m",
        # Locally built images cannot be pulled again: never garbage-collect them, and never
        # evict a job because the sandbox's disk is fuller than a production node's would be.
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "maxPods": 110,
        "containerLogMaxSize": "50Mi",
        **extra,
    }


def _node_labels(node: SandboxNode) -> str:
    return ",".join([f"{SLURM_NODE_LABEL}={node.name}", f"nvidia.com/gpu.product={node.gpu_type}",
                     f"{NODE_KIND_LABEL}=kubelet"])


def _write_configs(layout: SandboxLayout, paths: NodePaths, pki: SandboxPKI, apiserver: str,
                   node: SandboxNode) -> None:
    for directory in (paths.base, paths.cni_conf_dir, paths.cni_ipam_dir, paths.kubelet_root, paths.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(_containerd_config(paths), encoding="utf-8")
    (paths.cni_conf_dir / "10-skbridge.conflist").write_text(json.dumps(_cni_config(paths, node), indent=2),
                                                             encoding="utf-8")
    paths.kubelet_config.write_text(yaml.safe_dump(_kubelet_config(layout, paths, pki, node), sort_keys=False),
                                    encoding="utf-8")
    name = node.name
    write_kubeconfig(paths.kubelet_kubeconfig, server=apiserver, ca_pem=pki.ca_cert.read_bytes(),
                     user_name=f"system:node:{name}", client_cert_pem=pki.path(f"kubelet-{name}.crt").read_bytes(),
                     client_key_pem=pki.path(f"kubelet-{name}.key").read_bytes())


def _import_images(layout: SandboxLayout, paths: NodePaths, archives: dict[str, Path], progress: ProgressFn,
                   node: SandboxNode) -> None:
    present = set(ctr(layout, "images", "list", "--quiet", node=node).stdout.split())
    for image, archive in archives.items():
        stamp = paths.base / f"imported-{archive.name}.stamp"
        mark = f"{archive}:{archive.stat().st_mtime_ns}"
        if image in present and stamp.exists() and stamp.read_text(encoding="utf-8") == mark:
            continue
        progress(f"importing {image} into {daemon_name('containerd', node)}")
        done = ctr(layout, "images", "import", str(archive), node=node)
        if done.returncode != 0 or image not in ctr(layout, "images", "list", "--quiet", node=node).stdout.split():
            raise PermanentError(f"ctr images import {archive} did not give {image}: {done.stderr.strip() or done.stdout}")
        stamp.write_text(mark, encoding="utf-8")


def _drop_simulated_node(api: client.ApiClient, name: str, progress: ProgressFn) -> None:
    """Earlier sandboxes had kwok play this node; the kubelet registers it itself now."""
    core = client.CoreV1Api(api)
    try:
        node = core.read_node(name)
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    if KWOK_ANNOTATION in (node.metadata.annotations or {}):
        progress(f"replacing the kwok node {name} with the real kubelet")
        core.delete_node(name)


def _allow_node_identity(api: client.ApiClient, name: str) -> None:
    """The API server authorizes kubelets with the Node authorizer; a sandbox whose API server
    still runs with RBAC alone needs this binding (harmless under the Node authorizer)."""
    body = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": f"skbridge-sandbox-node-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:node"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": f"system:node:{name}"}],
    }
    try:
        client.RbacAuthorizationV1Api(api).create_cluster_role_binding(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


def node_ready_with_resources(api: client.ApiClient, layout: SandboxLayout, node: SandboxNode | None = None) -> bool:
    spec = node or layout.node
    try:
        found = client.CoreV1Api(api).read_node(spec.name)
    except ApiException:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in (found.status.conditions or []))
    allocatable = found.status.allocatable or {}
    return ready and allocatable.get(GPU_RESOURCE) == str(spec.gpus)


def _ensure_cgroup_parent(node: SandboxNode) -> None:
    """An extra node's kubelet wants its cgroup root to exist in every hierarchy; a new
    cpuset cgroup starts empty on cgroup v1, so it gets its parent's CPUs and memory nodes."""
    parent = cgroup_parent(node)
    if not parent or not CGROUP_ROOT.is_dir():
        return
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        if hierarchy.is_symlink() or not (hierarchy / "cgroup.procs").exists():
            continue
        directory = hierarchy / parent
        directory.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            mine, theirs = directory / name, hierarchy / name
            if mine.exists() and not mine.read_text().strip():
                mine.write_text(theirs.read_text())


def start(layout: SandboxLayout, daemons: Daemons, bin_dir: Path, api: client.ApiClient, apiserver: str,
          progress: ProgressFn, node: SandboxNode | None = None) -> None:
    """Start the node's containerd, kubelet and node-keeper; `wait_ready` waits for it."""
    node = node or layout.node
    missing = missing_tools()
    if missing:
        raise PermanentError(f"the sandbox's node needs {', '.join(missing)}: apt-get install {' '.join(NODE_PACKAGES)}")
    archives = images.ensure_images(progress)
    paths = NodePaths(layout, node)
    pki = SandboxPKI(layout.pki_dir)
    pki.ensure_node(node.name, node.address)
    containerd = daemon_name("containerd", node)
    if not daemons.running(containerd):
        cleanup(layout, progress, node)  # whatever a crashed run left
    _write_configs(layout, paths, pki, apiserver, node)
    _ensure_cgroup_parent(node)
    env = {**os.environ, "PATH": f"/usr/sbin:/usr/bin:/sbin:/bin:{CNI_BIN_DIR}"}
    progress(f"starting {containerd}")
    daemons.start_and_wait(containerd, in_node(node, ["/usr/bin/containerd", "--config", str(paths.containerd_config)]),
                           env=env, ready=lambda: ctr(layout, "version", timeout_s=5, node=node).returncode == 0,
                           timeout_s=30)
    _import_images(layout, paths, archives, progress, node)
    _drop_simulated_node(api, node.name, progress)
    _allow_node_identity(api, node.name)
    progress(f"starting kubelet (node {node.name})")
    node_ip = [] if node.on_host else [f"--node-ip={node.address}"]
    daemons.start(daemon_name("kubelet", node), in_node(node, [
        str(bin_dir / "kubelet"), f"--config={paths.kubelet_config}", f"--kubeconfig={paths.kubelet_kubeconfig}",
        f"--root-dir={paths.kubelet_root}", f"--cert-dir={paths.base / 'kubelet-pki'}",
        f"--hostname-override={node.name}", f"--node-labels={_node_labels(node)}", *node_ip, "--v=1",
    ]), env=env)
    daemons.start(daemon_name("node-keeper", node), [
        sys.executable, "-m", "bridge.sandbox.node_keeper", str(layout.admin_kubeconfig), node.name,
        str(node.cpus), str(node.memory_mib), str(node.gpus), node.address,
    ])


def wait_ready(layout: SandboxLayout, daemons: Daemons, api: client.ApiClient, node: SandboxNode | None = None) -> None:
    node = node or layout.node
    keeper = daemons.running(daemon_name("node-keeper", node))
    if keeper is None:
        raise PermanentError(f"the node-keeper of {node.name} is not running; see "
                             f"{daemons.log_path(daemon_name('node-keeper', node))}")
    daemons.wait_ready(keeper, lambda: node_ready_with_resources(api, layout, node), timeout_s=90)
    if daemons.running(daemon_name("kubelet", node)) is None:
        raise PermanentError(f"the kubelet of {node.name} exited during start-up; "
                             f"see {daemons.log_path(daemon_name('kubelet', node))}")


# ---- stopping ---------------------------------------------------------------------------


def _drain(api: client.ApiClient, node: SandboxNode, progress: ProgressFn, timeout_s: float = 30) -> None:
    """Delete the node's Pods while the kubelet runs, so it stops them and tears down their
    network the normal way (CNI DEL, namespace removed)."""
    core = client.CoreV1Api(api)
    selector = f"spec.nodeName={node.name}"
    try:
        pods = core.list_pod_for_all_namespaces(field_selector=selector).items
    except Exception:
        return
    if not pods:
        return
    progress(f"stopping {len(pods)} Pod(s) on {node.name}")
    for pod in pods:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)
    with contextlib.suppress(Exception):
        wait_until(lambda: not core.list_pod_for_all_namespaces(field_selector=selector).items,
                   what="the node's Pods to stop", timeout_s=timeout_s)


def _cgroup_dirs(node: SandboxNode) -> Iterator[Path]:
    """Every cgroup the node's kubelet made (cgroupfs driver), deepest first, in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / cgroup_parent(node) / KUBEPODS
        if top.is_dir():
            found = [Path(root) for root, _dirs, _files in os.walk(top)]
            yield from sorted(found, key=lambda p: len(p.parts), reverse=True)


def kill_containers(node: SandboxNode) -> int:
    """SIGKILL every process in the node's Pod cgroups; returns how many there were."""
    pids: set[int] = set()
    for directory in _cgroup_dirs(node):
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _kill_shims(layout: SandboxLayout, paths: NodePaths) -> None:
    """containerd's shims outlive it by design; ours carry the sandbox's marker and name the
    node's containerd as theirs (`-address <socket>`)."""
    marker = f"{SANDBOX_MARKER_ENV}={layout.root}".encode()
    address = str(paths.containerd_socket).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not os.readlink(entry / "exe").endswith("/containerd-shim-runc-v2"):
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            if address not in (entry / "cmdline").read_bytes().split(b"\0"):
                continue
            os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            continue


def mounts_below(root: Path) -> list[str]:
    prefix = str(root) + "/"
    points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    # mountinfo escapes spaces as \040; the sandbox's paths have none.
    return [p for p in points if p == str(root) or p.startswith(prefix)]


def _unmount_all(root: Path) -> None:
    for _ in range(5):
        points = mounts_below(root)
        if not points:
            return
        for point in sorted(set(points), key=lambda p: p.count("/"), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _ip_json(node: SandboxNode, *argv: str) -> list[dict[str, object]]:
    where = [] if node.netns is None else ["-n", node.netns]
    out = subprocess.run(["ip", *where, "-j", *argv], capture_output=True, text=True, check=False)
    try:
        parsed = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    except json.JSONDecodeError:
        return []
    return parsed if isinstance(parsed, list) else []


def sandbox_netns(node: SandboxNode | None = None) -> list[str]:
    """Network namespaces of the node's Pods on its bridge: their veth peers are enslaved to it."""
    node = node or SandboxNode()
    ids = {link.get("link_netnsid") for link in _ip_json(node, "link", "show", "master", BRIDGE_IF)} - {None}
    return [str(ns["name"]) for ns in _ip_json(node, "netns", "list") if ns.get("id") in ids]


def bridge_exists(node: SandboxNode | None = None) -> bool:
    node = node or SandboxNode()
    if node.netns is None:
        return Path(f"/sys/class/net/{BRIDGE_IF}").exists()
    return bool(_ip_json(node, "link", "show", BRIDGE_IF))


def _remove_network(node: SandboxNode) -> None:
    for name in sandbox_netns(node):
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    if bridge_exists(node):
        where = [] if node.netns is None else ["-n", node.netns]
        subprocess.run(["ip", *where, "link", "delete", BRIDGE_IF], capture_output=True, check=False)


def _forget_cni_results(node: SandboxNode) -> None:
    """libcni caches each attachment's result; a Pod killed without CNI DEL leaves its files."""
    prefix = f"{cni_network(node)}-"
    for entry in CNI_CACHE.glob(f"{prefix}*") if CNI_CACHE.is_dir() else []:
        container_id = entry.name.removeprefix(prefix).rsplit("-", 1)[0]
        for path in (entry, CNI_CACHE / f"cni-loopback-{container_id}-lo"):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def _remove_shim_sockets(paths: NodePaths) -> None:
    """A shim that was killed leaves its socket; ours are named after our task bundles."""
    tasks = paths.containerd_state / "io.containerd.runtime.v2.task"
    for namespace in tasks.iterdir() if tasks.is_dir() else []:
        for bundle in namespace.iterdir():
            digest = hashlib.sha256(f"{paths.containerd_socket}/{namespace.name}/{bundle.name}".encode()).hexdigest()
            with contextlib.suppress(FileNotFoundError):
                (SHIM_SOCKETS / digest).unlink()


def cleanup(layout: SandboxLayout, progress: ProgressFn, node: SandboxNode | None = None) -> None:
    """After the node's daemons are gone: containers, shims, network, mounts, cgroups, IP leases."""
    node = node or layout.node
    killed = kill_containers(node)
    paths = NodePaths(layout, node)
    _kill_shims(layout, paths)
    _remove_network(node)
    _unmount_all(paths.base)
    for directory in _cgroup_dirs(node):
        with contextlib.suppress(OSError):
            directory.rmdir()
    if cgroup_parent(node) and CGROUP_ROOT.is_dir():
        for hierarchy in CGROUP_ROOT.iterdir():
            with contextlib.suppress(OSError):
                (hierarchy / cgroup_parent(node)).rmdir()
    _forget_cni_results(node)
    _remove_shim_sockets(paths)
    if paths.cni_ipam_dir.is_dir():
        for lease in paths.cni_ipam_dir.rglob("*"):
            if lease.is_file():
                lease.unlink()
    if killed:
        progress(f"killed {killed} leftover container process(es)")


def stop(layout: SandboxLayout, daemons: Daemons, api: client.ApiClient | None, progress: ProgressFn,
         node: SandboxNode | None = None) -> list[str]:
    node = node or layout.node
    kubelet, containerd = daemon_name("kubelet", node), daemon_name("containerd", node)
    if api is not None and daemons.running(kubelet) and daemons.running(containerd):
        _drain(api, node, progress)
    stopped = [name for name in (daemon_name("node-keeper", node), kubelet) if daemons.stop(name)]
    kill_containers(node)
    time.sleep(0.2)
    stopped += [name for name in (containerd,) if daemons.stop(name)]
    cleanup(layout, progress, node)
    return stopped
