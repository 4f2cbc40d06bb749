"""Server-side apply of manifest files, so `install.sh` and the sandbox are idempotent."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, dynamic

FIELD_MANAGER = "slurm-k8s-bridge"


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                docs.append(doc)
    return docs


def apply_manifests(api: client.ApiClient, docs: Iterable[dict[str, Any]]) -> list[str]:
    """Apply each document with server-side apply; returns `kind/name` of each."""
    dyn = dynamic.DynamicClient(api)
    applied: list[str] = []
    for doc in docs:
        resource = dyn.resources.get(api_version=doc["apiVersion"], kind=doc["kind"])
        meta = doc["metadata"]
        kwargs: dict[str, Any] = {"body": doc, "name": meta["name"], "field_manager": FIELD_MANAGER,
                                  "force_conflicts": True}
        if resource.namespaced:
            kwargs["namespace"] = meta.get("namespace", "default")
        resource.server_side_apply(**kwargs)
        applied.append(f"{doc['kind']}/{meta['name']}")
    return applied
