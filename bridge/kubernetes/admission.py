"""The parameters of the bridge's admission policy (deploy/kubernetes/20-admission.yaml).

The policy limits the bridge's own credential to what the bridge makes; the site's values
(the NAS root its volumes must lie under, the lowest uid a Pod may run as) come from the
bridge's settings and go into a ConfigMap the bridge itself may not change.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bridge.kubernetes.apply import load_manifests
from bridge.settings import Settings

PARAMS_NAME = "skbridge-admission"


def admission_parameters(settings: Settings) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": PARAMS_NAME, "namespace": settings.kubernetes.namespace,
                     "labels": {"app.kubernetes.io/managed-by": "slurm-k8s-bridge"}},
        "data": {"nasRoot": str(settings.nas.root), "uidMin": str(settings.policy.uid_min)},
    }


def bridge_manifests(paths: Iterable[Path], settings: Settings) -> list[dict[str, Any]]:
    """deploy/kubernetes's documents with the policy's parameters placed before the policy
    (its binding denies everything the bridge asks while its parameters are missing)."""
    docs = load_manifests(paths)
    at = next((i for i, doc in enumerate(docs) if doc.get("kind", "").startswith("ValidatingAdmissionPolicy")),
              len(docs))
    return [*docs[:at], admission_parameters(settings), *docs[at:]]
