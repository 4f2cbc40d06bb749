"""The write-ahead journal survives reopening and reports exactly the open work."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.ingest.journal import EntryState, Journal, new_entry_id, processing_name, split_processing_name


def test_entries_survive_a_reopen_with_their_state(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite"
    journal = Journal(path)
    first, second = new_entry_id(), new_entry_id()
    journal.add(first, b"a.sh")
    journal.add(second, "학습.sh".encode() + b"\xff")
    journal.set_state(first, EntryState.SUBMITTING, count_attempt=True)
    journal.set_state(second, EntryState.ACCEPTED, job_id="42")
    journal.close()

    reopened = Journal(path)
    open_entries = reopened.open_entries()
    assert [(e.id, e.state, e.attempts) for e in open_entries] == [(first, EntryState.SUBMITTING, 1)]
    done = reopened.get(second)
    assert done is not None and done.job_id == "42" and done.name.endswith(b"\xff")


def test_due_entries_respect_backoff(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    soon, later = new_entry_id(), new_entry_id()
    journal.add(soon, b"soon.sh")
    journal.add(later, b"later.sh")
    now = time.time()
    journal.set_state(later, EntryState.WAITING, next_attempt_at=now + 60)
    assert [e.id for e in journal.due_entries(now, 10)] == [soon]
    assert {e.id for e in journal.due_entries(now + 61, 10)} == {soon, later}


def test_adding_twice_keeps_one_entry(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.sqlite")
    entry_id = new_entry_id()
    journal.add(entry_id, b"x.sh")
    journal.set_state(entry_id, EntryState.SUBMITTED, job_id="7")
    again = journal.add(entry_id, b"x.sh")
    assert again.state == EntryState.SUBMITTED and again.job_id == "7"


def test_processing_names_round_trip() -> None:
    entry_id = new_entry_id()
    name = b"we.ird.name.sh"
    assert split_processing_name(processing_name(entry_id, name)) == (entry_id, name)
    assert split_processing_name(b"no-entry-prefix.sh") is None
