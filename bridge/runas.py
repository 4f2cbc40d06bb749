"""Doing file work as a lab user: root forks, the child drops to the user for good.

Everything below a user's folders is the user's to change, so root never writes there
itself: a symlink or hard link planted by the user can then reach only what the user could
reach anyway. Shared by the results collector, the prolog's status and the per-job
credential writer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bridge.errors import PermanentError

T = TypeVar("T")


def run_as_user(uid: int, gid: int, work: Callable[[], T]) -> T:
    """Run `work` with the user's identity in a forked child; its JSON-able result comes back."""
    if os.geteuid() == uid:
        return work()
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to the user for good, do the work, report, exit
        code = 0
        try:
            os.close(read_fd)
            os.setgroups([gid])
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
            os.umask(0o027)
            payload = json.dumps({"ok": work()}).encode("utf-8")
        except BaseException as exc:
            payload, code = json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode("utf-8"), 1
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(write_fd, view):]
        finally:
            os._exit(code)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as reader:
        while chunk := reader.read(1 << 16):
            chunks.append(chunk)
    os.waitpid(pid, 0)
    try:
        answer = json.loads(b"".join(chunks) or b"{}")
    except ValueError as exc:
        raise PermanentError(f"work as uid {uid} returned garbage") from exc
    if "ok" not in answer:
        raise PermanentError(f"as uid {uid}: {answer.get('error', 'the child process died')}")
    return answer["ok"]  # type: ignore[no-any-return]


def write_atomic(path: Path, data: bytes, mode: int = 0o640) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def write_file_as(path: Path, data: bytes, uid: int, gid: int, mode: int = 0o640) -> None:
    """Write atomically, as the user, into the user's folder."""
    run_as_user(uid, gid, lambda: write_atomic(path, data, mode))
