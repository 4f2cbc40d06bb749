"""The NAS folder layout the bridge expects, created with the right owners and modes.

Users drop job files into their own folder `submit/<user>/` (owner the user, mode 0700).
`submit/` itself is root's and not writable by users: a job runs as its file's owner, and a
world-writable drop folder would let anyone who can rename a colleague's file (a shared
group directory on the same NAS: `mv` keeps the owner) get a job run as that colleague.
Only the owner can write into `submit/<owner>/`, so a file there owned by the folder's owner
was put there by that owner; the watcher takes nothing else.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bridge.log import get_logger
from bridge.settings import NasSettings, PolicySettings

log = get_logger(component="layout")

USER_FOLDER_MODE = 0o700


@dataclass(frozen=True)
class FolderSpec:
    path: Path
    mode: int
    purpose: str


def nas_folders(nas: NasSettings) -> list[FolderSpec]:
    return [
        FolderSpec(nas.jobs_root, 0o755, "drop-folder tree"),
        # Root's, not writable by users: each user drops into their own submit/<user>/ (0700).
        FolderSpec(nas.submit_dir, 0o755, "users drop job files into their own submit/<user>/"),
        FolderSpec(nas.processing_dir, 0o700, "files being validated and submitted (watcher only)"),
        FolderSpec(nas.accepted_dir, 0o755, "submitted files, renamed <jobid>-NAME"),
        FolderSpec(nas.failed_dir, 0o755, "rejected files with NAME.error"),
        FolderSpec(nas.results_root, 0o755, "results/<user>/<jobid>/ written by the epilog"),
        FolderSpec(nas.home_root, 0o755, "per-user NAS directories mounted into Pods"),
    ]


def ensure_nas_layout(nas: NasSettings, policy: PolicySettings | None = None) -> list[Path]:
    """Create missing folders and fix modes, then every user's submit/<user>/; returns what it changed."""
    changed: list[Path] = []
    for spec in nas_folders(nas):
        if not spec.path.is_dir():
            spec.path.mkdir(parents=True, exist_ok=True)
            changed.append(spec.path)
        if stat.S_IMODE(spec.path.stat().st_mode) != spec.mode:
            os.chmod(spec.path, spec.mode)
            if spec.path not in changed:
                changed.append(spec.path)
    changed += ensure_user_folders(nas, policy or PolicySettings())
    return changed


def _valid_user_name(name: str) -> bool:
    return bool(name) and "/" not in name and not name.startswith(".") and name not in ("..",) and "\0" not in name


def submit_accounts(nas: NasSettings, policy: PolicySettings) -> list[pwd.struct_passwd]:
    """Accounts that get a drop folder: every account NSS lists in the allowed UID range, and
    every owner of a home/<user>/ folder (for directories, such as LDAP, that do not enumerate)."""
    found: dict[str, pwd.struct_passwd] = {}

    def consider(account: pwd.struct_passwd) -> None:
        if policy.uid_min <= account.pw_uid <= policy.uid_max and _valid_user_name(account.pw_name):
            found.setdefault(account.pw_name, account)

    for account in pwd.getpwall():
        consider(account)
    try:
        with os.scandir(nas.home_root) as listing:
            homes = [item.name for item in listing if item.is_dir(follow_symlinks=False)]
    except OSError:
        homes = []
    for name in homes:
        if name in found:
            continue
        try:
            account = pwd.getpwnam(name)
        except KeyError:
            continue
        consider(account)
    return sorted(found.values(), key=lambda account: account.pw_name)


def ensure_user_folders(nas: NasSettings, policy: PolicySettings,
                        accounts: Iterable[pwd.struct_passwd] | None = None) -> list[Path]:
    """Create submit/<user>/ (the user's, 0700) for each account that lacks one; returns those made or fixed."""
    changed: list[Path] = []
    for account in (submit_accounts(nas, policy) if accounts is None else accounts):
        try:
            if ensure_user_folder(nas, account):
                changed.append(nas.submit_dir / account.pw_name)
        except OSError as exc:
            log.warning("cannot create the user's drop folder", user=account.pw_name, error=exc.strerror)
    return changed


def ensure_user_folder(nas: NasSettings, account: pwd.struct_passwd) -> bool:
    """Make submit/<user>/ exist, owned by the user (0700 when new); True if it made or fixed it.

    Everything is done relative to an open submit/ without following links. An existing
    folder owned by someone else is left alone (and its files are refused by the watcher).
    """
    if not _valid_user_name(account.pw_name):
        raise ValueError(f"not a usable folder name: {account.pw_name!r}")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    parent = os.open(nas.submit_dir, flags)
    try:
        made = False
        try:
            os.mkdir(account.pw_name, USER_FOLDER_MODE, dir_fd=parent)
            made = True
        except FileExistsError:
            pass
        try:
            fd = os.open(account.pw_name, flags, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                log.error("submit/<user> is not a folder; remove it", user=account.pw_name)
                return False
            raise
        try:
            info = os.fstat(fd)
            if info.st_uid == account.pw_uid:
                return made
            if info.st_uid != 0:
                log.error("submit/<user> belongs to another account; files in it are refused", user=account.pw_name,
                          owner_uid=info.st_uid)
                return False
            # Ours (just made, or left by a crash before the chown): hand it over.
            os.fchmod(fd, USER_FOLDER_MODE)
            os.fchown(fd, account.pw_uid, account.pw_gid)
            log.info("created drop folder", user=account.pw_name)
            return True
        finally:
            os.close(fd)
    finally:
        os.close(parent)


def user_submit_dir(nas: NasSettings, user: str) -> Path:
    """Where USER drops job files."""
    return nas.submit_dir / user
