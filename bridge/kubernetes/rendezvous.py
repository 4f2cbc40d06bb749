"""A multi-node job's start: every rank's Pod Ready, then every gate opened with the rendezvous.

The ranks' addresses exist only once their Pods run, so they cannot be in the rendered Pods;
the prolog writes them beside the start gate in the same update (see pod-template.yaml):
`skbridge.io/rendezvous` (MASTER_ADDR, loaded into the script's environment) and
`skbridge.io/hostfile` (one line per rank: `<address> slots=<cpus>`, rank order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import TemporaryError
from bridge.kubernetes.client import Kube
from bridge.kubernetes.objects import object_path, open_start_gate
from bridge.kubernetes.render import ANNOTATION_HOSTFILE, ANNOTATION_RENDEZVOUS


@dataclass(frozen=True)
class Rank:
    pod: str
    address: str
    cpus: int


def rank_addresses(kube: Kube, namespace: str, pods: Sequence[str], cpus: Sequence[int]) -> list[Rank]:
    """Each Ready rank's Pod address, rank order; a Pod without one yet is a temporary failure."""
    ranks = []
    for pod_name, rank_cpus in zip(pods, cpus, strict=True):
        pod = kube.get_or_none(object_path("Pod", pod_name, namespace)) or {}
        address = (pod.get("status") or {}).get("podIP")
        if not address:
            raise TemporaryError(f"Pod {pod_name} is Ready but has no address yet")
        ranks.append(Rank(pod_name, str(address), rank_cpus))
    return ranks


def rendezvous_annotations(ranks: Sequence[Rank]) -> dict[str, str]:
    return {
        ANNOTATION_RENDEZVOUS: f"MASTER_ADDR={ranks[0].address}\n",
        ANNOTATION_HOSTFILE: "".join(f"{rank.address} slots={rank.cpus}\n" for rank in ranks),
    }


def open_all_gates(kube: Kube, namespace: str, ranks: Sequence[Rank]) -> None:
    """The other ranks first, rank 0 last: rank 0 (whose output is the job's) starts once every
    rank it will wait for has been let go."""
    annotations = rendezvous_annotations(ranks)
    for rank in [*ranks[1:], ranks[0]]:
        open_start_gate(kube, namespace, rank.pod, with_annotations=annotations)
