"""Who a job belongs to, taken only from what slurmctld itself says.

slurmctld runs PrologSlurmctld/EpilogSlurmctld with the job's owner in its environment
(`SLURM_JOB_UID`, `SLURM_JOB_USER`, `SLURM_JOB_GID`): values the submitter cannot write,
unlike the free-text fields of `scontrol show job` (comment, job name, paths, mail user),
which can carry line breaks and `UserId=` text. The owner is then cross-checked in the
password database and against the site's UID range before root touches any path for them.
"""

from __future__ import annotations

import os
import pwd
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.errors import PermanentError

if TYPE_CHECKING:  # the hook client imports this module before anything heavy
    from bridge.settings import PolicySettings

# The variables of slurmctld's hook environment the bridge relies on; the hook client hands
# exactly these to the watcher (the rest of its environment is not the bridge's business).
TRUSTED_HOOK_VARIABLES = (
    "SLURM_JOB_ID", "SLURM_JOB_UID", "SLURM_JOB_GID", "SLURM_JOB_USER", "SLURM_JOB_NODELIST",
    "SLURM_JOB_PARTITION", "SLURM_SCRIPT_CONTEXT",
    # An array task's place in its array (slurmctld sets them for every task's hooks).
    "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP",
)

# Portable account names: no `/`, no leading dot, nothing a path, a label or a shell could
# misread (Debian's own default NAME_REGEX is narrower still).
_SAFE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")


class IdentityError(PermanentError):
    """The job's owner cannot be established beyond doubt: the bridge refuses the job."""


@dataclass(frozen=True)
class JobOwner:
    user: str
    uid: int
    gid: int
    groups: tuple[int, ...]


def hook_environment(source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The trusted subset of a hook's environment (the process's own when `source` is None)."""
    env = os.environ if source is None else source
    return {key: str(env[key]) for key in TRUSTED_HOOK_VARIABLES if key in env}


def _number(env: Mapping[str, str], key: str) -> int:
    value = env.get(key, "")
    if not value.isascii() or not value.isdigit():
        raise IdentityError(f"slurmctld did not set {key} to a number (got {value!r})")
    return int(value)


def owner_from_hook_env(env: Mapping[str, str], policy: PolicySettings) -> JobOwner:
    """The job's owner from slurmctld's variables, verified against the password database."""
    uid = _number(env, "SLURM_JOB_UID")
    gid = _number(env, "SLURM_JOB_GID")
    user = env.get("SLURM_JOB_USER", "")
    return verify_owner(user, uid, gid, policy)


def verify_owner(user: str, uid: int, gid: int, policy: PolicySettings) -> JobOwner:
    if not _SAFE_NAME.match(user):
        raise IdentityError(f"user name {user!r} is not a plain account name")
    if not policy.uid_min <= uid <= policy.uid_max:
        raise IdentityError(f"uid {uid} is outside the site's range {policy.uid_min}-{policy.uid_max} (policy.uid_min/uid_max)")
    try:
        account = pwd.getpwuid(uid)
    except KeyError as exc:
        raise IdentityError(f"uid {uid} is not in the password database of this host") from exc
    if account.pw_name != user:
        raise IdentityError(f"uid {uid} is {account.pw_name!r} in the password database, not {user!r}")
    try:
        groups = tuple(sorted(set(os.getgrouplist(user, account.pw_gid))))
    except OSError as exc:
        raise IdentityError(f"cannot read the groups of {user}: {exc}") from exc
    if gid not in groups:
        raise IdentityError(f"gid {gid} is not one of {user}'s groups")
    return JobOwner(user=user, uid=uid, gid=gid, groups=groups)
