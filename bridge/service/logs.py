"""A job's output for the API: the last lines, and a live Server-Sent Events stream until the job ends."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import anyio.to_thread

from bridge.service.useropen import Account, open_as
from bridge.userview.results import POD_LOG

_CHUNK = 64 * 1024
TAIL_BYTES_FOR_PROGRESS = 64 * 1024


def log_path(output: str | None, job_dir: Path) -> Path | None:
    """The --output file while it exists, else the collected pod.log; opened later as the job's owner."""
    if output and os.path.lexists(output):
        return Path(output)
    collected = job_dir / POD_LOG
    return collected if os.path.lexists(collected) else None


def read_tail(account: Account, path: Path, lines: int | None, *, max_bytes: int = 8 << 20) -> str:
    """The last `lines` lines (all, up to max_bytes from the end, when None), read as the owner."""
    fd = open_as(account, path)
    try:
        size = os.fstat(fd).st_size
        position, data = size, b""
        while position > 0 and len(data) < max_bytes and (lines is None or data.count(b"\n") <= lines):
            step = min(_CHUNK, position)
            position -= step
            data = os.pread(fd, step, position) + data
    finally:
        os.close(fd)
    text = data.decode("utf-8", "replace")
    if lines is None:
        return text
    if lines <= 0:
        return ""
    return "".join(text.splitlines(keepends=True)[-lines:])


def sse(event: str | None, data: str) -> bytes:
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in data.split("\n"))
    return (head + body + "\n").encode("utf-8")


def _read_from(fd: int, offset: int) -> tuple[bytes, int]:
    """Everything after `offset` (from 0 again when the file shrank: a requeued job restarts its output)."""
    if os.fstat(fd).st_size < offset:
        offset = 0
    data = b""
    while chunk := os.pread(fd, _CHUNK, offset + len(data)):
        data += chunk
        if len(data) >= 16 * _CHUNK:
            break
    return data, offset


async def stream_events(account: Account, find_path: Callable[[], Path | None], still_running: Callable[[], str | None],
                        *, poll_s: float = 0.25, check_every_s: float = 2.0,
                        max_wait_s: float = 7 * 86400) -> AsyncIterator[bytes]:
    """Each output line as one `data:` event while the job runs; `event: end` with the final state.

    `still_running()` returns None while the job runs, its final state once it ended. Waiting
    happens on the event loop; only the file and Slurm calls take a worker thread, briefly, so
    many open streams do not starve the other requests of threads.
    """
    fd: int | None = None
    offset = 0
    pending = b""
    last_check = 0.0  # ask Slurm at once: a job that ended already gets its whole output and the end
    ended: str | None = None
    started = time.monotonic()
    yield b": stream open\n\n"
    try:
        while True:
            if fd is None:
                path = find_path()
                if path is not None:
                    try:
                        fd = await anyio.to_thread.run_sync(open_as, account, path)
                    except OSError:
                        fd = None
            got = False
            if fd is not None:
                data, start = await anyio.to_thread.run_sync(_read_from, fd, offset)
                if start < offset:
                    pending = b""
                offset = start + len(data)
                if data:
                    got = True
                    pending += data
                    *complete, pending = pending.split(b"\n")
                    for line in complete:
                        yield sse(None, line.decode("utf-8", "replace").rstrip("\r"))
            if ended is not None:
                if got:
                    continue  # drain what the batch step wrote last
                if pending:
                    yield sse(None, pending.decode("utf-8", "replace"))
                yield sse("end", json.dumps({"state": ended}))
                return
            now = time.monotonic()
            if now - last_check >= check_every_s:
                last_check = now
                ended = await anyio.to_thread.run_sync(still_running)
                if ended is not None:
                    await anyio.sleep(poll_s)  # the batch step's last words reach the file
                    continue
                yield b": keep-alive\n\n"
            if now - started > max_wait_s:
                yield sse("end", json.dumps({"state": "stream-limit"}))
                return
            if not got:
                await anyio.sleep(poll_s)
    finally:
        if fd is not None:
            os.close(fd)
