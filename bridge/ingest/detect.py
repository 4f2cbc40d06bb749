"""Finding complete job files in submit/: polling is the rule, inotify only a hint.

inotify does not see writes made by other NFS clients, so a periodic `scandir` decides.
A file is ready when its (size, mtime, inode) signature has stayed the same for the settle
window, or at once when inotify saw it arrive by rename or saw its writer close it. The
directory listing and `lstat` are injectable so tests can play a slow NFS server.
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
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
    hinted: bool = False


class SubmitScanner:
    """Tracks submit/ between polls and reports the names that are ready to claim."""

    def __init__(
        self,
        directory: Path,
        *,
        settle_s: float,
        clock: Callable[[], float] = time.monotonic,
        list_names: Callable[[bytes], Iterable[bytes]] = _default_list,
        lstat: Callable[[bytes], os.stat_result] = _default_lstat,
    ) -> None:
        self._dir = os.fsencode(directory)
        self._settle_s = settle_s
        self._clock = clock
        self._list = list_names
        self._lstat = lstat
        self._seen: dict[bytes, _Seen] = {}
        self._hints: set[bytes] = set()
        self._hint_lock = threading.Lock()

    def hint_complete(self, name: bytes) -> None:
        """inotify saw `name` arrive by rename or its writer close it."""
        with self._hint_lock:
            self._hints.add(name)

    def forget(self, name: bytes) -> None:
        self._seen.pop(name, None)

    def scan(self) -> list[bytes]:
        now = self._clock()
        with self._hint_lock:
            hints, self._hints = self._hints, set()
        try:
            names = [name for name in self._list(self._dir) if not is_ignored_name(name)]
        except OSError as exc:
            log.warning("submit folder unreadable; will retry", folder=os.fsdecode(self._dir), error=exc.strerror)
            return []
        ready: list[bytes] = []
        present = set(names)
        for name in names:
            try:
                st = self._lstat(os.path.join(self._dir, name))
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot stat dropped file", file=os.fsdecode(name), error=exc.strerror)
                continue
            signature: Signature = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev)
            seen = self._seen.get(name)
            if seen is None or seen.signature != signature:
                seen = _Seen(signature, now)
                self._seen[name] = seen
            if name in hints:
                seen.hinted = True
            if seen.hinted or now - seen.stable_since_s >= self._settle_s:
                ready.append(name)
        for gone in set(self._seen) - present:
            del self._seen[gone]
        return ready


class _HintHandler(FileSystemEventHandler):
    def __init__(self, directory: bytes, scanner: SubmitScanner, wake: threading.Event) -> None:
        super().__init__()
        self._directory = directory
        self._scanner = scanner
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory:
            return
        path = os.fsencode(event.dest_path if isinstance(event, FileMovedEvent) else event.src_path)
        if os.path.dirname(path) != self._directory:
            return
        if isinstance(event, FileMovedEvent | FileClosedEvent):
            self._scanner.hint_complete(os.path.basename(path))
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
            observer.schedule(self._handler, str(self._directory), recursive=False)
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
