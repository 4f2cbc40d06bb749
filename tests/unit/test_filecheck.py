"""File-level checks on real files: links, owners, modes, sizes, encodings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.ingest.filecheck import read_job_file, validate_file
from bridge.settings import PolicySettings, Settings

POLICY = PolicySettings(uid_min=1000, uid_max=60000, max_file_bytes=4096)
USER_UID = 1777
GOOD = b"#!/bin/bash\n#K8S_IMAGE=registry.lab:5000/x:1\necho hi\n"


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield tmp_path, fd
    finally:
        os.close(fd)


def put(folder: Path, name: str | bytes, data: bytes = GOOD, *, uid: int = USER_UID, mode: int = 0o644) -> Path:
    path = Path(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(name))))
    path.write_bytes(data)
    os.chmod(path, mode)
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    return path


def problem_codes(fd: int, name: str) -> list[str]:
    return [p.code for p in read_job_file(fd, name, POLICY)[2]]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="chown to another uid needs root")


@needs_root
def test_a_good_file_is_read_with_its_facts(folder: tuple[Path, int]) -> None:
    path, fd = folder
    put(path, "job.sh")
    data, facts, problems = read_job_file(fd, "job.sh", POLICY)
    assert (data, problems) == (GOOD, [])
    assert facts is not None and facts.uid == USER_UID and facts.size == len(GOOD)


@needs_root
def test_each_file_problem_has_its_own_code(folder: tuple[Path, int]) -> None:
    path, fd = folder
    put(path, "target.sh")
    os.symlink(path / "target.sh", path / "link.sh")
    put(path, "hard.sh")
    os.link(path / "hard.sh", path / "hard2.sh")
    put(path, "root.sh", uid=0)
    put(path, "daemon.sh", uid=1)
    put(path, "gw.sh", mode=0o664)
    put(path, "big.sh", GOOD + b"#" * 5000)
    put(path, "bin.sh", b"#!/bin/bash\n\x00\x01\x02")
    put(path, "latin.sh", b"#!/bin/bash\necho caf\xe9\n")
    put(path, b"bad\xffname.sh")
    put(path, "-rf.sh")
    put(path, "new\nline.sh")
    os.mkdir(path / "dir.sh")
    zero = put(path, "zero.sh")
    os.utime(zero, ns=(0, 0))
    assert problem_codes(fd, "link.sh") == ["symlink"]
    assert problem_codes(fd, "hard.sh") == ["hard-link"]
    assert problem_codes(fd, "root.sh") == ["root-owned"]
    assert problem_codes(fd, "daemon.sh") == ["uid-out-of-range"]
    assert problem_codes(fd, "gw.sh") == ["writable-by-others"]
    assert problem_codes(fd, "big.sh") == ["too-big"]
    assert problem_codes(fd, "bin.sh") == ["binary"]
    assert problem_codes(fd, "latin.sh") == ["not-utf8"]
    assert problem_codes(fd, os.fsdecode(b"bad\xffname.sh")) == ["bad-name"]
    assert problem_codes(fd, "-rf.sh") == ["bad-name"]
    assert problem_codes(fd, "new\nline.sh") == ["bad-name"]
    assert problem_codes(fd, "dir.sh") == ["not-regular"]
    assert problem_codes(fd, "zero.sh") == ["mtime-zero"]
    _data, facts, problems = read_job_file(fd, "gone.sh", POLICY)
    assert facts is not None and facts.vanished and problems == []


@needs_root
def test_validate_file_reports_file_and_text_problems_together(tmp_path: Path) -> None:
    settings = Settings(policy={"allowed_registries": ["registry.lab:5000"]})
    path = put(tmp_path, "job.sh", b"#!/bin/bash\r\n#SBATCH --uid=0\r\necho\r\n", uid=0)
    report = validate_file(path, settings)
    assert not report.ok
    assert [p.code for p in report.problems] == ["root-owned", "missing-image", "crlf", "forbidden-option"]


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_raise(data: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fuzz.sh"
        path.write_bytes(data)
        os.chmod(path, 0o644)
        report = validate_file(path, Settings())
        assert report.ok or report.problems
        assert all(p.code != "internal" for p in report.problems)
