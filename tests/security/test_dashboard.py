"""Attacks on the dashboard (issue 16): markup in a job's name and output, forged forms, reused or
stale sign-in links, another user's session, and the docs asked for anonymously."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.conftest import Sandbox
from tests.jobs.conftest import Jobs, job_script
from tests.service.browser import browser, csrf_of, session_client, sign_in, sign_in_link, text_of, wait  # noqa: F401
from tests.service.conftest import Service, service, start_service, stop_service  # noqa: F401

NAME = "<script>window.xss=1</script>"
LINE = "<script>window.xss=2</script><img src=x onerror=\"window.xss=3\"><b>bold</b>"


def test_job_names_and_log_lines_are_shown_as_text_never_run(service: Service, jobs: Jobs,  # noqa: F811
                                                             browser: WebDriver) -> None:  # noqa: F811
    job_id = jobs.sbatch("skbalice", job_script(body=f"echo '{LINE}'"), f"--job-name={NAME}")
    assert jobs.wait_done(job_id) == ("COMPLETED", "0:0")
    with session_client(service.url, "skbalice") as alice:
        for path in ("/dashboard/", "/dashboard/?fragment=1", f"/dashboard/jobs/{job_id}", f"/dashboard/jobs/{job_id}/panel"):
            page = alice.get(path)
            assert page.status_code == 200, (path, page.text[:300])
            assert "<script>window.xss" not in page.text, path
            assert "&lt;script&gt;window.xss=1&lt;/script&gt;" in page.text or path.endswith("/panel"), path
            assert "script-src 'self'" in page.headers["content-security-policy"]
        # The log reaches the browser as event-stream text; the page's script inserts it as text.
        assert LINE in alice.get(f"/dashboard/jobs/{job_id}/logs/stream").text

    sign_in(browser, service.url, "skbalice")
    browser.get(f"{service.url}/dashboard/jobs/{job_id}")
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "log"), LINE))
    assert browser.find_element(By.ID, "job-name").text == NAME
    assert browser.execute_script("return window.xss") is None
    assert not browser.find_elements(By.CSS_SELECTOR, "#log *, img[src='x'], main b")
    browser.get(f"{service.url}/dashboard/")
    wait(browser).until(ec.presence_of_element_located((By.ID, f"job-{job_id}")))
    assert NAME in text_of(browser, By.ID, f"job-{job_id}")  # the list re-reads its rows every 5 s
    assert browser.execute_script("return window.xss") is None


def test_sign_in_links_work_once_and_only_the_session_opens_pages_and_docs(service: Service, jobs: Jobs) -> None:  # noqa: F811
    url = service.url
    with httpx.Client(base_url=url, timeout=30) as anonymous:
        for path in ("/docs", "/openapi.json", "/dashboard/jobs/1/panel", "/dashboard/jobs/1/logs/stream",
                     "/dashboard/jobs/1/results/pod.log"):
            assert anonymous.get(path).status_code == 401, path
        for path in ("/dashboard/", "/dashboard/nodes", "/dashboard/submit", "/dashboard/jobs/1"):
            answer = anonymous.get(path)
            assert (answer.status_code, answer.headers.get("location")) == (303, "/login"), path
        assert anonymous.post("/dashboard/ticket").status_code == 401
        assert anonymous.get("/login", params={"ticket": "forged"}).status_code == 401

        link = sign_in_link(url, "skbalice").removeprefix(url)
        # Followed from another site's page (login CSRF), the link signs nobody in.
        crossed = anonymous.get(link, headers={"Sec-Fetch-Site": "cross-site"})
        assert crossed.status_code == 403 and "set-cookie" not in crossed.headers
        first = anonymous.get(link, headers={"Sec-Fetch-Site": "none"})
        assert first.status_code == 303 and first.headers["location"] == "/dashboard/"
        cookie = first.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie, cookie
        assert anonymous.get("/dashboard/").status_code == 200  # the client now holds alice's cookie
        anonymous.cookies.clear()
        assert anonymous.get(link).status_code == 401  # used once: never again

        # A token from the API signs a browser in too (login page form), but only from this origin.
        token = service.token("skbalice")
        assert anonymous.post("/login", data={"token": token}, headers={"Origin": "http://evil.example"}).status_code == 403
        assert anonymous.post("/login", data={"token": "bad.token"}).status_code == 401
        assert anonymous.post("/login", data={"token": token}).status_code == 303
        assert anonymous.get("/openapi.json").json()["info"]["title"] == "slurm-k8s-bridge"
        assert anonymous.get("/docs").status_code == 200
        # The cookie authenticates the dashboard only: the JSON API keeps asking for MUNGE or a token.
        assert anonymous.get("/api/v1/whoami").status_code == 401
    with httpx.Client(base_url=url, timeout=30, headers={"Authorization": f"Bearer {service.token('skbbob')}"}) as api:
        assert api.get("/openapi.json").status_code == 200


def test_a_stale_sign_in_link_is_refused(sandbox: Sandbox, users: object, tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    short = start_service(sandbox, tmp_path, login_ticket_ttl_s="1")
    try:
        link = sign_in_link(short.url, "skbbob").removeprefix(short.url)
        time.sleep(1.5)  # past the ticket's lifetime
        answer = httpx.get(short.url + link, timeout=30)
        assert answer.status_code == 401 and "expired" in answer.text
    finally:
        stop_service(short)


def test_forms_need_the_sessions_csrf_token_and_other_users_get_404(service: Service, jobs: Jobs) -> None:  # noqa: F811
    job_id = jobs.sbatch("skbalice", job_script(env=("SANDBOX_RUN_DURATION=300",)))
    jobs.wait_state(job_id, {"RUNNING"}, timeout_s=90)
    url = service.url
    with session_client(url, "skbalice") as alice, session_client(url, "skbbob") as bob:
        csrf = csrf_of(alice.get(f"/dashboard/jobs/{job_id}").text)
        cancel = f"/dashboard/jobs/{job_id}/cancel"
        assert alice.post(cancel).status_code == 403
        assert alice.post(cancel, data={"csrf": "x" * 43}).status_code == 403
        assert alice.post(cancel, data={"csrf": csrf}, headers={"Origin": "http://evil.example"}).status_code == 403
        assert alice.post("/dashboard/submit", data={"csrf": "", "script": job_script()}).status_code == 403
        assert jobs.sacct(job_id)[0] == "RUNNING"

        # Bob: alice's job is no job, whatever he asks; his own CSRF token changes nothing.
        bob_csrf = csrf_of(bob.get("/dashboard/").text)
        for path in ("", "/panel", "/logs/stream", "/results/pod.log"):
            assert bob.get(f"/dashboard/jobs/{job_id}{path}").status_code == 404, path
        assert bob.post(cancel, data={"csrf": bob_csrf}).status_code == 404
        assert bob.post(cancel, data={"csrf": csrf}).status_code == 403  # alice's token is not his session's
        assert jobs.sacct(job_id)[0] == "RUNNING"

        done = alice.post(cancel, data={"csrf": csrf})
        assert done.status_code == 303 and done.headers["location"] == f"/dashboard/jobs/{job_id}?done=cancelled"
        assert jobs.wait_state(job_id, {"CANCELLED"}, timeout_s=60) == "CANCELLED"

        session_id = alice.cookies.get("skb_session")
        assert session_id and alice.post("/logout", data={"csrf": csrf}).status_code == 303
        alice.cookies.set("skb_session", session_id)  # the old cookie, kept: the service forgot it
        assert alice.get("/dashboard/").status_code == 303
