"""One exec session into the job container, with the job's own credential (`skbridge shell`).

Through the API server to the node's kubelet, over the official client's websocket stream
(v5.channel.k8s.io where the server speaks it: that protocol can close stdin, so a piped
script's EOF reaches the shell). With a terminal on stdin: a TTY in the container, the local
terminal in raw mode (Ctrl-C, Ctrl-Z, Ctrl-D are bytes for the remote shell, not signals
for skbridge), window size sent at start and on SIGWINCH, the terminal restored on the way
out. Without one: plain pipes, stdout and stderr kept apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import ssl
import sys
import termios
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from bridge.errors import TemporaryError
from bridge.kubernetes.client import load_client
from bridge.kubernetes.podstatus import JOB_CONTAINER

STDIN_CHANNEL, RESIZE_CHANNEL = 0, 4
_READ_BYTES = 65536
_SELECT_S = 0.25  # how soon a resize or a closed connection is noticed without input
# Runs the login shell named (the user's, from the password database of the submit host) if
# the image has it, else bash, else sh; the name is an argument, never shell text.
_LOGIN = 'for s in "$1" /bin/bash /bin/sh; do if [ -x "$s" ]; then SHELL=$s; export SHELL; exec "$s" -l; fi; done; exit 127'


@dataclass(frozen=True)
class SessionEnd:
    exit_code: int | None  # None: the connection ended without the shell's status
    detail: str = ""


def shell_command(login_shell: str) -> list[str]:
    return ["/bin/sh", "-c", _LOGIN, "skbridge-shell", login_shell]


class _Hangup(Exception):
    """SIGHUP or SIGTERM to skbridge (terminal closed, session killed): end the session."""


@contextlib.contextmanager
def _raw_terminal(fd: int) -> Iterator[None]:
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


@contextlib.contextmanager
def _signals(resized: list[bool]) -> Iterator[None]:
    def on_winch(_sig: int, _frame: FrameType | None) -> None:
        resized[0] = True

    def on_end(sig: int, _frame: FrameType | None) -> None:
        raise _Hangup(signal.Signals(sig).name)

    previous = {sig: signal.signal(sig, handler) for sig, handler in
                ((signal.SIGWINCH, on_winch), (signal.SIGHUP, on_end), (signal.SIGTERM, on_end))}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _window(fd: int) -> dict[str, int]:
    size = os.get_terminal_size(fd)
    return {"Width": size.columns, "Height": size.lines}


def run_session(kubeconfig: Path, namespace: str, pod: str, *, login_shell: str, api_timeout_s: float) -> SessionEnd:
    """Exec the login shell in the Pod's job container; returns when the remote shell ends."""
    from kubernetes import client as kube_client
    from kubernetes.stream import stream

    kube = load_client(kubeconfig, timeout_s=api_timeout_s)
    stdin_fd = sys.stdin.fileno()
    use_tty = os.isatty(stdin_fd)
    try:
        resp = stream(kube_client.CoreV1Api(kube.api_client).connect_get_namespaced_pod_exec, pod, namespace,
                      container=JOB_CONTAINER, command=shell_command(login_shell), stdin=True, stdout=True,
                      stderr=not use_tty, tty=use_tty, _preload_content=False, binary=True)
    except Exception as exc:  # the client raises ApiException, websocket and OS errors alike
        raise TemporaryError(f"cannot open a shell in Pod {pod}: {_why(exc)}") from exc
    resized = [use_tty]  # send the size once at the start
    with _signals(resized), (_raw_terminal(stdin_fd) if use_tty else contextlib.nullcontext()):
        try:
            return _pump(resp, stdin_fd, use_tty, resized)
        except _Hangup as exc:
            return SessionEnd(None, f"skbridge got {exc}")
        finally:
            resp.close()


def _pump(resp: Any, stdin_fd: int, use_tty: bool, resized: list[bool]) -> SessionEnd:
    """Copy stdin to the shell and its output back until the server ends the stream."""
    stdin_open = True
    outputs = ((1, sys.stdout.buffer.fileno()), (2, sys.stderr.buffer.fileno()))
    while resp.is_open():
        if resized[0]:
            resized[0] = False
            with contextlib.suppress(OSError):
                resp.write_channel(RESIZE_CHANNEL, json.dumps(_window(stdin_fd)).encode())
        sock = resp.sock.sock
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        watch = [sock, stdin_fd] if stdin_open else [sock]
        try:
            ready, _, _ = select.select(watch, [], [], 0 if pending else _SELECT_S)
        except InterruptedError:  # pragma: no cover  (PEP 475 retries; kept for clarity)
            continue
        if pending or sock in ready:
            try:
                resp.update(timeout=0)
            except Exception as exc:  # websocket errors: the connection is gone
                return SessionEnd(None, f"connection lost: {exc}")
            for channel, fd in outputs:
                data = resp.read_channel(channel)
                if data:
                    _write_all(fd, data)
        if stdin_open and stdin_fd in ready:
            data = os.read(stdin_fd, _READ_BYTES)
            if data:
                resp.write_channel(STDIN_CHANNEL, data)
            else:
                stdin_open = False
                if not _close_stdin(resp, use_tty):
                    return SessionEnd(None, "end of input, and the API server speaks no v5 exec protocol to pass "
                                      "it on: the connection is closed, the shell's exit status is unknown")
    for channel, fd in outputs:  # what came with the closing frames
        data = resp.read_channel(channel)
        if data:
            _write_all(fd, data)
    try:
        return SessionEnd(int(resp.returncode))
    except Exception as exc:  # no status frame: the connection dropped
        return SessionEnd(None, f"the connection ended without the shell's exit status ({type(exc).__name__})")


def _close_stdin(resp: Any, use_tty: bool) -> bool:
    """EOF on stdin: tell the shell (v5 protocol), or send Ctrl-D to a TTY. False: neither can."""
    if getattr(resp, "subprotocol", None) == "v5.channel.k8s.io" and hasattr(resp, "close_channel"):
        resp.close_channel(STDIN_CHANNEL)
    elif use_tty:
        resp.write_channel(STDIN_CHANNEL, b"\x04")
    else:
        return False
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _why(exc: Exception) -> str:
    """The API server's own message (the handshake error carries the Status object last), else the error."""
    text = str(exc)
    start = text.rfind('{"kind":"Status"')
    if start >= 0:
        with contextlib.suppress(ValueError):
            return str(json.loads(text[start:]).get("message") or text)
    return text.splitlines()[0] if text else type(exc).__name__
