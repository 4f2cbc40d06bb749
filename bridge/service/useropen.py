"""Open a user's file with the user's own rights: a forked child drops to the user, opens the
file without following a final symlink, and hands the descriptor back over a socket.

The service runs as root, but a job's output path and results folder are the user's to
shape (a symlink to /etc/shadow, a folder swapped for a link): opened as the user, they can
only ever yield what the user could read anyway.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    groups: tuple[int, ...]


def open_as(account: Account, path: Path) -> int:
    """A read-only descriptor of a regular file `path`, opened as `account`; OSError otherwise."""
    if os.geteuid() == account.uid:
        return _open_regular(path)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid = os.fork()
    if pid == 0:  # the child: become the user for good, open, send, exit
        code = 0
        try:
            parent.close()
            os.setgroups(list(account.groups) or [account.gid])
            os.setresgid(account.gid, account.gid, account.gid)
            os.setresuid(account.uid, account.uid, account.uid)
            fd = _open_regular(path)
            socket.send_fds(child, [b"0"], [fd])
        except OSError as exc:
            try:
                child.sendall(str(exc.errno or errno.EACCES).encode())
            except OSError:
                code = 1
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    child.close()
    try:
        message, fds, _flags, _addr = socket.recv_fds(parent, 16, 1)
    finally:
        parent.close()
        os.waitpid(pid, 0)
    if fds:
        return fds[0]
    number = int(message or str(errno.EACCES).encode())
    raise OSError(number, os.strerror(number), str(path))


def _open_regular(path: Path) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not _is_regular(fd):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _is_regular(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)
