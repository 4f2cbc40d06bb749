"""A job's start: every rank's Pod Ready, then every start gate opened.

A one-node job has one rank. A multi-node job's ranks' addresses exist only once their Pods
run, so they cannot be in the rendered Pods; the prolog writes them beside the start gate in
the same update (see pod-template.yaml): `skbridge.io/rendezvous` (MASTER_ADDR, loaded into the
script's environment) and `skbridge.io/hostfile` (one line per rank: `<address> slots=<cpus>`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bridge.errors import TemporaryError
from bridge.kubernetes.client import Kube
from bridge.kubernetes.objects import open_start_gate
from bridge.kubernetes.render import ANNOTATION_HOSTFILE, ANNOTATION_RENDEZVOUS


@dataclass(frozen=True)
class Rank:
    pod: str
    address: str | None
    cpus: int


def check_addresses(ranks: Sequence[Rank]) -> None:
    """A multi-node job's ranks all need an address (a Ready Pod without one: try again)."""
    if len(ranks) > 1:
        for rank in ranks:
            if not rank.address:
                raise TemporaryError(f"Pod {rank.pod} is Ready but has no address yet")


def rendezvous_annotations(ranks: Sequence[Rank]) -> dict[str, str]:
    return {
        ANNOTATION_RENDEZVOUS: f"MASTER_ADDR={ranks[0].address}\n",
        ANNOTATION_HOSTFILE: "".join(f"{rank.address} slots={rank.cpus}\n" for rank in ranks),
    }


def open_all_gates(kube: Kube, namespace: str, ranks: Sequence[Rank]) -> None:
    """The other ranks first, rank 0 last: rank 0 (whose output is the job's) starts once every
    rank it will wait for has been let go. A one-node job's gate opens alone."""
    annotations = rendezvous_annotations(ranks) if len(ranks) > 1 else None
    for rank in [*ranks[1:], ranks[0]]:
        open_start_gate(kube, namespace, rank.pod, with_annotations=annotations)
