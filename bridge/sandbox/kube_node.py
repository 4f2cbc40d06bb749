"""The sandbox's real compute node: containerd + runc + CNI bridge from Debian and a kubelet
built from the pinned `k8s.io/kubernetes`, registered under the Slurm node's name.

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
from bridge.sandbox.layout import SANDBOX_MARKER_ENV, ProgressFn, SandboxLayout
from bridge.sandbox.node_keeper import GPU_RESOURCE
from bridge.sandbox.pki import SandboxPKI
from bridge.sandbox.procs import Daemons, wait_until

COMPONENTS = ("containerd", "kubelet", "node-keeper")
NODE_PACKAGES = ("containerd", "runc", "containernetworking-plugins", "debootstrap")
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_NETWORK = "skbridge-sandbox"
BRIDGE_IF = "skbcni0"
POD_SUBNET = "10.88.0.0/24"
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
NETNS_DIR = Path("/run/netns")
CNI_CACHE = Path("/var/lib/cni/results")
SHIM_SOCKETS = Path("/run/containerd/s")
"""containerd 1.6 puts every shim's socket here, named sha256(<grpc address>/<namespace>/<id>)."""
NODE_KIND_LABEL = "skbridge.io/node-kind"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


class NodePaths:
    def __init__(self, layout: SandboxLayout) -> None:
        base = layout.node_dir
        self.base = base
        self.containerd_root = base / "containerd"
        self.containerd_state = base / "containerd-state"
        self.containerd_config = base / "containerd.toml"
        self.containerd_socket = layout.run_dir / "containerd.sock"
        self.cni_conf_dir = base / "cni" / "net.d"
        self.cni_ipam_dir = base / "cni" / "ipam"
        self.kubelet_root = base / "kubelet"
        self.pod_logs = base / "pod-logs"
        self.kubelet_config = base / "kubelet.yaml"
        self.kubelet_kubeconfig = layout.kube_dir / "kubelet.kubeconfig"


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


def ctr(layout: SandboxLayout, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ctr", "--address", str(NodePaths(layout).containerd_socket), "--namespace", "k8s.io", *argv],
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def _containerd_config(layout: SandboxLayout, paths: NodePaths) -> str:
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


def _cni_config(paths: NodePaths) -> dict[str, object]:
    # No gateway address and no masquerading: Pods get an address on a bridge that only
    # they are on; the host's own interfaces and routes are left alone.
    return {
        "cniVersion": "0.4.0", "name": CNI_NETWORK,
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE_IF, "isGateway": False, "ipMasq": False, "hairpinMode": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]], "dataDir": str(paths.cni_ipam_dir)},
        }],
    }


def _kubelet_config(layout: SandboxLayout, paths: NodePaths, pki: SandboxPKI) -> dict[str, object]:
    name = layout.node.name
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": "127.0.0.1", "port": layout.ports.kubelet, "readOnlyPort": 0,
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
    }


def _node_labels(layout: SandboxLayout) -> str:
    node = layout.node
    return ",".join([f"{SLURM_NODE_LABEL}={node.name}", f"nvidia.com/gpu.product={node.gpu_type}",
                     f"{NODE_KIND_LABEL}=kubelet"])


def _write_configs(layout: SandboxLayout, paths: NodePaths, pki: SandboxPKI, apiserver: str) -> None:
    for directory in (paths.base, paths.cni_conf_dir, paths.cni_ipam_dir, paths.kubelet_root, paths.pod_logs):
        directory.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(_containerd_config(layout, paths), encoding="utf-8")
    (paths.cni_conf_dir / "10-skbridge.conflist").write_text(json.dumps(_cni_config(paths), indent=2), encoding="utf-8")
    paths.kubelet_config.write_text(yaml.safe_dump(_kubelet_config(layout, paths, pki), sort_keys=False),
                                    encoding="utf-8")
    name = layout.node.name
    write_kubeconfig(paths.kubelet_kubeconfig, server=apiserver, ca_pem=pki.ca_cert.read_bytes(),
                     user_name=f"system:node:{name}", client_cert_pem=pki.path(f"kubelet-{name}.crt").read_bytes(),
                     client_key_pem=pki.path(f"kubelet-{name}.key").read_bytes())


def _import_images(layout: SandboxLayout, paths: NodePaths, archives: dict[str, Path], progress: ProgressFn) -> None:
    present = set(ctr(layout, "images", "list", "--quiet").stdout.split())
    for image, archive in archives.items():
        stamp = paths.base / f"imported-{archive.name}.stamp"
        mark = f"{archive}:{archive.stat().st_mtime_ns}"
        if image in present and stamp.exists() and stamp.read_text(encoding="utf-8") == mark:
            continue
        progress(f"importing {image} into containerd")
        done = ctr(layout, "images", "import", str(archive))
        if done.returncode != 0 or image not in ctr(layout, "images", "list", "--quiet").stdout.split():
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


def node_ready_with_resources(api: client.ApiClient, layout: SandboxLayout) -> bool:
    try:
        node = client.CoreV1Api(api).read_node(layout.node.name)
    except ApiException:
        return False
    ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
    allocatable = node.status.allocatable or {}
    return ready and allocatable.get(GPU_RESOURCE) == str(layout.node.gpus)


def start(layout: SandboxLayout, daemons: Daemons, bin_dir: Path, api: client.ApiClient, apiserver: str,
          progress: ProgressFn) -> None:
    missing = missing_tools()
    if missing:
        raise PermanentError(f"the sandbox's node needs {', '.join(missing)}: apt-get install {' '.join(NODE_PACKAGES)}")
    archives = images.ensure_images(progress)
    paths = NodePaths(layout)
    pki = SandboxPKI(layout.pki_dir)
    pki.ensure_node(layout.node.name)
    if not daemons.running("containerd"):
        cleanup(layout, progress)  # whatever a crashed run left
    _write_configs(layout, paths, pki, apiserver)
    env = {**os.environ, "PATH": f"/usr/sbin:/usr/bin:/sbin:/bin:{CNI_BIN_DIR}"}
    progress("starting containerd")
    daemons.start_and_wait("containerd", ["/usr/bin/containerd", "--config", str(paths.containerd_config)], env=env,
                           ready=lambda: ctr(layout, "version", timeout_s=5).returncode == 0, timeout_s=30)
    _import_images(layout, paths, archives, progress)
    _drop_simulated_node(api, layout.node.name, progress)
    _allow_node_identity(api, layout.node.name)
    progress(f"starting kubelet (node {layout.node.name})")
    daemons.start("kubelet", [
        str(bin_dir / "kubelet"), f"--config={paths.kubelet_config}", f"--kubeconfig={paths.kubelet_kubeconfig}",
        f"--root-dir={paths.kubelet_root}", f"--cert-dir={paths.base / 'kubelet-pki'}",
        f"--hostname-override={layout.node.name}", f"--node-labels={_node_labels(layout)}", "--v=1",
    ], env=env)
    node = layout.node
    keeper = daemons.start("node-keeper", [
        sys.executable, "-m", "bridge.sandbox.node_keeper", str(layout.admin_kubeconfig), node.name,
        str(node.cpus), str(node.memory_mib), str(node.gpus),
    ])
    daemons.wait_ready(keeper, lambda: node_ready_with_resources(api, layout), timeout_s=90)
    kubelet = daemons.running("kubelet")
    if kubelet is None:
        raise PermanentError(f"the kubelet exited during start-up; see {daemons.log_path('kubelet')}")


# ---- stopping ---------------------------------------------------------------------------


def _drain(api: client.ApiClient, layout: SandboxLayout, progress: ProgressFn, timeout_s: float = 30) -> None:
    """Delete the node's Pods while the kubelet runs, so it stops them and tears down their
    network the normal way (CNI DEL, namespace removed)."""
    core = client.CoreV1Api(api)
    selector = f"spec.nodeName={layout.node.name}"
    try:
        pods = core.list_pod_for_all_namespaces(field_selector=selector).items
    except Exception:
        return
    if not pods:
        return
    progress(f"stopping {len(pods)} Pod(s) on {layout.node.name}")
    for pod in pods:
        with contextlib.suppress(ApiException):
            core.delete_namespaced_pod(pod.metadata.name, pod.metadata.namespace, grace_period_seconds=1)
    with contextlib.suppress(Exception):
        wait_until(lambda: not core.list_pod_for_all_namespaces(field_selector=selector).items,
                   what="the node's Pods to stop", timeout_s=timeout_s)


def _cgroup_dirs() -> Iterator[Path]:
    """Every cgroup the kubelet made (cgroupfs driver), deepest first, in every hierarchy."""
    if not CGROUP_ROOT.is_dir():
        return
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        top = hierarchy / KUBEPODS
        if top.is_dir():
            found = [Path(root) for root, _dirs, _files in os.walk(top)]
            yield from sorted(found, key=lambda p: len(p.parts), reverse=True)


def _kill_containers() -> int:
    pids: set[int] = set()
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            pids.update(int(pid) for pid in (directory / "cgroup.procs").read_text().split())
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return len(pids)


def _kill_shims(layout: SandboxLayout) -> None:
    """containerd's shims outlive it by design; ours carry the sandbox's marker."""
    marker = f"{SANDBOX_MARKER_ENV}={layout.root}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not os.readlink(entry / "exe").endswith("/containerd-shim-runc-v2"):
                continue
            if marker not in (entry / "environ").read_bytes().split(b"\0"):
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


def _ip_json(*argv: str) -> list[dict[str, object]]:
    out = subprocess.run(["ip", "-j", *argv], capture_output=True, text=True, check=False)
    try:
        parsed = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else []
    except json.JSONDecodeError:
        return []
    return parsed if isinstance(parsed, list) else []


def sandbox_netns() -> list[str]:
    """Network namespaces of Pods on our bridge: their veth peers are enslaved to it."""
    ids = {link.get("link_netnsid") for link in _ip_json("link", "show", "master", BRIDGE_IF)} - {None}
    return [str(ns["name"]) for ns in _ip_json("netns", "list") if ns.get("id") in ids]


def bridge_exists() -> bool:
    return Path(f"/sys/class/net/{BRIDGE_IF}").exists()


def _remove_network() -> None:
    for name in sandbox_netns():
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
    if bridge_exists():
        subprocess.run(["ip", "link", "delete", BRIDGE_IF], capture_output=True, check=False)


def _forget_cni_results() -> None:
    """libcni caches each attachment's result; a Pod killed without CNI DEL leaves its files."""
    prefix = f"{CNI_NETWORK}-"
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


def cleanup(layout: SandboxLayout, progress: ProgressFn) -> None:
    """After the daemons are gone: containers, shims, network, mounts, cgroups, IP leases."""
    killed = _kill_containers()
    _kill_shims(layout)
    _remove_network()
    paths = NodePaths(layout)
    _unmount_all(paths.base)
    for directory in _cgroup_dirs():
        with contextlib.suppress(OSError):
            directory.rmdir()
    _forget_cni_results()
    _remove_shim_sockets(paths)
    if paths.cni_ipam_dir.is_dir():
        for lease in paths.cni_ipam_dir.rglob("*"):
            if lease.is_file():
                lease.unlink()
    if killed:
        progress(f"killed {killed} leftover container process(es)")


def stop(layout: SandboxLayout, daemons: Daemons, api: client.ApiClient | None, progress: ProgressFn) -> list[str]:
    if api is not None and daemons.running("kubelet") and daemons.running("containerd"):
        _drain(api, layout, progress)
    stopped = [name for name in ("node-keeper", "kubelet") if daemons.stop(name)]
    _kill_containers()
    time.sleep(0.2)
    stopped += [name for name in ("containerd",) if daemons.stop(name)]
    cleanup(layout, progress)
    return stopped
