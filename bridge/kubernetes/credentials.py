"""The bridge's own Kubernetes credential: a ServiceAccount token in a root-only kubeconfig."""

from __future__ import annotations

import base64
from pathlib import Path

from kubernetes import client

from bridge.errors import TemporaryError
from bridge.kubernetes.kubeconfig import write_kubeconfig
from bridge.waiting import poll

BRIDGE_NAMESPACE = "slurm-bridge"
BRIDGE_TOKEN_SECRET = "skbridge-token"  # noqa: S105 - a Secret name, not a secret


def read_bridge_token(api: client.ApiClient, *, namespace: str = BRIDGE_NAMESPACE, timeout_s: float = 60.0) -> str:
    """Wait for the token controller to fill the bridge's token Secret and return the token."""
    core = client.CoreV1Api(api)
    token = poll(lambda: (core.read_namespaced_secret(BRIDGE_TOKEN_SECRET, namespace).data or {}).get("token"),
                 timeout_s=timeout_s, interval_s=0.5)
    if not token:
        raise TemporaryError(
            f"secret {namespace}/{BRIDGE_TOKEN_SECRET} has no token after {timeout_s:.0f}s; "
            "is kube-controller-manager running with --service-account-private-key-file?"
        )
    return base64.b64decode(token).decode("ascii")


def write_bridge_kubeconfig(api: client.ApiClient, path: Path, *, namespace: str = BRIDGE_NAMESPACE) -> None:
    cfg = api.configuration
    ca_pem = Path(cfg.ssl_ca_cert).read_bytes() if cfg.ssl_ca_cert else b""
    token = read_bridge_token(api, namespace=namespace)
    write_kubeconfig(path, server=cfg.host, ca_pem=ca_pem, user_name="skbridge", token=token, namespace=namespace)
