"""The dashboard's sign-in pieces without a sandbox: tickets work once and expire, sessions
expire and end, every template escapes what users write, and the package ships the pages."""

from __future__ import annotations

from importlib import resources

import pytest

from bridge.service.identity import AuthError, Identity
from bridge.service.pages import STATIC_FILES, duration, environment
from bridge.service.session import SessionStore, Signed


def test_a_ticket_opens_one_session_once_and_only_in_time() -> None:
    store = SessionStore(session_ttl_s=100, ticket_ttl_s=10)
    ticket, expires = store.issue_ticket(1501, 1501, now=1000)
    assert expires == 1010
    session_id, session = store.redeem(ticket, now=1005)
    assert (session.uid, session.gid, session.expires) == (1501, 1501, 1105) and len(session.csrf) >= 40
    with pytest.raises(AuthError, match="used already"):
        store.redeem(ticket, now=1006)
    late, _ = store.issue_ticket(1502, 1502, now=1000)
    with pytest.raises(AuthError, match="expired"):
        store.redeem(late, now=1010)
    with pytest.raises(AuthError, match="used already"):  # an expired ticket is used up too
        store.redeem(late, now=1000)
    assert store.get(session_id, now=1104) is session
    assert store.get(session_id, now=1105) is None  # expired, and forgotten
    assert store.get(session_id, now=1000) is None


def test_sign_out_ends_the_session_and_ids_are_not_guessable() -> None:
    store = SessionStore(session_ttl_s=100, ticket_ttl_s=10)
    first, _ = store.open_session(1501, 1501, now=0)
    second, other = store.open_session(1501, 1501, now=0)
    assert first != second and len(first) >= 40
    store.close(first)
    assert store.get(first, now=1) is None and store.get(second, now=1) is other


def test_durations_read_as_clock_times() -> None:
    assert [duration(v) for v in (None, 0, 59, 3661, 90061)] == ["-", "00:00:00", "00:00:59", "01:01:01", "1d 01:01:01"]


def test_every_template_escapes_user_text() -> None:
    evil = "<script>alert(1)</script>"
    who = Signed(who=Identity(uid=1501, gid=1501, user=evil, groups=(1501,)), csrf="c", session_id="s")
    job = {"job_id": "7", "name": evil, "user": evil, "state": "RUNNING", "partition": evil, "node": evil,
           "gpus": {"count": 1, "type": evil, "indices": [0]}, "pod": {"name": evil, "phase": evil},
           "timeline": [{"event": evil, "time": None, "after_s": None}], "bridge": {"reason": evil},
           "progress": {"percent": 10.0, "source": evil, "eta_s": 5}, "reason_text": evil, "exit_code": None,
           "elapsed_s": 5, "time_limit_s": 60, "cpus": 1, "memory_mib": 1024, "queue_position": None}
    row = {"job_id": "7", "name": evil, "user": evil, "state": evil, "elapsed_s": 5, "node": evil, "submit": None}
    contexts = {
        "jobs.html": {"signed": who, "rows": [row], "progress": {}, "total": 1, "offset": 0, "page_size": 50, "admin": True},
        "job.html": {"signed": who, "job": job, "results": {"ready": False, "files": [{"path": evil, "size": 1}]},
                     "ended": False, "final": False, "note": None},
        "submit.html": {"signed": who, "problems": [{"line": 1, "code": evil, "message": evil}], "message": evil,
                        "script": evil, "name": evil},
        "nodes.html": {"signed": who, "nodes": [], "gpu_types": {evil: {"total": 1, "free": 1, "used": 0}}},
        "error.html": {"signed": who, "status": 404, "detail": evil},
        "login.html": {"signed": None, "message": evil},
    }
    for name, context in contexts.items():
        html = environment().get_template(name).render(**context)
        assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html, name


def test_the_pages_and_their_assets_are_package_data() -> None:
    root = resources.files("bridge").joinpath("data", "dashboard")
    for name in STATIC_FILES:
        assert root.joinpath("static", name).is_file(), name
    for name in ("base.html", "jobs.html", "jobs_table.html", "job.html", "job_panel.html", "nodes.html", "submit.html",
                 "login.html", "error.html"):
        assert root.joinpath("templates", name).is_file(), name
