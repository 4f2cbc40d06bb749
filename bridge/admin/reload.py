"""`skbridge admin reload`: make the running watcher take the config file and code installed now.

The watcher re-executes itself on SIGHUP (see `bridge.daemon.watcher`); this finds it by its
instance lock, signals it, and waits until its hook server answers with the config digest and
version that are on disk, so an admin (or install.sh on a host without systemd) knows the
reload happened rather than hoping it did.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from bridge import installed_version
from bridge.errors import ConfigError, TemporaryError
from bridge.settings import Settings, config_digest, config_file_in_effect


@dataclass(frozen=True)
class Reloaded:
    pid: int
    version: str
    config_path: Path | None


def running_watcher_pid(lock_path: Path) -> int | None:
    """The pid written in the lock file, if a process holds the lock now (None: no watcher runs)."""
    try:
        fd = os.open(lock_path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _is_watcher(pid: int) -> bool:
    """Never signal a pid that was reused by something else: its command line must be `... watch`."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"watch" in argv and any(part.endswith(b"skbridge") or b"bridge" in part for part in argv)


def reload_watcher(settings: Settings, config_path: Path | None, *, timeout_s: float = 120.0,
                   poll_interval_s: float = 0.5) -> Reloaded | None:
    """SIGHUP the running watcher and wait until it serves with the config and version on disk.

    None: no watcher runs (nothing to do). ConfigError: the config does not load (the watcher
    would refuse it too) or the process holding the lock is not a watcher. TemporaryError: it
    did not come back within `timeout_s` (its log says why).
    """
    from bridge.hooks.server import server_info
    from bridge.settings import load_settings

    pid = running_watcher_pid(settings.ingest.lock_path)
    if pid is None:
        return None
    if not _is_watcher(pid):
        raise ConfigError(f"pid {pid} holds {settings.ingest.lock_path} but is not `skbridge watch`; not signalling it")
    config = config_file_in_effect(config_path)
    load_settings(config)  # the same check the watcher makes; say it here, where the admin is
    want_digest = config_digest(config)
    want_version = installed_version()
    socket_path = settings.slurm.hook_socket_path
    before = server_info(socket_path) if socket_path is not None else None
    started_before = before.get("started_at") if before else None
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        time.sleep(poll_interval_s)
        if running_watcher_pid(settings.ingest.lock_path) != pid:
            continue  # between the old image letting go of the lock and the new one taking it
        if socket_path is None:
            # Nothing to ask: the lock held again by the same pid is all there is to see.
            return Reloaded(pid, want_version, config)
        info = server_info(socket_path)
        if info and info.get("pid") == pid and info.get("started_at") != started_before \
                and info.get("config_sha256") == want_digest and info.get("version") == want_version:
            return Reloaded(pid, want_version, config)
    raise TemporaryError(f"the watcher (pid {pid}) did not come back with {config} and version {want_version} "
                         f"within {timeout_s:.0f} s; see its log")
