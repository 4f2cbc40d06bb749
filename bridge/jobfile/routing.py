"""One road for every job (issue 18): where a job runs, decided the same way by job_submit.lua
(at submission), `skbridge validate` and the watcher.

- A batch job with #K8S_IMAGE runs in a Pod with that image.
- A job without one (a plain script, `sbatch --wrap`) runs in a Pod with the site's
  `policy.default_image`, or is refused with the reason when the site sets none.
- Only jobs of `policy.host_accounts` or `policy.host_partitions`, and root's own, may run on
  the bare host (admins' maintenance); interactive allocations (salloc, srun outside a batch
  job) are refused for everyone else, since they would run on the host.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from bridge.settings import PolicySettings

Road = Literal["pod", "host", "refused"]

NO_IMAGE = ("this job has no #K8S_IMAGE= line and this site runs every job in a Kubernetes Pod with an image it "
            "names: add #K8S_IMAGE=<registry>/<name>:<tag> below the #SBATCH lines (`skbridge init` writes a job "
            "file to start from)")
INTERACTIVE = ("interactive allocations (salloc, srun outside a batch job) would run on the bare host, and this site "
               "runs every job in a Kubernetes Pod: submit a batch job instead (`skbridge init` writes one, "
               "`skbridge submit --follow` shows its output live)")


@dataclass(frozen=True)
class Routing:
    road: Road
    image: str | None
    why: str


def route(*, image: str | None, batch: bool, account: str | None, partitions: Iterable[str], uid: int,
          policy: PolicySettings) -> Routing:
    """Where a job goes. `image`: its #K8S_IMAGE (None: none); `batch`: False for salloc/srun."""
    if batch and image:
        return Routing("pod", image, f"runs in a Pod with its image {image}")
    if uid == 0 or (account is not None and account in policy.host_accounts) or \
            any(name in policy.host_partitions for name in partitions):
        return Routing("host", None, "runs on the bare host (site policy: policy.host_accounts/host_partitions)")
    if not batch:
        return Routing("refused", None, INTERACTIVE)
    if policy.default_image:
        return Routing("pod", policy.default_image, f"runs in a Pod with the site's default image {policy.default_image}")
    return Routing("refused", None, NO_IMAGE)
