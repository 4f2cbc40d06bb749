"""An ssh stand-in for machines without an SSH server: `SKBRIDGE_SSH="python -m bridge.profiles.localssh"`.

It takes ssh's command line (`[options] [--] HOST COMMAND...`), ignores the host and hands the
command, joined with spaces exactly as ssh does, to `sh -c` here, as the calling user: the remote
shell's parsing, stdin, stdout and the exit status behave as over a real connection, so `--host`
is exercised end to end against the local Slurm. Not for production use.
"""

from __future__ import annotations

import os
import sys

_OPTIONS_WITH_VALUE = set("BbcDEeFIiJLlmOopQRSWw")


def main(argv: list[str]) -> int:
    rest = list(argv)
    while rest and rest[0].startswith("-") and rest[0] != "--":
        flag = rest.pop(0)
        if len(flag) == 2 and flag[1] in _OPTIONS_WITH_VALUE and rest:
            rest.pop(0)
    if rest[:1] == ["--"]:
        rest.pop(0)
    if len(rest) < 2:
        sys.stderr.write("localssh: usage: localssh [options] [--] HOST COMMAND\n")
        return 255
    command = " ".join(rest[1:])
    os.execvp("sh", ["sh", "-c", command])  # noqa: S606 - the remote shell ssh would start, by design
    return 255  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
