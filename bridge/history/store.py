"""The job history: one row per job and a timeline of events, in SQLite (WAL) on local disk.

Several processes write it (the watcher's ingest and hooks, the service) and the service
reads it on every job listing. WAL lets readers go on while one writer commits; each thread
keeps its own connection. A writer waits at most `busy_timeout_s` for another's lock: the
history is a convenience, a hook must never hang on it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from bridge.slurm.vocabulary import FINAL_STATES as SLURM_FINAL_STATES

# Slurm's final states: a job in one of them never changes again. UNKNOWN is the history's own:
# slurmctld no longer holds the job and accounting never recorded its end (nobody will).
FINAL_STATES = SLURM_FINAL_STATES | {"UNKNOWN"}
_FINAL_SQL = ", ".join(f"'{state}'" for state in sorted(FINAL_STATES))

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    job_num INTEGER NOT NULL,
    uid INTEGER,
    user TEXT,
    name TEXT,
    partition TEXT,
    state TEXT NOT NULL,
    submit_time REAL,
    start_time REAL,
    end_time REAL,
    exit_code INTEGER,
    signal INTEGER,
    gpus INTEGER,
    node TEXT,
    results_dir TEXT,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT,
    uid INTEGER,
    time REAL NOT NULL,
    event TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_by_job ON events(job_id, time);
CREATE INDEX IF NOT EXISTS events_by_time ON events(time);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Until when a job counts for `since`: its end once finished, forever while not. One indexed
# column, so a listing's window is a range of an index and not an OR over every row.
_HORIZON = (f"horizon REAL GENERATED ALWAYS AS (CASE WHEN state IN ({_FINAL_SQL}) "
            "THEN COALESCE(end_time, updated_at) ELSE 1e18 END) VIRTUAL")
_INDEXES = f"""
DROP INDEX IF EXISTS jobs_by_uid;
DROP INDEX IF EXISTS jobs_by_num;
DROP INDEX IF EXISTS jobs_open;
CREATE INDEX IF NOT EXISTS jobs_uid_order ON jobs(uid, job_num DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_order ON jobs(job_num DESC, job_id DESC);
CREATE INDEX IF NOT EXISTS jobs_uid_horizon ON jobs(uid, horizon);
CREATE INDEX IF NOT EXISTS jobs_horizon ON jobs(horizon);
CREATE INDEX IF NOT EXISTS jobs_unfinished ON jobs(uid, job_num) WHERE state NOT IN ({_FINAL_SQL});
"""

# How far along a job is: an update never moves a job back (a late "submitted" after the
# prolog's "running"), except a requeue or Slurm's own word, which are forced.
_RANK = {"PENDING": 0, "REQUEUED": 0, "CONFIGURING": 1, "RUNNING": 1, "SUSPENDED": 1, "COMPLETING": 2,
         "STAGE_OUT": 2}


# A few ms of writing each: short against a hook's busy timeout.
MAX_UPDATES_PER_TRANSACTION = 200


def state_rank(state: str) -> int:
    return 3 if state in FINAL_STATES else _RANK.get(state, 0)


def job_number(job_id: str) -> int:
    """The numeric head of a job id (`123` of `123_4`): the list's order."""
    head = job_id.split("_", 1)[0]
    return int(head) if head.isdigit() else 0


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    uid: int | None
    user: str | None
    name: str | None
    partition: str | None
    state: str
    submit_time: float | None
    start_time: float | None
    end_time: float | None
    exit_code: int | None
    signal: int | None
    gpus: int | None
    node: str | None
    results_dir: str | None
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class Event:
    job_id: str | None
    uid: int | None
    time: float
    event: str
    detail: str | None


# Queries are built from these fixed column names and the constant state list only (S608 below);
# every value goes in as a parameter.
_JOB_COLUMNS = tuple(f.name for f in fields(JobRecord))
_SELECT_JOBS = f"SELECT {', '.join(_JOB_COLUMNS)} FROM jobs"  # noqa: S608
# Fields a caller may set; state and updated_at are handled apart.
UPDATABLE = frozenset(_JOB_COLUMNS) - {"job_id", "state", "updated_at"}


@dataclass(frozen=True)
class Update:
    """One job's change: `values` are JobRecord fields (None: keep the stored value)."""

    job_id: str
    state: str | None = None
    event: str | None = None
    detail: str | None = None
    force_state: bool = False
    at: float | None = None  # the event's time (default: now)
    event_if_new: bool = False  # the event only for a job the history did not know yet
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class JobQuery:
    """What GET /api/v1/jobs asks: one user's (or everyone's) jobs, newest first."""

    uid: int | None = None  # None: every user's
    user: str | None = None  # an admin's filter by name
    states: frozenset[str] = frozenset()
    since: float | None = None  # submitted, or still active, at or after this epoch
    before_num: int | None = None  # the cursor: only jobs with a smaller number
    offset: int = 0
    limit: int = 100


class JobHistory:
    """Thread-safe; one SQLite connection per thread, opened on first use."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 0.5) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._created = False
        self._create_lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            return db
        with self._create_lock:
            if not self._created:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # Job names and users of everyone: root's alone (the WAL and shm files follow its mode).
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                os.close(fd)
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=self._busy_timeout_s)
        db.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_s * 1000)}")
        with self._create_lock:
            if not self._created:
                db.execute("PRAGMA journal_mode=WAL")
                db.executescript(_SCHEMA)
                if "horizon" not in {row[1] for row in db.execute("PRAGMA table_xinfo(jobs)")}:
                    db.execute(f"ALTER TABLE jobs ADD COLUMN {_HORIZON}")
                db.executescript(_INDEXES)
                self._created = True
        # NORMAL: a power cut may lose the last commits, never corrupt the file; the history
        # is rebuilt from Slurm for unfinished jobs anyway.
        db.execute("PRAGMA synchronous=NORMAL")
        self._local.db = db
        return db

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    # -- writing --------------------------------------------------------------------------

    def record(self, job_id: str, *, state: str | None = None, event: str | None = None, detail: str | None = None,
               force_state: bool = False, at: float | None = None, **values: Any) -> None:
        """Create or update the job's row and, with `event`, add it to the timeline: one transaction.

        Given values replace stored ones; None leaves them. The state only moves forward
        (pending, running, completing, final) unless `force_state` (a requeue, Slurm's own word).
        """
        self.record_many([Update(job_id, state=state, event=event, detail=detail, force_state=force_state, at=at,
                                 values=values)])

    def record_many(self, updates: list[Update]) -> None:
        """Several `record`s, a transaction per MAX_UPDATES_PER_TRANSACTION (the service's merge of
        Slurm's view): a hook waiting for the lock meanwhile waits for one batch, not a backfill."""
        for update in updates:
            unknown = set(update.values) - UPDATABLE
            if unknown:
                raise ValueError(f"not a history field: {', '.join(sorted(unknown))}")
        db = self._db()
        for start in range(0, len(updates), MAX_UPDATES_PER_TRANSACTION):
            db.execute("BEGIN IMMEDIATE")
            try:
                for update in updates[start:start + MAX_UPDATES_PER_TRANSACTION]:
                    _apply(db, update, time.time())
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def meta(self, key: str) -> str | None:
        row = self._db().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._db().execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def note(self, event: str, *, uid: int | None, detail: str | None = None, at: float | None = None) -> None:
        """An event that belongs to no job (a dropped file rejected before it became one)."""
        db = self._db()
        db.execute("INSERT INTO events (job_id, uid, time, event, detail) VALUES (NULL, ?, ?, ?, ?)",
                   (uid, time.time() if at is None else at, event, detail))

    def prune(self, older_than_s: float, *, now: float | None = None) -> int:
        """Forget finished jobs (and their events) that ended more than `older_than_s` ago."""
        cutoff = (time.time() if now is None else now) - older_than_s
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(f"DELETE FROM events WHERE job_id IN (SELECT job_id FROM jobs WHERE state IN ({_FINAL_SQL}) "  # noqa: S608
                       "AND COALESCE(end_time, updated_at) < ?)", (cutoff,))
            db.execute("DELETE FROM events WHERE job_id IS NULL AND time < ?", (cutoff,))
            gone = db.execute(f"DELETE FROM jobs WHERE state IN ({_FINAL_SQL}) AND COALESCE(end_time, updated_at) < ?",  # noqa: S608
                              (cutoff,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(gone)

    # -- reading --------------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        row = self._db().execute(f"{_SELECT_JOBS} WHERE job_id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def events(self, job_id: str) -> list[Event]:
        rows = self._db().execute("SELECT job_id, uid, time, event, detail FROM events WHERE job_id = ? "
                                  "ORDER BY time, id", (job_id,)).fetchall()
        return [Event(job_id=r[0], uid=r[1], time=float(r[2]), event=str(r[3]), detail=r[4]) for r in rows]

    def unfinished(self, *, uid: int | None = None, limit: int = 1000) -> list[JobRecord]:
        """Jobs not yet in a final state (of `uid`, or everyone's), newest first."""
        where, params = f"state NOT IN ({_FINAL_SQL})", []
        if uid is not None:
            where += " AND uid = ?"
            params.append(uid)
        # Through the partial index of unfinished jobs: a handful, whatever the history's size.
        rows = self._db().execute(f"{_SELECT_JOBS} INDEXED BY jobs_unfinished WHERE {where} LIMIT ?",
                                  (*params, limit)).fetchall()
        return sorted((_job(row) for row in rows), key=lambda job: -job_number(job.job_id))

    def query(self, query: JobQuery) -> tuple[int, list[JobRecord]]:
        """(jobs matching without paging, the page), newest first."""
        where: list[str] = []
        params: list[Any] = []
        if query.uid is not None:
            where.append("uid = ?")
            params.append(query.uid)
        if query.user is not None:
            where.append("user = ?")
            params.append(query.user)
        if query.states:
            where.append(f"state IN ({', '.join('?' * len(query.states))})")
            params += sorted(query.states)
        if query.since is not None:
            # Slurm's --starttime: submitted then or later, or still going on then (a job's end
            # is never before its submission).
            where.append("horizon >= ?")
            params.append(query.since)
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        db = self._db()
        total = int(db.execute(f"SELECT COUNT(*) FROM jobs{clause}", params).fetchone()[0])  # noqa: S608
        if query.before_num is not None:
            clause += (" AND " if clause else " WHERE ") + "job_num < ?"
            params.append(query.before_num)
        # Walk the jobs newest first and stop at the page's end: sorting every job of a long
        # window by the horizon index's choice would cost the whole window each time.
        order_index = "jobs_uid_order" if query.uid is not None else "jobs_order"
        rows = db.execute(f"{_SELECT_JOBS} INDEXED BY {order_index}{clause} ORDER BY job_num DESC, job_id DESC "
                          "LIMIT ? OFFSET ?",
                          (*params, query.limit, query.offset)).fetchall()
        return total, [_job(row) for row in rows]

    def count(self) -> int:
        return int(self._db().execute("SELECT COUNT(*) FROM jobs").fetchone()[0])


def _apply(db: sqlite3.Connection, update: Update, now: float) -> None:
    job_id = update.job_id
    at = now if update.at is None else update.at
    row = db.execute("SELECT state, uid FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
    given = {key: value for key, value in update.values.items() if value is not None}
    if row is None:
        columns = {"job_id": job_id, "job_num": job_number(job_id), "state": update.state or "PENDING",
                   "updated_at": now, **given}
        db.execute(f"INSERT INTO jobs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",  # noqa: S608
                   tuple(columns.values()))
        uid = given.get("uid")
    else:
        old_state, uid = str(row[0]), row[1]
        if update.state is not None and (update.force_state or state_rank(update.state) >= state_rank(old_state)):
            given["state"] = update.state
        given["updated_at"] = now
        db.execute(f"UPDATE jobs SET {', '.join(f'{key} = ?' for key in given)} WHERE job_id = ?",  # noqa: S608
                   (*given.values(), job_id))
        uid = given.get("uid", uid)
    if update.event is not None and (row is None or not update.event_if_new):
        db.execute("INSERT INTO events (job_id, uid, time, event, detail) VALUES (?, ?, ?, ?, ?)",
                   (job_id, uid, at, update.event, update.detail))


def _job(row: tuple[Any, ...]) -> JobRecord:
    values = dict(zip(_JOB_COLUMNS, row, strict=True))
    return JobRecord(**values)
