"""One process that puts the controllers on every extra node's loopback.

For each node namespace and port it opens a listening socket on that namespace's 127.0.0.1
(entering the namespace only for `socket()`: a socket stays in the namespace it was made in)
and relays each connection to the same port on the host's loopback. One process serves all
nodes, so a hundred simulated nodes cost one relay, not hundreds of `socat`s.

Run as `python -m bridge.sandbox.loopback_relay --port P [--port P2] NETNS_PATH [NETNS_PATH...]`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000
_BUFFER_BYTES = 65536


def _setns(fd: int) -> None:
    # os.setns arrives with Python 3.12; the project supports 3.11.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


def listen_in(netns_path: str, port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:port inside the namespace at `netns_path`."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    target = os.open(netns_path, os.O_RDONLY)
    try:
        _setns(target)
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
        finally:
            _setns(home)
    finally:
        os.close(target)
        os.close(home)
    return sock


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_BUFFER_BYTES):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            if writer.can_write_eof():
                writer.write_eof()


async def _relay(port: int, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
    for writer in (client_writer, upstream_writer):
        with contextlib.suppress(Exception):
            writer.close()


async def serve(netns_paths: list[str], ports: list[int]) -> None:
    servers = []
    for path in netns_paths:
        for port in ports:
            sock = listen_in(path, port)
            servers.append(await asyncio.start_server(
                lambda r, w, port=port: _relay(port, r, w), sock=sock))  # type: ignore[misc]
    sys.stderr.write(f"loopback-relay: ports {ports} in {len(netns_paths)} namespace(s)\n")
    sys.stderr.flush()
    await asyncio.gather(*(server.serve_forever() for server in servers))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="loopback_relay")
    parser.add_argument("--port", type=int, action="append", required=True)
    parser.add_argument("netns", nargs="+")
    args = parser.parse_args(argv)
    asyncio.run(serve(args.netns, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
