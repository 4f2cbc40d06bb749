"""Pinned versions of everything the sandbox builds from source.

Changing a version changes the cache key, so a new build lands beside the old one
instead of silently mixing binaries.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ComponentVersions:
    kubernetes: str = "v1.35.4"
    etcd: str = "v3.6.16"
    kwok: str = "v0.8.0"

    @property
    def staging(self) -> str:
        """The `v0.Y.Z` tag the `k8s.io/*` staging modules carry for this Kubernetes."""
        return "v0." + self.kubernetes.removeprefix("v1.")

    @property
    def cache_key(self) -> str:
        return f"k8s-{self.kubernetes}_etcd-{self.etcd}_kwok-{self.kwok}"


PINNED = ComponentVersions()
