"""The job's output: its --output file (the Pod's log, written by the batch step), else the
copy the epilog collected into results/<user>/<jobid>/pod.log."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bridge.userview.results import POD_LOG

_CHUNK = 64 * 1024


def output_source(output: str | None, job_dir: Path) -> Path | None:
    """The file to read: the --output file when it exists, else the collected pod.log, else None."""
    if output and os.path.isfile(output) and os.access(output, os.R_OK):
        return Path(output)
    collected = job_dir / POD_LOG
    if collected.is_file() and os.access(collected, os.R_OK):
        return collected
    return None


def tail_bytes(path: Path, lines: int | None) -> tuple[bytes, int]:
    """The last `lines` lines (all when None) and the offset where the file ended."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        size = os.fstat(fd).st_size
        if lines is None:
            data = b""
            while chunk := os.read(fd, _CHUNK):
                data += chunk
            return data, len(data)
        if lines <= 0:
            return b"", size
        # Read backwards in blocks until enough newlines are seen.
        position, data = size, b""
        while position > 0 and data.count(b"\n") <= lines:
            step = min(_CHUNK, position)
            position -= step
            data = os.pread(fd, step, position) + data
        wanted = data.splitlines(keepends=True)[-lines:]
        return b"".join(wanted), size
    finally:
        os.close(fd)


def follow(path: Path, offset: int, *, still_running: Callable[[], bool], poll_s: float = 0.25,
           check_every_s: float = 2.0) -> Iterator[bytes]:
    """New bytes from `offset` on, until `still_running()` says the job ended (then the rest)."""
    last_check = time.monotonic()
    running = True
    fd: int | None = None
    try:
        while True:
            if fd is None:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                except FileNotFoundError:
                    fd = None
            got = False
            if fd is not None:
                if os.fstat(fd).st_size < offset:  # truncated (requeued job rewrites its output)
                    offset = 0
                while chunk := os.pread(fd, _CHUNK, offset):
                    offset += len(chunk)
                    got = True
                    yield chunk
            if not running:
                return
            if time.monotonic() - last_check >= check_every_s:
                last_check = time.monotonic()
                running = still_running()
                if not running:
                    time.sleep(poll_s)  # the batch step's last words reach the file
                    continue
            if not got:
                time.sleep(poll_s)
    finally:
        if fd is not None:
            os.close(fd)
