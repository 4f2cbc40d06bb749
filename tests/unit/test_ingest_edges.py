"""The drop-folder pipeline's edges, with Slurm replaced at the function boundary (sbatch and the
tag lookup) and the file system's opener/fstat injected: ambiguous sbatch outcomes never lead to a
second sbatch until two lookups prove the job absent; transient open errors retry; over-long
names, foreign files and top-level drops are rejected with a private `.error`; failed/ names are
found in a bounded number of steps. The same properties are proven against the real sandbox in
tests/security/test_drop_folder.py.
"""

from __future__ import annotations

import errno
import os
import pwd
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.errors import PermanentError, TemporaryError
from bridge.ingest import outcome, pipeline, submission
from bridge.ingest.detect import SubmitScanner
from bridge.ingest.filecheck import FileNotReadyError, read_job_file
from bridge.ingest.journal import MAX_NAME_BYTES, EntryState, Journal
from bridge.ingest.layout import ensure_nas_layout, ensure_user_folder
from bridge.ingest.outcome import _free_name
from bridge.ingest.pipeline import Ingestor
from bridge.settings import IngestSettings, NasSettings, PolicySettings, Settings
from bridge.slurm.commands import AmbiguousSlurmError
from bridge.slurm.submit import TaggedJob, sbatch_still_running

JOB = """#!/bin/bash
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=00:10:00
#K8S_IMAGE=registry.lab:5000/alpine:3
echo hi
"""


@dataclass
class FakeSlurm:
    """sbatch and the tag lookup, scripted: each call pops the next outcome."""

    sbatch_outcomes: list[Exception | str] = field(default_factory=list)
    lookup_outcomes: list[Exception | dict[str, list[TaggedJob]]] = field(default_factory=list)
    sbatch_calls: int = 0
    lookup_calls: int = 0

    def sbatch(self, *_args: object, **_kwargs: object) -> str:
        self.sbatch_calls += 1
        outcome = self.sbatch_outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def lookup(self, *_args: object, **_kwargs: object) -> dict[str, list[TaggedJob]]:
        self.lookup_calls += 1
        outcome = self.lookup_outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome


@pytest.fixture
def slurm(monkeypatch: pytest.MonkeyPatch) -> FakeSlurm:
    fake = FakeSlurm()
    monkeypatch.setattr(submission, "sbatch_as_owner", fake.sbatch)
    monkeypatch.setattr(submission, "find_tagged_jobs", fake.lookup)
    return fake


@pytest.fixture
def nas(tmp_path: Path, users: dict[str, pwd.struct_passwd]) -> Iterator[Settings]:
    tmp_path.chmod(0o755)
    settings = Settings(
        nas=NasSettings(root=tmp_path / "nas"),
        ingest=IngestSettings(journal_path=tmp_path / "journal.sqlite", lock_path=tmp_path / "lock",
                              retry_initial_s=0.01, retry_max_s=0.01, absence_confirm_s=0.3),
        policy=PolicySettings(),
    )
    ensure_nas_layout(settings.nas, settings.policy)
    for account in users.values():
        ensure_user_folder(settings.nas, account)
    yield settings


def put(folder: Path, name: str | bytes, owner: pwd.struct_passwd, text: str = JOB) -> bytes:
    path = os.path.join(os.fsencode(folder), os.fsencode(name))
    with open(path, "wb") as out:
        out.write(text.encode())
    os.chown(path, owner.pw_uid, owner.pw_gid)
    os.chmod(path, 0o644)
    return os.fsencode(folder.name) + b"/" + os.fsencode(name)


def ingestor(settings: Settings) -> Ingestor:
    return Ingestor(settings, Journal(settings.ingest.journal_path))


def run_until_final(ing: Ingestor, entry_id: str, *, limit: int = 30) -> EntryState:
    for _ in range(limit):
        entry = ing.journal.get(entry_id)
        assert entry is not None
        if entry.state in (EntryState.ACCEPTED, EntryState.FAILED):
            return entry.state
        time.sleep(max(0.0, entry.next_attempt_at - time.time()))
        ing.process(entry)
    raise AssertionError("entry never finished")


# -- item 5: exactly once under ambiguous failures ---------------------------------------------


@pytest.mark.parametrize("failure", [
    TemporaryError("sbatch: error: Batch job submission failed: Socket timed out on send/recv operation"),
    TemporaryError("sbatch: error: Batch job submission failed: Zero Bytes were transmitted or received"),
    TemporaryError("sbatch: error: slurm_receive_msg: Connection reset by peer"),
    TemporaryError("sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)"),
    AmbiguousSlurmError("sbatch did not answer within 3s"),
    AmbiguousSlurmError("sbatch printed no job id: '' ''"),
])
def test_ambiguous_sbatch_is_never_repeated_while_the_job_may_exist(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd], failure: Exception) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "amb.sh", alice))
    assert entry is not None
    slurm.sbatch_outcomes = [failure]
    assert ing.process(entry).state == EntryState.SUBMITTING
    # Lookups that fail (slurmctld still unresponsive, sacct down) keep it "submitting".
    slurm.lookup_outcomes = [TemporaryError("squeue: error: Socket timed out"), PermanentError("sacct: weird"),
                             {}, {}]
    for _ in range(2):
        current = ing.journal.get(entry.id)
        assert current is not None
        assert ing.process(current).state == EntryState.SUBMITTING
    assert slurm.sbatch_calls == 1
    # One lookup finding nothing is not proof: a request slurmctld accepted earlier may still run.
    current = ing.journal.get(entry.id)
    assert current is not None
    assert ing.process(current).state == EntryState.SUBMITTING
    assert slurm.sbatch_calls == 1
    # A second complete lookup after the confirmation window: now it may be submitted again.
    time.sleep(nas.ingest.absence_confirm_s)
    slurm.sbatch_outcomes = ["4242"]
    current = ing.journal.get(entry.id)
    assert current is not None
    assert ing.process(current) == pipeline.Outcome(EntryState.ACCEPTED, "4242")
    assert slurm.sbatch_calls == 2


def test_an_sbatch_left_running_by_a_killed_watcher_blocks_any_resubmission(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    """After kill -9, the old watcher's sbatch may still be connecting; while it lives, no
    lookup counts (it could submit right after both found nothing)."""
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "orphan.sh", alice))
    assert entry is not None
    ing.journal.set_state(entry.id, EntryState.SUBMITTING, count_attempt=True)  # crashed during sbatch
    tag = f"skb:{entry.id}"
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", f"--comment={tag}"])
    try:
        wait_until = time.monotonic() + 5
        while not sbatch_still_running(tag) and time.monotonic() < wait_until:
            time.sleep(0.05)
        assert sbatch_still_running(tag)
        for _ in range(3):
            current = ing.journal.get(entry.id)
            assert current is not None
            assert ing.process(current).state == EntryState.SUBMITTING
        assert slurm.lookup_calls == 0 and slurm.sbatch_calls == 0
    finally:
        orphan.kill()
        orphan.wait()
    assert not sbatch_still_running(tag)
    slurm.lookup_outcomes = [{}, {}]
    slurm.sbatch_outcomes = ["808"]
    assert run_until_final(ing, entry.id) == EntryState.ACCEPTED
    assert (slurm.lookup_calls, slurm.sbatch_calls) == (2, 1)


def test_job_found_by_tag_after_an_ambiguous_sbatch_is_accepted_without_resubmitting(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "found.sh", alice))
    assert entry is not None
    slurm.sbatch_outcomes = [TemporaryError("Socket timed out on send/recv operation")]
    ing.process(entry)
    tag = f"skb:{entry.id}"
    # Absent once, then there (slurmctld processed the queued request late): taken, never resubmitted.
    slurm.lookup_outcomes = [{}, {tag: [TaggedJob("77", "skbalice")]}]
    assert run_until_final(ing, entry.id) == EntryState.ACCEPTED
    assert slurm.sbatch_calls == 1
    final = ing.journal.get(entry.id)
    assert final is not None and final.job_id == "77"
    # Archived, it stays as private as it was in submit/skbalice/ (0700): accepted/ is listable by all.
    assert stat.S_IMODE((nas.nas.accepted_dir / "77-found.sh").stat().st_mode) == 0o600


def test_a_tag_on_someone_elses_job_is_not_taken_as_ours(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "forged.sh", alice))
    assert entry is not None
    slurm.sbatch_outcomes = [TemporaryError("Connection reset by peer")]
    ing.process(entry)
    tag = f"skb:{entry.id}"
    slurm.lookup_outcomes = [{tag: [TaggedJob("66", "skbbob")]}, {tag: [TaggedJob("66", "skbbob")]}]
    current = ing.journal.get(entry.id)
    assert current is not None
    assert ing.process(current).state == EntryState.SUBMITTING


def test_slurm_refusal_rejects_the_file(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "no.sh", alice))
    assert entry is not None
    slurm.sbatch_outcomes = [PermanentError("Invalid partition name specified")]
    assert ing.process(entry).state == EntryState.FAILED
    assert slurm.lookup_calls == 0
    assert "Invalid partition name specified" in (nas.nas.failed_dir / "no.sh.error").read_text()


# -- item 7: someone else's file never runs as its owner ---------------------------------------


def test_a_colleagues_file_in_my_folder_is_refused(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice, bob = users["skbalice"], users["skbbob"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "bobs.sh", bob))  # mv keeps bob as the owner
    assert entry is not None
    assert ing.process(entry).state == EntryState.FAILED
    assert slurm.sbatch_calls == 0
    error = nas.nas.failed_dir / "bobs.sh.error"
    assert "the file belongs to skbbob but was found in skbalice's folder" in error.read_text()
    info = error.stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (bob.pw_uid, 0o600)
    assert alice.pw_uid != info.st_uid
    assert stat.S_IMODE((nas.nas.failed_dir / "bobs.sh").stat().st_mode) == 0o600


def test_files_directly_in_submit_are_refused_with_the_new_place(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    put(nas.nas.submit_dir, "top.sh", alice)
    entry = ing.claim(b"top.sh")
    assert entry is not None
    assert ing.process(entry).state == EntryState.FAILED
    report = (nas.nas.failed_dir / "top.sh.error").read_text()
    assert "found directly in" in report and f"{nas.nas.submit_dir}/$USER/" in report
    assert slurm.sbatch_calls == 0


def test_a_folder_others_can_write_to_is_refused(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    folder = nas.nas.submit_dir / "skbalice"
    folder.chmod(0o777)
    ing = ingestor(nas)
    entry = ing.claim(put(folder, "open.sh", alice))
    assert entry is not None
    assert ing.process(entry).state == EntryState.FAILED
    assert "is writable by others" in (nas.nas.failed_dir / "open.sh.error").read_text()


def test_layout_makes_private_user_folders_under_a_root_only_submit(
        nas: Settings, users: dict[str, pwd.struct_passwd]) -> None:
    top = nas.nas.submit_dir.stat()
    assert (top.st_uid, stat.S_IMODE(top.st_mode)) == (0, 0o755)
    for account in users.values():
        info = (nas.nas.submit_dir / account.pw_name).stat()
        assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (account.pw_uid, 0o700)
    assert not ensure_user_folder(nas.nas, users["skbalice"])  # idempotent


# -- item 8: drop-folder edges -----------------------------------------------------------------


@pytest.mark.parametrize("code", [errno.EIO, errno.ESTALE, errno.EMFILE, errno.EACCES])
def test_transient_open_errors_retry_instead_of_rejecting(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd], code: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "flaky.sh", alice))
    assert entry is not None
    failures = [code, code]
    real_read = pipeline.read_job_file

    def flaky_opener(name: str, flags: int, *, dir_fd: int) -> int:
        if failures:
            raise OSError(failures.pop(0), os.strerror(code))
        return os.open(name, flags, dir_fd=dir_fd)

    def read(*args: object, **kwargs: object) -> object:
        return real_read(*args, opener=flaky_opener, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "read_job_file", read)
    slurm.sbatch_outcomes = ["5150"]
    assert ing.process(entry).state == EntryState.WAITING
    assert run_until_final(ing, entry.id) == EntryState.ACCEPTED
    assert slurm.sbatch_calls == 1 and not list(nas.nas.failed_dir.iterdir())


def test_a_file_that_changes_while_read_is_not_ready(tmp_path: Path) -> None:
    (tmp_path / "grow.sh").write_text(JOB)
    os.chown(tmp_path / "grow.sh", 1501, 1501)
    calls: list[int] = []

    def growing_fstat(fd: int) -> os.stat_result:
        info = os.fstat(fd)
        calls.append(fd)
        if len(calls) == 1:
            return info
        fields = list(info)
        fields[stat.ST_SIZE] += 10  # a writer appended while the copy was read
        return os.stat_result(fields)

    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(FileNotReadyError):
            read_job_file(dir_fd, "grow.sh", PolicySettings(), fstat=growing_fstat)
        data, _facts, problems = read_job_file(dir_fd, "grow.sh", PolicySettings())
        assert data is not None and problems == []
    finally:
        os.close(dir_fd)


def test_a_name_too_long_to_claim_gets_an_error_and_a_sane_failed_name(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    ing = ingestor(nas)
    name = "x" * 251 + ".sh"  # 254 bytes: fits in submit/, not with the claim's prefix
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", name, alice))
    assert entry is not None and entry.name == name.encode()
    assert ing.process(entry).state == EntryState.FAILED
    failed = sorted(p.name for p in nas.nas.failed_dir.iterdir())
    assert len(failed) == 2 and failed[1] == failed[0] + ".error"
    assert all(len(n.encode()) <= 255 for n in failed) and failed[0].startswith("x" * 100)
    assert "the file name is 254 bytes long" in (nas.nas.failed_dir / failed[1]).read_text()
    assert slurm.sbatch_calls == 0


def test_a_long_multibyte_name_is_shortened_on_a_character_boundary(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    ing = ingestor(nas)
    name = "학" * 84 + ".sh"  # 255 bytes
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", name, users["skbalice"]))
    assert entry is not None
    ing.process(entry)
    for path in nas.nas.failed_dir.iterdir():
        os.fsencode(path.name).decode("utf-8")  # valid UTF-8
        assert len(os.fsencode(path.name)) <= 255


def test_free_name_is_bounded_however_many_clashes(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def lexists(path: bytes) -> bool:
        calls.append(path)
        base = os.path.basename(path)
        # job.sh and job.sh.1 ... job.sh.9999 all exist (and their .error files).
        return base.split(b".error")[0] in {b"job.sh"} | {b"job.sh.%d" % i for i in range(10_000)}

    monkeypatch.setattr(outcome.os.path, "lexists", lexists)
    name = _free_name(b"/failed", b"job.sh", companion=b".error")
    assert len(calls) <= 2 * 30
    assert name.startswith(b"job.sh.") and len(name) == len(b"job.sh.") + 12


def test_error_file_is_private_even_when_a_leftover_tmp_exists(
        nas: Settings, slurm: FakeSlurm, users: dict[str, pwd.struct_passwd]) -> None:
    alice = users["skbalice"]
    leftover = nas.nas.failed_dir / ".bad.sh.error.tmp"
    leftover.write_text("old")
    leftover.chmod(0o666)
    ing = ingestor(nas)
    entry = ing.claim(put(nas.nas.submit_dir / "skbalice", "bad.sh", alice, text="#!/bin/bash\necho no image\n"))
    assert entry is not None
    assert ing.process(entry).state == EntryState.FAILED
    info = (nas.nas.failed_dir / "bad.sh.error").stat()
    assert (info.st_uid, stat.S_IMODE(info.st_mode)) == (alice.pw_uid, 0o600)


def test_long_names_are_limited_by_the_same_constant() -> None:
    assert MAX_NAME_BYTES + len(".9999999999-") + len(".error") < 255


# -- detection: written in place versus renamed in ---------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_file_closed_by_its_writer_waits_for_quiet_before_it_is_ready(tmp_path: Path) -> None:
    submit = tmp_path / "submit"
    (submit / "alice").mkdir(parents=True)
    clock = Clock()
    scanner = SubmitScanner(submit, settle_s=2.0, hint_settle_s=0.25, clock=clock)
    (submit / "alice" / "two.sh").write_text("#!/bin/bash\n")  # `cat a > f`
    scanner.hint_written(b"alice/two.sh", closed=True)
    assert scanner.scan() == []
    assert scanner.next_check_in_s() == pytest.approx(0.25)
    clock.now = 0.1
    with (submit / "alice" / "two.sh").open("a") as out:  # `cat b >> f`, before the quiet window ends
        out.write("echo second half\n")
    scanner.hint_written(b"alice/two.sh", closed=False)
    assert scanner.scan() == []
    scanner.hint_written(b"alice/two.sh", closed=True)
    clock.now = 0.2
    assert scanner.scan() == []
    clock.now = 0.46
    assert scanner.scan() == [b"alice/two.sh"]


def test_a_renamed_in_file_is_ready_at_once_and_top_level_files_are_seen(tmp_path: Path) -> None:
    submit = tmp_path / "submit"
    (submit / "alice").mkdir(parents=True)
    (submit / "alice" / "moved.sh").write_text("x")
    (submit / "legacy.sh").write_text("x")
    (submit / "alice" / "nested").mkdir()
    scanner = SubmitScanner(submit, settle_s=2.0, clock=Clock())
    scanner.hint_complete(b"alice/moved.sh")
    assert scanner.scan() == [b"alice/moved.sh"]
    scanner.forget(b"alice/moved.sh")
    scanner2 = SubmitScanner(submit, settle_s=0.0, clock=Clock())
    assert sorted(scanner2.scan()) == [b"alice/moved.sh", b"legacy.sh"]


def test_idle_user_folders_are_not_listed_on_every_scan(tmp_path: Path) -> None:
    submit = tmp_path / "submit"
    for user in ("alice", "bob"):
        (submit / user).mkdir(parents=True)
    old = time.time() - 60
    for user in ("alice", "bob"):
        os.utime(submit / user, (old, old))
    listed: list[bytes] = []

    def list_names(directory: bytes) -> list[bytes]:
        listed.append(os.path.basename(directory))
        return os.listdir(directory)

    clock = Clock()
    scanner = SubmitScanner(submit, settle_s=0.0, clock=clock, list_names=list_names)
    assert scanner.scan() == []  # the first scan lists everything
    listed.clear()
    for _ in range(5):
        assert scanner.scan() == []
    assert listed == [b"submit"] * 5  # only submit/ itself: the user folders did not change
    (submit / "bob" / "new.sh").write_text("#!/bin/bash\n")  # changes bob's mtime
    listed.clear()
    assert scanner.scan() == [b"bob/new.sh"]
    assert b"bob" in listed and b"alice" not in listed
