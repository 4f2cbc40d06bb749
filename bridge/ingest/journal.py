"""Write-ahead journal of the watcher's work, in SQLite (WAL) on local disk.

Each claimed file gets an entry whose id is also its Slurm tag. The journal records the
intent to submit *before* `sbatch` runs and the job id right after, so after a crash the
watcher knows exactly which submissions may have happened and looks those up in Slurm
instead of submitting twice.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.errors import TemporaryError


class EntryState(enum.StrEnum):
    CLAIMED = "claimed"  # renamed into processing/, nothing sent to Slurm
    WAITING = "waiting"  # Slurm said "not now" (controller down, queue full); nothing submitted
    SUBMITTING = "submitting"  # sbatch may have run: look the tag up before trying again
    SUBMITTED = "submitted"  # job id known; the file still has to move to accepted/
    REJECTING = "rejecting"  # verdict and failed/ name recorded; file move and NAME.error still to do
    ACCEPTED = "accepted"  # final
    FAILED = "failed"  # final


FINAL_STATES = frozenset({EntryState.ACCEPTED, EntryState.FAILED})


@dataclass(frozen=True)
class Entry:
    id: str
    name: bytes  # the dropped file's name as bytes: a non-UTF-8 name must survive to failed/
    state: EntryState
    job_id: str | None
    reason: str | None
    attempts: int
    next_attempt_at: float
    created_at: float
    target: bytes | None = None  # the name chosen in accepted/ or failed/, recorded before the move
    # Where the file was dropped: submit/<folder>/ and that folder's owner and mode when it was
    # claimed. None for a file found directly in submit/ or adopted from processing/.
    folder: bytes | None = None
    folder_uid: int | None = None
    folder_mode: int | None = None
    # When a tag lookup first found no job after an ambiguous sbatch (see Ingestor.process).
    absent_since: float | None = None

    @property
    def processing_name(self) -> bytes:
        return processing_name(self.id, self.name)


def new_entry_id() -> str:
    return uuid.uuid4().hex[:20]


# A name longer than this cannot be claimed, archived or reported under itself: processing/
# adds a 21-byte prefix, failed/ a suffix and `.error`, accepted/ the job id (NAME_MAX is 255).
MAX_NAME_BYTES = 200


def short_name(name: bytes) -> bytes:
    """NAME itself, or for an over-long name a shortened one that stays unique (hash) and valid UTF-8."""
    if len(name) <= MAX_NAME_BYTES:
        return name
    head = name[:MAX_NAME_BYTES - 12]
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        pass
    else:  # never cut a multi-byte character in half
        head = head.decode("utf-8", "ignore").encode("utf-8")
    return head + b"~" + hashlib.sha256(name).hexdigest()[:10].encode("ascii")


def processing_name(entry_id: str, name: bytes) -> bytes:
    return entry_id.encode("ascii") + b"." + short_name(name)


def split_processing_name(processing: bytes) -> tuple[str, bytes] | None:
    head, dot, name = processing.partition(b".")
    if not dot or len(head) != 20 or not name:
        return None
    try:
        return head.decode("ascii"), name
    except UnicodeDecodeError:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    id TEXT PRIMARY KEY,
    name BLOB NOT NULL,
    state TEXT NOT NULL,
    job_id TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    target BLOB,
    folder BLOB,
    folder_uid INTEGER,
    folder_mode INTEGER,
    absent_since REAL
);
CREATE INDEX IF NOT EXISTS entries_open ON entries(state) WHERE state NOT IN ('accepted', 'failed');
"""


_ADDED_COLUMNS = (("target", "BLOB"), ("folder", "BLOB"), ("folder_uid", "INTEGER"), ("folder_mode", "INTEGER"),
                  ("absent_since", "REAL"))
_SELECT_ONE = ("SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target, folder, "
               "folder_uid, folder_mode, absent_since FROM entries WHERE id = ?")
_SELECT_OPEN = ("SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target, folder, "
                "folder_uid, folder_mode, absent_since FROM entries "
                "WHERE state NOT IN ('accepted', 'failed') ORDER BY created_at")
_SELECT_DUE = ("SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target, folder, "
               "folder_uid, folder_mode, absent_since FROM entries "
               "WHERE state NOT IN ('accepted', 'failed') AND next_attempt_at <= ? ORDER BY created_at LIMIT ?")


class JournalUnavailable(TemporaryError):
    """The journal cannot be written now (disk full, read-only): wait, write nothing else."""


class Journal:
    """Thread-safe: one connection, one lock; every write is its own durable transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a killed process; the intent record
        # is what prevents a duplicate job.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        for column, kind in _ADDED_COLUMNS:  # a journal written by an older version
            if column not in columns:
                self._db.execute(f"ALTER TABLE entries ADD COLUMN {column} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. A journal that cannot be written (its disk full, read-only,
        gone) raises JournalUnavailable: nothing may then be submitted, since the entry written
        first is what makes a submission happen exactly once; the caller waits and tries again."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                raise JournalUnavailable(f"the journal {self.path} cannot be written: {exc}") from exc

    def add(self, entry_id: str, name: bytes, *, folder: bytes | None = None, folder_uid: int | None = None,
            folder_mode: int | None = None) -> Entry:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO entries (id, name, state, created_at, updated_at, folder, folder_uid, folder_mode) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (entry_id, name, EntryState.CLAIMED.value, now, now, folder, folder_uid, folder_mode),
            )
        found = self.get(entry_id)
        assert found is not None
        return found

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                _SELECT_ONE,
                (entry_id,),
            ).fetchone()
        return _entry(row) if row else None

    def open_entries(self) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                _SELECT_OPEN
            ).fetchall()
        return [_entry(row) for row in rows]

    def due_entries(self, now: float, limit: int) -> list[Entry]:
        """Open entries whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                _SELECT_DUE,
                (now, limit),
            ).fetchall()
        return [_entry(row) for row in rows]

    def set_state(
        self,
        entry_id: str,
        state: EntryState,
        *,
        job_id: str | None = None,
        reason: str | None = None,
        next_attempt_at: float | None = None,
        count_attempt: bool = False,
        target: bytes | None = None,
        absent_since: float | None = None,
        clear_absent: bool = False,
    ) -> None:
        """Record a step. `absent_since` is kept until `clear_absent` (a new sbatch) resets it."""
        with self._tx() as db:
            db.execute(
                "UPDATE entries SET state = ?, job_id = COALESCE(?, job_id), reason = COALESCE(?, reason), "
                "next_attempt_at = COALESCE(?, next_attempt_at), attempts = attempts + ?, updated_at = ?, "
                "target = COALESCE(?, target), "
                "absent_since = CASE WHEN ? THEN NULL ELSE COALESCE(?, absent_since) END WHERE id = ?",
                (state.value, job_id, reason, next_attempt_at, 1 if count_attempt else 0, time.time(), target,
                 1 if clear_absent else 0, absent_since, entry_id),
            )

    def forget(self, entry_id: str) -> None:
        """Drop an entry whose claim never happened (the file was gone before the rename)."""
        with self._tx() as db:
            db.execute("DELETE FROM entries WHERE id = ? AND state = ?", (entry_id, EntryState.CLAIMED.value))

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM entries GROUP BY state").fetchall()
        return {str(state): int(count) for state, count in rows}

    def prune(self, older_than_s: float) -> int:
        """Forget final entries older than `older_than_s`; the archive folders keep the files."""
        with self._tx() as db:
            cursor = db.execute("DELETE FROM entries WHERE state IN ('accepted', 'failed') AND updated_at < ?",
                                (time.time() - older_than_s,))
            return cursor.rowcount


def _entry(row: tuple[Any, ...]) -> Entry:
    (entry_id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target, folder, folder_uid,
     folder_mode, absent_since) = row
    return Entry(
        id=str(entry_id), name=bytes(name), state=EntryState(str(state)),
        job_id=None if job_id is None else str(job_id), reason=None if reason is None else str(reason),
        attempts=int(attempts), next_attempt_at=float(next_attempt_at), created_at=float(created_at),
        target=None if target is None else bytes(target),
        folder=None if folder is None else bytes(folder),
        folder_uid=None if folder_uid is None else int(folder_uid),
        folder_mode=None if folder_mode is None else int(folder_mode),
        absent_since=None if absent_since is None else float(absent_since),
    )
