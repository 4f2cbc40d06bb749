"""Issue 14: the watcher's journal disk fills up. Nothing is submitted without its journal entry
(that entry is what makes a submission happen exactly once), the watcher stays up and says why,
and once there is room again every waiting file becomes exactly one job."""

from __future__ import annotations

import pwd
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Sandbox, wait_for
from tests.ingest.conftest import VALID_JOB, WatcherRun, make_watcher_run, tagged_jobs


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "journal-disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    return filler


def test_a_full_journal_disk_submits_nothing_until_there_is_room(sandbox: Sandbox, users: dict[str, pwd.struct_passwd],
                                                                small_disk: Path) -> None:
    run: WatcherRun = make_watcher_run(sandbox, SKBRIDGE_INGEST__JOURNAL_PATH=str(small_disk / "journal.sqlite"))
    alice = pwd.getpwnam("skbalice")
    run.start()
    try:
        run.drop("before.sh", VALID_JOB.format(name="before"), owner=alice)
        run.wait_settled(1)
        filler = _fill(small_disk)
        names = [f"full-{i}.sh" for i in range(3)]
        for name in names:
            run.drop(name, VALID_JOB.format(name=name.removesuffix(".sh")), owner=alice)
        wait_for(lambda: "the journal cannot be written" in run.log_text(), timeout_s=30,
                 what="the watcher saying its journal cannot be written")
        assert "Traceback" not in run.log_text()
        assert run.proc is not None and run.proc.poll() is None, "the watcher stays up"
        assert len(run.accepted_job_ids()) == 1, "nothing is submitted without its journal entry"

        filler.unlink()
        try:
            run.wait_settled(4, timeout_s=120)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{run.log_text()[-4000:]}") from None
        accepted = run.accepted_job_ids()
        assert sorted(accepted) == sorted(["before.sh", *names]), accepted
        tags = tagged_jobs(sandbox)
        with sqlite3.connect(small_disk / "journal.sqlite") as db:
            journaled = {f"skb:{row[0]}" for row in db.execute("SELECT id FROM entries")}
        assert len(journaled) == 4 and all(tags.count(tag) == 1 for tag in journaled), "each file became exactly one job"
        assert "the journal cannot be written" in run.log_text()
    finally:
        if run.proc is not None:
            run.stop()
        sandbox.slurm("scancel", "--partition=parked", check=False)
        shutil.rmtree(run.root, ignore_errors=True)
