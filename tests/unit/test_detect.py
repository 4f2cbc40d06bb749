"""Readiness rules of the submit-folder scanner, with an injected clock, listing and stat (an NFS stand-in)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from bridge.ingest.detect import InotifyHint, SubmitScanner, is_ignored_name


class FakeFolder:
    def __init__(self) -> None:
        self.files: dict[bytes, tuple[int, int, int]] = {}
        self.now = 0.0

    def list_names(self, _directory: bytes) -> list[bytes]:
        return list(self.files)

    def lstat(self, path: bytes) -> os.stat_result:
        size, mtime_ns, inode = self.files[os.path.basename(path)]
        # st_mtime_ns comes from the float field (index 8) when the tuple has only 10 fields.
        mtime_s = mtime_ns / 10**9
        return os.stat_result((0o100644, inode, 1, 1, 1000, 1000, size, mtime_s, mtime_s, mtime_s))

    def scanner(self, settle_s: float = 2.0) -> SubmitScanner:
        return SubmitScanner(Path("/nas/submit"), settle_s=settle_s, clock=lambda: self.now,
                             list_names=self.list_names, lstat=self.lstat)


@pytest.mark.parametrize("name", [b".hidden", b".job.sh.AbC123", b".nfs0000000001", b"job.sh.part", b"job.sh.swp",
                                  b"job.sh~", b"download.crdownload"])
def test_temporary_names_are_ignored(name: bytes) -> None:
    assert is_ignored_name(name)


def test_regular_names_are_not_ignored() -> None:
    assert not is_ignored_name(b"train.sh")
    assert not is_ignored_name("학습.sh".encode())


def test_file_is_ready_only_after_the_settle_window() -> None:
    folder = FakeFolder()
    scanner = folder.scanner(settle_s=2.0)
    folder.files[b"job.sh"] = (10, 1_000_000_000, 7)
    assert scanner.scan() == []
    folder.now = 1.9
    assert scanner.scan() == []
    folder.now = 2.0
    assert scanner.scan() == [b"job.sh"]


def test_growing_file_restarts_the_settle_window() -> None:
    folder = FakeFolder()
    scanner = folder.scanner(settle_s=2.0)
    folder.files[b"job.sh"] = (10, 1_000_000_000, 7)
    scanner.scan()
    for step in range(1, 6):
        folder.now = step * 1.5
        folder.files[b"job.sh"] = (10 + step, 1_000_000_000 + step * 10**9, 7)  # writer still appending
        assert scanner.scan() == []
    folder.now += 2.0
    assert scanner.scan() == [b"job.sh"]


def test_replaced_file_with_new_inode_restarts_the_window() -> None:
    folder = FakeFolder()
    scanner = folder.scanner(settle_s=2.0)
    folder.files[b"job.sh"] = (10, 1_000_000_000, 7)
    scanner.scan()
    folder.now = 1.5
    folder.files[b"job.sh"] = (10, 1_000_000_000, 8)
    assert scanner.scan() == []
    folder.now = 3.0
    assert scanner.scan() == []
    folder.now = 3.5
    assert scanner.scan() == [b"job.sh"]


def test_inotify_hint_makes_a_file_ready_at_once() -> None:
    folder = FakeFolder()
    scanner = folder.scanner(settle_s=2.0)
    folder.files[b"moved.sh"] = (10, 1_000_000_000, 7)
    scanner.hint_complete(b"moved.sh")
    assert scanner.scan() == [b"moved.sh"]


def test_vanished_files_are_forgotten() -> None:
    folder = FakeFolder()
    scanner = folder.scanner(settle_s=0.0)
    folder.files[b"a.sh"] = (1, 1, 1)
    assert scanner.scan() == [b"a.sh"]
    del folder.files[b"a.sh"]
    assert scanner.scan() == []


def test_real_inotify_pairs_renames_in_after_a_claim_moved_one_out(tmp_path: Path) -> None:
    # With watchdog's move pairing shortened, a rename into submit/ must still arrive as one
    # move (a hint), also right after a claim moved another file out (an unpaired move).
    submit, processing = tmp_path / "submit", tmp_path / "processing"
    submit.mkdir()
    processing.mkdir()
    scanner = SubmitScanner(submit, settle_s=3600.0)
    wake = threading.Event()
    hint = InotifyHint(submit, scanner, wake)
    assert hint.start()
    try:
        for index in range(5):
            (submit / "claimed.sh").write_text("x")
            (submit / "claimed.sh").rename(processing / f"claimed-{index}.sh")
            staging = submit / f".job{index}.sh.part"
            staging.write_text("#!/bin/bash\n")
            staging.rename(submit / f"job{index}.sh")
            deadline = time.monotonic() + 10
            ready: list[bytes] = []
            while f"job{index}.sh".encode() not in ready and time.monotonic() < deadline:
                wake.wait(0.1)
                wake.clear()
                ready = scanner.scan()
            assert f"job{index}.sh".encode() in ready, "the rename was not reported as a move"
            (submit / f"job{index}.sh").rename(processing / f"job{index}.sh")
    finally:
        hint.stop()
