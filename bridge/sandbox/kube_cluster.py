"""The sandbox's Kubernetes control plane: etcd, kube-apiserver, controller-manager, scheduler,
and kwok for extra simulated nodes (`ensure_simulated_node`). The node jobs run on is a real
kubelet (`kube_node`).

Everything listens on loopback only and authenticates with certificates from `pki/`.
"""

from __future__ import annotations

import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from bridge.kubernetes.admission import bridge_manifests
from bridge.kubernetes.apply import apply_manifests
from bridge.kubernetes.credentials import write_bridge_kubeconfig
from bridge.kubernetes.kubeconfig import write_kubeconfig
from bridge.resources import resource_path
from bridge.sandbox.layout import ProgressFn, SandboxLayout, SandboxNode
from bridge.sandbox.pki import SandboxPKI
from bridge.sandbox.procs import Daemons
from bridge.settings import load_settings

KWOK_NODE_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
SLURM_NODE_LABEL = "slurm.schedmd.com/node"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")


def apiserver_url(layout: SandboxLayout) -> str:
    return f"https://127.0.0.1:{layout.ports.apiserver}"


def _component_kubeconfig(layout: SandboxLayout, pki: SandboxPKI, name: str) -> Path:
    path = layout.kube_dir / f"{name}.kubeconfig"
    if not path.exists():
        write_kubeconfig(
            path, server=apiserver_url(layout), ca_pem=pki.ca_cert.read_bytes(), user_name=name,
            client_cert_pem=pki.path(f"{name}.crt").read_bytes(), client_key_pem=pki.path(f"{name}.key").read_bytes(),
        )
    return path


def _https_ok(url: str, pki: SandboxPKI, *, verify: bool = True) -> bool:
    # controller-manager and scheduler serve /healthz with a self-signed certificate.
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert)) if verify else ssl._create_unverified_context()  # noqa: S323
    ctx.load_cert_chain(str(pki.path("admin.crt")), str(pki.path("admin.key")))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:  # noqa: S310 (fixed https URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 (fixed loopback URL)
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def admin_api(layout: SandboxLayout) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(layout.admin_kubeconfig))


def start(layout: SandboxLayout, daemons: Daemons, bin_dir: Path, progress: ProgressFn) -> None:
    ports = layout.ports
    kube = layout.kube_dir
    kube.mkdir(parents=True, exist_ok=True)
    pki = SandboxPKI(layout.pki_dir)
    pki.ensure()
    _component_kubeconfig(layout, pki, "admin")  # == layout.admin_kubeconfig
    env = dict(os.environ)
    etcd_url = f"http://127.0.0.1:{ports.etcd_client}"

    progress("starting etcd")
    daemons.start_and_wait("etcd", [
        str(bin_dir / "etcd"), "--name=skb", f"--data-dir={kube / 'etcd'}",
        f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
        f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
        f"--initial-cluster=skb=http://127.0.0.1:{ports.etcd_peer}",
        "--unsafe-no-fsync",  # a throwaway sandbox trades durability for speed
        "--quota-backend-bytes=2147483648", "--log-level=warn",
    ], env=env, ready=lambda: _http_ok(f"{etcd_url}/health"), timeout_s=30)

    progress("starting kube-apiserver")
    p = pki.path
    daemons.start_and_wait("kube-apiserver", [
        str(bin_dir / "kube-apiserver"), f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1", f"--secure-port={ports.apiserver}",
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={p('apiserver.crt')}", f"--tls-private-key-file={p('apiserver.key')}",
        f"--client-ca-file={pki.ca_cert}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p('sa.pub')}", f"--service-account-signing-key-file={p('sa.key')}",
        "--service-cluster-ip-range=10.96.0.0/16",
        "--authorization-mode=Node,RBAC", "--allow-privileged=false",
        f"--kubelet-client-certificate={p('apiserver-kubelet-client.crt')}",
        f"--kubelet-client-key={p('apiserver-kubelet-client.key')}",
        "--kubelet-preferred-address-types=InternalIP",
        "--profiling=false", "--event-ttl=2h", "--v=1",
    ], env=env, ready=lambda: _https_ok(f"{apiserver_url(layout)}/readyz", pki), timeout_s=90)

    progress("starting kube-controller-manager and kube-scheduler")
    kcm_cfg = _component_kubeconfig(layout, pki, "kube-controller-manager")
    kcm = daemons.start("kube-controller-manager", [
        str(bin_dir / "kube-controller-manager"), f"--kubeconfig={kcm_cfg}",
        f"--authentication-kubeconfig={kcm_cfg}", f"--authorization-kubeconfig={kcm_cfg}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.controller_manager}",
        f"--service-account-private-key-file={p('sa.key')}", f"--root-ca-file={pki.ca_cert}",
        "--use-service-account-credentials=true", "--leader-elect=false", "--v=1",
        # A pre-bound PV/PVC pair that loses a race in the PV controller waits for this resync
        # (default 15 s); the prolog waits for the pair to bind, so keep it short here.
        "--pvclaimbinder-sync-period=1s",
        "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-node-route-controller",
    ], env=env)
    sched_cfg = _component_kubeconfig(layout, pki, "kube-scheduler")
    scheduler = daemons.start("kube-scheduler", [
        str(bin_dir / "kube-scheduler"), f"--kubeconfig={sched_cfg}",
        f"--authentication-kubeconfig={sched_cfg}", f"--authorization-kubeconfig={sched_cfg}",
        "--bind-address=127.0.0.1", f"--secure-port={ports.scheduler}", "--leader-elect=false", "--v=1",
    ], env=env)
    daemons.wait_ready(kcm, lambda: _https_ok(f"https://127.0.0.1:{ports.controller_manager}/healthz", pki, verify=False),
                       timeout_s=60)
    daemons.wait_ready(scheduler, lambda: _https_ok(f"https://127.0.0.1:{ports.scheduler}/healthz", pki, verify=False),
                       timeout_s=60)

    progress("starting kwok")
    kwok_cfg = _component_kubeconfig(layout, pki, "kwok")
    # kwok manages only nodes annotated as simulated; nothing waits for it.
    daemons.start("kwok", [
        str(bin_dir / "kwok"), f"--kubeconfig={kwok_cfg}",
        f"--config={_kwok_config(layout)}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION[0]}={KWOK_NODE_ANNOTATION[1]}",
        "--node-ip=127.0.0.1", f"--node-port={ports.kwok_server}",
        f"--server-address=127.0.0.1:{ports.kwok_server}",
        f"--tls-cert-file={p('kwok-serving.crt')}", f"--tls-private-key-file={p('kwok-serving.key')}",
        "--node-lease-duration-seconds=40", "--cidr=10.244.0.0/16",
    ], env=env)

    api = admin_api(layout)
    progress("applying deploy/kubernetes")
    manifests = sorted(resource_path("deploy/kubernetes").glob("*.yaml"))
    apply_manifests(api, bridge_manifests(manifests, load_settings(layout.bridge_config)))
    write_bridge_kubeconfig(api, layout.bridge_kubeconfig)


def _kwok_config(layout: SandboxLayout) -> Path:
    """Stages, plus a log for every bridge Pod: kwok serves pods/log from a CRI-format file."""
    pod_log = layout.kube_dir / "pod-output.log"
    pod_log.write_text(
        "2026-01-01T00:00:00.000000000Z stdout F [kwok sandbox] this container is simulated: "
        "the job's script was handed to the Pod but kwok does not execute it\n", encoding="utf-8")
    cluster_logs = {
        "apiVersion": "kwok.x-k8s.io/v1alpha1", "kind": "ClusterLogs", "metadata": {"name": "skb-sandbox-logs"},
        "spec": {"selector": {"matchNamespaces": ["slurm-bridge"]},
                 "logs": [{"containers": ["job"], "logsFile": str(pod_log), "follow": False}]},
    }
    path = layout.kube_dir / "kwok.yaml"
    stages = resource_path("deploy/sandbox/kwok-stages.yaml").read_text(encoding="utf-8")
    path.write_text(stages + "---\n" + yaml.safe_dump(cluster_logs), encoding="utf-8")
    return path


def node_manifest(layout: SandboxLayout, name: str, shape: SandboxNode | None = None) -> dict[str, object]:
    """A kwok node shaped like `shape` (default: the host's Slurm node), for scale work."""
    node = shape or layout.node
    capacity = {"cpu": str(node.cpus), "memory": f"{node.memory_mib}Mi", "pods": "110",
                "nvidia.com/gpu": str(node.gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {KWOK_NODE_ANNOTATION[0]: KWOK_NODE_ANNOTATION[1]},
            "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "type": "kwok",
                       SLURM_NODE_LABEL: name, "nvidia.com/gpu.product": node.gpu_type},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


def ensure_simulated_node(api: client.ApiClient, layout: SandboxLayout, name: str,
                          shape: SandboxNode | None = None) -> None:
    if name in {node.name for node in layout.nodes}:
        raise ValueError(f"{name} is one of the sandbox's real nodes; a simulated node needs another name")
    core = client.CoreV1Api(api)
    body = node_manifest(layout, name, shape)
    try:
        core.create_node(body)
    except ApiException as exc:
        if exc.status != 409:
            raise
    # Node creation keeps status only on some versions; set the mirrored capacity explicitly.
    core.patch_node_status(name, {"status": body["status"]})


def delete_node(api: client.ApiClient, name: str) -> None:
    try:
        client.CoreV1Api(api).delete_node(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


def node_ready(api: client.ApiClient, name: str) -> bool:
    try:
        node = client.CoreV1Api(api).read_node(name)
    except ApiException:
        return False
    return any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))


def stop(daemons: Daemons) -> list[str]:
    return [name for name in reversed(COMPONENTS) if daemons.stop(name)]
