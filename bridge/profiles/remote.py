"""`--host LOGIN`: the same commands run on the login node over SSH, as the user.

ssh always hands its command to the remote user's shell, so the remote command is one string
built with `shlex.join` from an argv list: every user value (file names, paths, job ids) stays
one quoted word. The job file and the snapshot travel on stdin, never in the command line.
`SKBRIDGE_SSH` names the ssh-compatible client (default `ssh`; options allowed, e.g.
`ssh -p 2222`); `SKBRIDGE_REMOTE` the remote skbridge (default `skbridge`).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from dataclasses import dataclass
from typing import IO

import structlog

from bridge.errors import ConfigError, PermanentError, TemporaryError

log = structlog.get_logger(__name__)
_HOST = re.compile(r"^(?:[A-Za-z0-9._-]+@)?[A-Za-z0-9][A-Za-z0-9._-]*$")
SSH_FAILED = 255  # ssh's own exit status for a connection it could not make


@dataclass(frozen=True)
class Remote:
    host: str
    ssh: str = "ssh"
    skbridge: str = "skbridge"

    def __post_init__(self) -> None:
        # A host starting with '-' would be an ssh option; anything but a name has no business here.
        if not _HOST.fullmatch(self.host):
            raise ConfigError(f"--host {self.host!r} is not a host name ([user@]host)")
        if not shlex.split(self.ssh):
            raise ConfigError("SKBRIDGE_SSH is empty")

    @classmethod
    def from_env(cls, host: str) -> Remote:
        return cls(host, os.environ.get("SKBRIDGE_SSH") or "ssh", os.environ.get("SKBRIDGE_REMOTE") or "skbridge")

    def argv(self, remote: list[str]) -> list[str]:
        """ssh's argv: the client, `--`, the host, and the remote command as one shell-quoted string."""
        command = shlex.join([*shlex.split(self.skbridge), *remote])
        return [*shlex.split(self.ssh), "--", self.host, command]

    def run(self, remote: list[str], *, stdin: IO[bytes] | bytes | None = None, stdout: IO[bytes] | None = None,
            timeout_s: float = 600.0) -> subprocess.CompletedProcess[bytes]:
        """Run `skbridge REMOTE...` there, stdout captured (or into `stdout`), stderr passed through to the user."""
        argv = self.argv(remote)
        log.debug("remote command", host=self.host, argv=remote)
        data = stdin if isinstance(stdin, bytes) else None
        handle = stdin if stdin is not None and not isinstance(stdin, bytes) else None
        try:
            done = subprocess.run(argv, input=data, stdin=handle if data is None else None,
                                  stdout=stdout if stdout is not None else subprocess.PIPE, timeout=timeout_s, check=False)
        except FileNotFoundError as exc:
            raise ConfigError(f"the ssh client {argv[0]!r} is not installed (SKBRIDGE_SSH)") from exc
        except subprocess.TimeoutExpired as exc:
            raise TemporaryError(f"{self.host} did not answer within {timeout_s:.0f}s") from exc
        if done.returncode == SSH_FAILED:
            raise TemporaryError(f"ssh to {self.host} failed (exit 255): check the host name and your SSH keys")
        return done

    def passthrough(self, remote: list[str], *, stdin: bytes | None = None) -> int:
        """Run it with its output streamed to ours; its exit status."""
        try:
            done = subprocess.run(self.argv(remote), input=stdin, check=False)
        except FileNotFoundError as exc:
            raise ConfigError(f"the ssh client {self.ssh!r} is not installed (SKBRIDGE_SSH)") from exc
        return done.returncode

    def output(self, remote: list[str], *, stdin: IO[bytes] | bytes | None = None) -> str:
        """stdout of a remote command that must succeed."""
        done = self.run(remote, stdin=stdin)
        if done.returncode != 0:
            raise PermanentError(f"on {self.host}: skbridge {' '.join(remote[:2])} failed (exit {done.returncode})")
        return done.stdout.decode("utf-8", errors="replace")
