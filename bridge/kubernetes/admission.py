"""The bridge's admission policy (deploy/kubernetes/20-admission.yaml), with the site's values.

The policy limits the bridge's own credential to what the bridge makes. Its site values
(the NAS root volumes must lie under, the lowest uid a Pod may run as, the bridge's
namespace) are written into the policy itself as CEL literals when it is applied: the
policy is cluster-scoped and out of the bridge's reach, whereas a parameter object in the
bridge's namespace could be deleted by the very credential it is meant to confine.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bridge.kubernetes.apply import load_manifests
from bridge.settings import Settings

POLICY_KIND = "ValidatingAdmissionPolicy"


def _cel_string(value: str) -> str:
    # A JSON string literal is a valid CEL string literal (same escapes for what paths hold).
    return json.dumps(value)


def site_values(settings: Settings) -> dict[str, str]:
    root = str(settings.nas.root).rstrip("/") + "/"
    return {"nasRoot": _cel_string(root), "uidMin": str(int(settings.policy.uid_min)),
            "bridgeNamespace": _cel_string(settings.kubernetes.namespace)}


def bridge_manifests(paths: Iterable[Path], settings: Settings) -> list[dict[str, Any]]:
    """deploy/kubernetes's documents, the policy's variables set to this site's values."""
    values = site_values(settings)
    docs = load_manifests(paths)
    for doc in docs:
        if doc.get("kind") == POLICY_KIND:
            for variable in doc["spec"].get("variables") or []:
                if variable["name"] in values:
                    variable["expression"] = values[variable["name"]]
    return docs
