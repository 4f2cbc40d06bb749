"""Write-ahead journal of the watcher's work, in SQLite (WAL) on local disk.

Each claimed file gets an entry whose id is also its Slurm tag. The journal records the
intent to submit *before* `sbatch` runs and the job id right after, so after a crash the
watcher knows exactly which submissions may have happened and looks those up in Slurm
instead of submitting twice.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


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

    @property
    def processing_name(self) -> bytes:
        return processing_name(self.id, self.name)


def new_entry_id() -> str:
    return uuid.uuid4().hex[:20]


def processing_name(entry_id: str, name: bytes) -> bytes:
    return entry_id.encode("ascii") + b"." + name


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
    target BLOB
);
CREATE INDEX IF NOT EXISTS entries_open ON entries(state) WHERE state NOT IN ('accepted', 'failed');
"""


class Journal:
    """Thread-safe: one connection, one lock; every write is its own durable transaction."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, not only a killed process; the intent record
        # is what prevents a duplicate job.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(entries)")}
        if "target" not in columns:  # a journal written by an older version
            self._db.execute("ALTER TABLE entries ADD COLUMN target BLOB")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, entry_id: str, name: bytes) -> Entry:
        now = time.time()
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO entries (id, name, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (entry_id, name, EntryState.CLAIMED.value, now, now),
            )
        found = self.get(entry_id)
        assert found is not None
        return found

    def get(self, entry_id: str) -> Entry | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target FROM entries WHERE id = ?",
                (entry_id,),
            ).fetchone()
        return _entry(row) if row else None

    def open_entries(self) -> list[Entry]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target FROM entries "
                "WHERE state NOT IN ('accepted', 'failed') ORDER BY created_at"
            ).fetchall()
        return [_entry(row) for row in rows]

    def due_entries(self, now: float, limit: int) -> list[Entry]:
        """Open entries whose next attempt is due, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target FROM entries "
                "WHERE state NOT IN ('accepted', 'failed') AND next_attempt_at <= ? ORDER BY created_at LIMIT ?",
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
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE entries SET state = ?, job_id = COALESCE(?, job_id), reason = COALESCE(?, reason), "
                "next_attempt_at = COALESCE(?, next_attempt_at), attempts = attempts + ?, updated_at = ?, "
                "target = COALESCE(?, target) WHERE id = ?",
                (state.value, job_id, reason, next_attempt_at, 1 if count_attempt else 0, time.time(), target,
                 entry_id),
            )

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
    entry_id, name, state, job_id, reason, attempts, next_attempt_at, created_at, target = row
    return Entry(
        id=str(entry_id), name=bytes(name), state=EntryState(str(state)),
        job_id=None if job_id is None else str(job_id), reason=None if reason is None else str(reason),
        attempts=int(attempts), next_attempt_at=float(next_attempt_at), created_at=float(created_at),
        target=None if target is None else bytes(target),
    )
