"""Finding complete job files in submit/<user>/: polling is the rule, inotify only a hint.

inotify does not see writes made by other NFS clients, so a periodic `scandir` decides.
A file is ready when its (size, mtime, inode) signature has stayed the same for the settle
window, or at once when inotify saw it arrive by rename. A file written in place (`cp`,
`cat > f`) is never taken at its writer's first close: `cat a > f; cat b >> f` closes it
twice. With inotify it is ready once the last writer closed it and nothing touched it for
`hint_settle_s`; without, after the settle window. The pipeline re-checks the file's
signature around reading its private copy as well.

Files are looked for in each user's folder submit/<user>/ (names are returned relative to
submit/, e.g. b"alice/job.sh"); files directly in submit/ are returned too, so that they are
rejected with an explanation. A folder whose listing cannot have changed (same mtime, no
file being tracked, not modified recently) is not listed again until a periodic full scan.
The directory listing and `lstat` are injectable so tests can play a slow NFS server.
"""

from __future__ import annotations

import os
import re
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers.inotify import InotifyObserver
from watchdog.observers.inotify_move_event_grouper import InotifyMoveEventGrouper

from bridge.log import get_logger

log = get_logger(component="detect")

# watchdog holds every IN_MOVED_FROM for this long to pair it with its IN_MOVED_TO, and every
# later event of the folder waits behind it (watchdog issue #390). Each claim (submit/ ->
# processing/) is such a move, so at watchdog's 0.5 s the next file's hint came ~0.3 s late
# on average. The kernel queues both halves of a rename together, and watchdog's reader puts
# them in one pass, so 20 ms still pairs every rename in submit/.
MOVE_PAIRING_S = 0.02
InotifyMoveEventGrouper.delay = MOVE_PAIRING_S

# Names writers use while a file is incomplete: dot-files (rsync's .NAME.XXXXXX, NFS's
# .nfsXXXX, editors' swap files), partial downloads, backups.
_IGNORED = re.compile(rb"^\.|\.part$|\.swp$|\.swx$|~$|\.tmp$|\.crdownload$")

Signature = tuple[int, int, int, int]  # size, mtime_ns, inode, device


# A folder is listed again after this many scans even when its mtime says nothing changed.
FULL_SCAN_EVERY = 30
# A folder modified this recently (wall clock) is always listed: mtime ticks can be coarse.
_RECENT_S = 2.0


def is_ignored_name(name: bytes) -> bool:
    return bool(_IGNORED.search(name))


def _default_list(directory: bytes) -> Iterable[bytes]:
    with os.scandir(directory) as entries:
        return [entry.name for entry in entries]


def _default_lstat(path: bytes) -> os.stat_result:
    return os.lstat(path)


@dataclass
class _Seen:
    signature: Signature
    stable_since_s: float
    moved: bool = False  # arrived by rename (inotify), signature unchanged since
    closed_at_s: float | None = None  # inotify: its writer closed it then, nothing touched it since
    touched_at_s: float | None = None  # inotify: last change seen (create, write, attributes)


@dataclass
class _Folder:
    signature: tuple[int, int]  # mtime_ns, inode
    names: list[bytes]


class SubmitScanner:
    """Tracks submit/ and its user folders between polls and reports the files ready to claim."""

    def __init__(
        self,
        directory: Path,
        *,
        settle_s: float,
        hint_settle_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
        list_names: Callable[[bytes], Iterable[bytes]] = _default_list,
        lstat: Callable[[bytes], os.stat_result] = _default_lstat,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._dir = os.fsencode(directory)
        self._settle_s = settle_s
        self._hint_settle_s = hint_settle_s
        self._clock = clock
        self._wall_clock = wall_clock
        self._list = list_names
        self._lstat = lstat
        self._seen: dict[bytes, _Seen] = {}
        self._folders: dict[bytes, _Folder] = {}
        self._scans = 0
        self._moved: set[bytes] = set()
        self._touched: dict[bytes, bool] = {}  # name -> closed by its writer (last event)
        self._hint_lock = threading.Lock()
        self._next_due_s: float | None = None

    def hint_complete(self, name: bytes) -> None:
        """inotify saw `name` (relative to submit/) arrive by rename: complete at once."""
        with self._hint_lock:
            self._moved.add(name)
            self._touched.pop(name, None)

    def hint_written(self, name: bytes, *, closed: bool) -> None:
        """inotify saw `name` created, written or changed (`closed`: its writer closed it)."""
        with self._hint_lock:
            self._moved.discard(name)
            self._touched[name] = closed

    def forget(self, name: bytes) -> None:
        self._seen.pop(name, None)

    def complete_since_s(self, name: bytes) -> float | None:
        """When `name` was first seen as it is now (the clock's time), None if not tracked."""
        seen = self._seen.get(name)
        return None if seen is None else seen.stable_since_s

    def next_check_in_s(self) -> float | None:
        """How soon a file being settled by inotify could become ready (None: nothing pending)."""
        if self._next_due_s is None:
            return None
        return max(0.0, self._next_due_s - self._clock())

    def _listing(self) -> list[bytes] | None:
        """Every candidate name relative to submit/, or None when submit/ itself is unreadable."""
        try:
            top = [name for name in self._list(self._dir) if not is_ignored_name(name)]
        except OSError as exc:
            log.warning("submit folder unreadable; will retry", folder=os.fsdecode(self._dir), error=exc.strerror)
            return None
        full = self._scans % FULL_SCAN_EVERY == 0
        self._scans += 1
        tracked_folders = {name.rpartition(b"/")[0] for name in self._seen}
        names: list[bytes] = []
        folders: dict[bytes, _Folder] = {}
        for name in top:
            path = os.path.join(self._dir, name)
            try:
                info = self._lstat(path)
            except OSError:
                continue
            if not stat.S_ISDIR(info.st_mode):
                names.append(name)
                continue
            signature = (info.st_mtime_ns, info.st_ino)
            known = self._folders.get(name)
            recent = self._wall_clock() - info.st_mtime_ns / 1e9 < _RECENT_S
            if known is not None and known.signature == signature and not full and not recent \
                    and name not in tracked_folders:
                folders[name] = known
                continue
            try:
                inner = [child for child in self._list(path) if not is_ignored_name(child)]
            except OSError as exc:
                log.warning("user folder unreadable; will retry", folder=os.fsdecode(path), error=exc.strerror)
                continue
            entry = _Folder(signature, [name + b"/" + child for child in inner])
            folders[name] = entry
        self._folders = folders
        for entry in folders.values():
            names.extend(entry.names)
        return names

    def scan(self) -> list[bytes]:
        now = self._clock()
        with self._hint_lock:
            moved, self._moved = self._moved, set()
            touched, self._touched = self._touched, {}
        names = self._listing()
        if names is None:
            return []
        ready: list[bytes] = []
        present = set(names)
        next_due: float | None = None
        for name in names:
            try:
                st = self._lstat(os.path.join(self._dir, name))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot stat dropped file", file=os.fsdecode(name), error=exc.strerror)
                continue
            if stat.S_ISDIR(st.st_mode) and b"/" in name:
                continue  # folders inside a user folder are not job files
            signature: Signature = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
            seen = self._seen.get(name)
            if seen is None or seen.signature != signature:
                seen = _Seen(signature, now)
                self._seen[name] = seen
            if name in moved:
                seen.moved, seen.closed_at_s, seen.touched_at_s = True, None, None
            elif name in touched:
                seen.moved = False
                seen.touched_at_s = now
                seen.closed_at_s = now if touched[name] else None
            if seen.moved or now - seen.stable_since_s >= self._settle_s:
                ready.append(name)
            elif seen.closed_at_s is not None:
                # Closed by its writer and quiet since, and the signature unchanged since then.
                due = max(seen.closed_at_s, seen.stable_since_s) + self._hint_settle_s
                if now >= due:
                    ready.append(name)
                else:
                    next_due = due if next_due is None else min(next_due, due)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        self._next_due_s = next_due
        return ready


class _HintHandler(FileSystemEventHandler):
    def __init__(self, directory: bytes, scanner: SubmitScanner, wake: threading.Event) -> None:
        super().__init__()
        self._directory = directory
        self._scanner = scanner
        self._wake = wake

    def _relative(self, path: bytes) -> bytes | None:
        """NAME or USER/NAME relative to submit/; None for anything deeper or elsewhere."""
        parent, name = os.path.split(path)
        if parent == self._directory:
            return name
        grandparent, folder = os.path.split(parent)
        if grandparent == self._directory:
            return folder + b"/" + name
        return None

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            if isinstance(event, DirCreatedEvent):
                self._wake.set()  # a new user folder: the next scan lists it
            return
        moved = isinstance(event, FileMovedEvent)
        relative = self._relative(os.fsencode(event.dest_path if moved else event.src_path))
        if relative is None:
            return
        if moved:
            self._scanner.hint_complete(relative)
        elif isinstance(event, FileClosedEvent):
            self._scanner.hint_written(relative, closed=True)
        elif isinstance(event, FileCreatedEvent | FileModifiedEvent | FileAttribEvent):
            self._scanner.hint_written(relative, closed=False)
        else:
            return  # opened, closed without writing, deleted: nothing to decide
        self._wake.set()


class InotifyHint:
    """Wakes the watcher early when inotify works; silently absent where it does not (NFS)."""

    def __init__(self, directory: Path, scanner: SubmitScanner, wake: threading.Event) -> None:
        self._directory = directory
        self._handler = _HintHandler(os.fsencode(directory), scanner, wake)
        self._observer: Any = None

    def start(self) -> bool:
        try:
            observer = InotifyObserver()
            # Recursive: watches every user folder, including those created while it runs.
            observer.schedule(self._handler, str(self._directory), recursive=True)
            observer.start()
        except OSError as exc:
            log.warning("inotify unavailable; polling only", folder=str(self._directory), error=str(exc))
            return False
        self._observer = observer
        return True

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
