"""The hook server tells a hook process that still waits from one slurmctld has killed."""

from __future__ import annotations

import socket

from bridge.hooks.server import _still_connected


def test_a_waiting_client_is_connected_and_a_closed_one_is_not() -> None:
    server_end, client_end = socket.socketpair()
    with server_end:
        assert _still_connected(server_end)
        assert _still_connected(server_end)  # asking twice reads nothing
        client_end.close()
        assert not _still_connected(server_end)
