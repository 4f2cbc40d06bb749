"""Hooks at once: a hook process slurmctld gave up on, two hooks of one job, two notes of one job."""

from __future__ import annotations

import socket

from bridge.hooks.server import _still_connected
from bridge.settings import Settings
from tests.conftest import wait_for


def test_a_waiting_client_is_connected_and_a_closed_one_is_not() -> None:
    server_end, client_end = socket.socketpair()
    with server_end:
        assert _still_connected(server_end)
        assert _still_connected(server_end)  # asking twice reads nothing
        client_end.close()
        assert not _still_connected(server_end)


def test_hooks_of_one_job_run_one_at_a_time_and_other_jobs_alongside() -> None:
    import threading
    import time

    from bridge.hooks.server import _JobLocks

    locks = _JobLocks()
    running: dict[str, int] = {"7": 0, "8": 0}
    most: dict[str, int] = {"7": 0, "8": 0}
    guard = threading.Lock()

    def hook(job_id: str) -> None:
        with locks.one_at_a_time(job_id):
            with guard:
                running[job_id] += 1
                most[job_id] = max(most[job_id], running[job_id])
                both = running["7"] and running["8"]
            time.sleep(0.05)
            with guard:
                running[job_id] -= 1
            if both:
                seen_together.set()

    seen_together = threading.Event()
    threads = [threading.Thread(target=hook, args=(job_id,)) for job_id in ("7", "8", "7", "8", "7")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most == {"7": 1, "8": 1}
    assert seen_together.is_set(), "two jobs' hooks ran side by side"
    assert not locks._locks, "no lock kept for a job with no hook running"


def test_concurrent_notes_of_one_job_lose_nothing(tmp_path: object) -> None:
    import threading
    from pathlib import Path

    from bridge.collect.records import JobRecords

    assert isinstance(tmp_path, Path)
    records = JobRecords(tmp_path / "jobs")

    def note(writer: int) -> None:
        for n in range(20):
            records.append("42", attempt=0, state="running", reason="", writer=writer, n=n)

    threads = [threading.Thread(target=note, args=(writer,)) for writer in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(records.attempts("42")) == 120
    assert not [p for p in (tmp_path / "jobs").iterdir() if p.name.endswith(".tmp")]


def test_the_watcher_runs_so_many_prologs_at_once_and_epilogs_apart(tmp_path: object, monkeypatch: object) -> None:
    """`slurm.hooks_at_once`: a burst of prologs takes turns (past what the API server carries,
    more at once only slows each), the wait lands in the prolog's timings, and an epilog never
    waits behind prologs."""
    import threading
    import time
    from pathlib import Path

    import pytest

    from bridge.hooks import server as hook_server
    from bridge.hooks.fastpath import ask_hook_server
    from bridge.hooks.turns import hook_queued_s

    assert isinstance(tmp_path, Path) and isinstance(monkeypatch, pytest.MonkeyPatch)
    guard = threading.Lock()
    running = {"prolog": 0, "epilog": 0}
    most = {"prolog": 0, "epilog": 0}
    queued: list[float] = []
    release_prologs = threading.Event()

    def body(hook: str) -> object:
        def run(_settings: object, _job_id: str, _env: object) -> int:
            with guard:
                running[hook] += 1
                most[hook] = max(most[hook], running[hook])
                if hook == "prolog":
                    queued.append(hook_queued_s.get() or 0.0)
            if hook == "prolog":
                release_prologs.wait(10)
            time.sleep(0.05)
            with guard:
                running[hook] -= 1
            return 0
        return run

    monkeypatch.setattr(hook_server, "_bodies", lambda: {"prolog": body("prolog"), "epilog": body("epilog")})
    settings = Settings.model_validate({"slurm": {"hooks_at_once": 2, "hook_socket_path": str(tmp_path / "hooks.sock")},
                                        "hook_log_path": str(tmp_path / "hooks.log")})
    server = hook_server.HookServer(settings, tmp_path / "hooks.sock")
    server.start()
    try:
        answers: list[int | None] = []

        def ask(hook: str, job_id: str) -> None:
            answers.append(ask_hook_server(tmp_path / "hooks.sock", {"hook": hook, "job_id": job_id}, timeout_s=20))

        prologs = [threading.Thread(target=ask, args=("prolog", str(100 + n))) for n in range(6)]
        for thread in prologs:
            thread.start()
        time.sleep(0.3)
        assert most["prolog"] == 2 and running["prolog"] == 2, "two prologs run, four wait their turn"
        epilog = threading.Thread(target=ask, args=("epilog", "99"))
        epilog.start()
        epilog.join(5)
        assert not epilog.is_alive() and most["epilog"] == 1, "an epilog does not wait behind the prologs"
        release_prologs.set()
        for thread in prologs:
            thread.join(20)
        assert answers == [0] * 7
        assert most["prolog"] == 2
        assert sum(1 for wait_s in queued if wait_s >= 0.2) == 4, queued
    finally:
        server.close()


def test_a_hook_that_only_waits_gives_its_place_to_another(tmp_path: object, monkeypatch: object) -> None:
    """One place: a prolog waiting for its Pod (an image pull, say) lets the next job's prolog
    run meanwhile, and queues for the place again before it goes on."""
    import threading
    from pathlib import Path

    import pytest

    from bridge.hooks import server as hook_server
    from bridge.hooks.fastpath import ask_hook_server
    from bridge.hooks.turns import place_given_up

    assert isinstance(tmp_path, Path) and isinstance(monkeypatch, pytest.MonkeyPatch)
    order: list[str] = []
    pod_ready = threading.Event()

    def prolog(_settings: object, job_id: str, _env: object) -> int:
        order.append(f"{job_id} works")
        if job_id == "1":
            with place_given_up():
                order.append("1 waits for its Pod")
                assert pod_ready.wait(10)
            order.append("1 works again")
        else:
            pod_ready.set()
        return 0

    monkeypatch.setattr(hook_server, "_bodies", lambda: {"prolog": prolog, "epilog": prolog})
    settings = Settings.model_validate({"slurm": {"hooks_at_once": 1, "hook_socket_path": str(tmp_path / "h.sock")},
                                        "hook_log_path": str(tmp_path / "hooks.log")})
    server = hook_server.HookServer(settings, tmp_path / "h.sock")
    server.start()
    try:
        first = threading.Thread(target=ask_hook_server, args=(tmp_path / "h.sock", {"hook": "prolog", "job_id": "1"}))
        first.start()
        wait_for(lambda: "1 waits for its Pod" in order, timeout_s=10, what="the first prolog waiting")
        assert ask_hook_server(tmp_path / "h.sock", {"hook": "prolog", "job_id": "2"}, timeout_s=10) == 0
        first.join(10)
        assert order == ["1 works", "1 waits for its Pod", "2 works", "1 works again"]
    finally:
        server.close()
