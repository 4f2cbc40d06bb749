"""`skbridge shell`'s exec helpers: the login-shell command, stdin's end, the API server's refusal."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bridge.userview.shell_exec import _close_stdin, _why, shell_command

pytestmark = pytest.mark.unit


class FakeStream:
    """The two things `_close_stdin` uses of the client's WSClient."""

    def __init__(self, subprotocol: str) -> None:
        self.subprotocol = subprotocol
        self.sent: list[tuple[int, bytes]] = []
        self.closed: list[int] = []

    def write_channel(self, channel: int, data: bytes) -> None:
        self.sent.append((channel, data))

    def close_channel(self, channel: int) -> None:
        self.closed.append(channel)


def test_login_shell_is_an_argument_never_shell_text(tmp_path: Path) -> None:
    hostile = str(tmp_path / "x; touch pwned")
    done = subprocess.run(shell_command(hostile), input="echo $SHELL; exit 7\n", text=True,
                          capture_output=True, check=False, cwd=tmp_path)
    assert done.returncode == 7
    assert done.stdout.strip() in {"/bin/bash", "/bin/sh"}  # the fallback, not the hostile name
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("protocol", "tty", "closed", "sent", "ok"), [
    ("v5.channel.k8s.io", False, [0], [], True),
    ("v4.channel.k8s.io", True, [], [(0, b"\x04")], True),
    ("v4.channel.k8s.io", False, [], [], False),
])
def test_end_of_input_reaches_the_shell_as_the_protocol_allows(protocol: str, tty: bool, closed: list[int],
                                                               sent: list[tuple[int, bytes]], ok: bool) -> None:
    stream = FakeStream(protocol)
    assert _close_stdin(stream, tty) is ok
    assert (stream.closed, stream.sent) == (closed, sent)


def test_refusal_shows_the_api_servers_message() -> None:
    handshake = Exception('Handshake status 403 Forbidden -+-+- {"date": "x"} -+-+- {"kind":"Status","apiVersion":"v1",'
                          '"status":"Failure","message":"pods \\"skb-1-r0\\" is forbidden: cannot get pods/exec",'
                          '"code":403}')
    assert _why(handshake) == 'pods "skb-1-r0" is forbidden: cannot get pods/exec'
    assert _why(OSError("connection refused\nmore")) == "connection refused"
