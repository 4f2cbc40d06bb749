"""Kubeconfig files the bridge writes: for the sandbox's components, the hooks, and attach."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import yaml


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_kubeconfig(**fields: Any) -> str:
    """A self-contained kubeconfig (credentials inline), as YAML."""
    return yaml.safe_dump(kubeconfig_document(**fields), sort_keys=False)


def kubeconfig_document(
    *,
    server: str,
    ca_pem: bytes,
    user_name: str,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """A self-contained kubeconfig (credentials inline), as a mapping."""
    user: dict[str, Any] = {}
    if token is not None:
        user["token"] = token
    if client_cert_pem is not None and client_key_pem is not None:
        user["client-certificate-data"] = _b64(client_cert_pem)
        user["client-key-data"] = _b64(client_key_pem)
    context: dict[str, Any] = {"cluster": "cluster", "user": user_name}
    if namespace:
        context["namespace"] = namespace
    cluster: dict[str, Any] = {"server": server}
    if ca_pem:
        cluster["certificate-authority-data"] = _b64(ca_pem)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "cluster", "cluster": cluster}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": "default", "context": context}],
        "current-context": "default",
    }
    return doc


def write_kubeconfig(path: Path, *, mode: int = 0o600, **fields: Any) -> None:
    """Render and write atomically with `mode` (root-only by default: it holds a credential)."""
    text = render_kubeconfig(**fields)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    tmp.chmod(mode)
    tmp.replace(path)
