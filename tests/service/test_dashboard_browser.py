"""Issue 16's dashboard, clicked through in a real headless chromium as the lab's users would:
alice signs in with `skbridge dashboard`, submits a job through the form, finds it in her list,
watches its log lines arrive and its progress move, downloads a result; bob cannot see it;
bob uploads a job file and cancels the job from its page. Screenshots are kept as test artifacts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec

from tests.conftest import Sandbox, wait_for
from tests.jobs.conftest import Jobs, job_script
from tests.service.browser import browser, click, screenshot, sign_in, text_of, texts_of, wait  # noqa: F401
from tests.service.conftest import Service, start_service, stop_service


@pytest.fixture
def dashboard(sandbox: Sandbox, users: object, tmp_path: Path) -> Iterator[Service]:
    tmp_path.chmod(0o755)
    running = start_service(sandbox, tmp_path)
    yield running
    stop_service(running)


def submit_through_form(driver: WebDriver, url: str, script: str, name: str) -> None:
    driver.get(f"{url}/dashboard/submit")
    wait(driver).until(ec.presence_of_element_located((By.ID, "script")))
    driver.find_element(By.ID, "name").send_keys(name)
    # The textarea takes the file as pasted text (send_keys would type it key by key).
    driver.execute_script("document.getElementById('script').value = arguments[0];", script)
    driver.find_element(By.ID, "submit").click()


def progress_value(driver: WebDriver) -> float | None:
    # One script call reads the bar: the panel around it is replaced every two seconds.
    value = driver.execute_script("const bar = document.querySelector('#progress progress');"
                                  "return bar ? Number(bar.value) : null;")
    return None if value is None else float(value)


def test_alice_submits_watches_and_downloads_bob_sees_nothing(dashboard: Service, jobs: Jobs, browser: WebDriver,  # noqa: F811
                                                              tmp_path: Path) -> None:
    url = dashboard.url
    jobs.home("skbalice")
    tag = uuid.uuid4().hex[:8]
    body = "\n".join([
        f"mkdir -p /workspace/out-{tag}",
        "for i in $(seq 1 12); do echo \"epoch $i/12 loss=0.$i\"; sleep 1.5; done",
        f"python3 -c 'print(sum(range(10)))' > /workspace/out-{tag}/result.txt",
        "echo all done",
    ])
    sign_in(browser, url, "skbalice")
    screenshot(browser, "dashboard-jobs-before")

    # Submit through the form: the service answers with the job's page.
    submit_through_form(browser, url, job_script(body=body, results=f"/workspace/out-{tag}"), f"dash-{tag}.sh")
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "note"), "Job submitted."))
    job_id = browser.find_element(By.ID, "job-id").text
    jobs.submitted.append(job_id)
    assert job_id.isdigit(), job_id
    assert browser.find_element(By.ID, "job-name").text == f"dash-{tag}.sh"

    # The list shows it; its link opens the job's page.
    browser.get(f"{url}/dashboard/")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, f"job-{job_id}"), f"dash-{tag}.sh"))
    click(browser, By.CSS_SELECTOR, f"#job-{job_id} a[href='/dashboard/jobs/{job_id}']")
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "job-id"), job_id))

    # Live: log lines arrive over the event stream while Slurm still runs the job, and the
    # progress bar (re-read from the job's output) moves forward.
    wait(browser, 120).until(ec.text_to_be_present_in_element((By.ID, "log"), "epoch 2/12"))
    # While Slurm runs the job. (Once, under CI load, sacct said PENDING here: the job had been
    # requeued after its container started, the prolog's known window; the live log is what
    # this test proves, so it waits for the run that counts.)
    wait_for(lambda: jobs.sacct(job_id)[0] == "RUNNING", timeout_s=180, what="the job running while its lines arrive")
    wait(browser, 30).until(lambda d: (progress_value(d) or 0) > 0)
    first = progress_value(browser)
    assert first is not None and first < 100
    wait(browser, 30).until(lambda d: (progress_value(d) or 0) > first)
    assert "ETA" in text_of(browser, By.ID, "progress")
    assert "RUNNING" in text_of(browser, By.ID, "job-state")
    screenshot(browser, "dashboard-job-running")
    browser.get(f"{url}/dashboard/")
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, f"#job-{job_id} progress")))
    screenshot(browser, "dashboard-jobs")
    browser.get(f"{url}/dashboard/jobs/{job_id}")

    # The end: every line, the final state, results with download links.
    wait(browser, 120).until(ec.text_to_be_present_in_element((By.ID, "log-state"), "ended (COMPLETED)"))
    log_text = browser.find_element(By.ID, "log").text
    assert [line.split()[1] for line in log_text.splitlines() if line.startswith("epoch ")] == \
        [f"{i}/12" for i in range(1, 13)]
    assert "all done" in log_text
    wait(browser, 90).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#results a[href$='/results/results/result.txt']")))
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "job-state"), "COMPLETED"))
    assert texts_of(browser, By.CSS_SELECTOR, "#timeline td:first-child")[:2] == \
        ["submitted", "allocated"]
    screenshot(browser, "dashboard-job-done")
    click(browser, By.CSS_SELECTOR, "#results a[href$='/results/results/result.txt']")
    downloaded = tmp_path / "downloads" / "result.txt"
    wait(browser, 30).until(lambda _d: downloaded.is_file() and downloaded.read_bytes() == b"45\n")

    # The nodes page: GPUs by type, free/total.
    browser.get(f"{url}/dashboard/nodes")
    gpu_table = wait(browser).until(ec.presence_of_element_located((By.ID, "gpu-types")))
    assert "a100" in gpu_table.text and "/ 4" in gpu_table.text, gpu_table.text
    screenshot(browser, "dashboard-nodes")

    # Bob: the job is not in his list, and its page is the same 404 as no job at all.
    sign_in(browser, url, "skbbob")
    assert not browser.find_elements(By.ID, f"job-{job_id}")
    for path in (f"/dashboard/jobs/{job_id}", "/dashboard/jobs/999999999"):
        browser.get(url + path)
        wait(browser).until(ec.text_to_be_present_in_element((By.TAG_NAME, "h1"), "404"))
        assert f"dash-{tag}" not in browser.page_source
    browser.get(f"{url}/dashboard/jobs/{job_id}/results/results/result.txt")
    assert "45" not in browser.find_element(By.TAG_NAME, "body").text


def test_bob_cancels_from_the_ui_and_bad_files_show_the_reasons(dashboard: Service, jobs: Jobs,
                                                                browser: WebDriver, tmp_path: Path) -> None:  # noqa: F811
    url = dashboard.url
    jobs.home("skbbob")
    sign_in(browser, url, "skbbob")

    # A file the validator refuses: the form comes back with the reasons, nothing is submitted.
    submit_through_form(browser, url, "#!/bin/bash\n#SBATCH --nodes=9\necho no image\n", "bad.sh")
    problems = wait(browser).until(ec.presence_of_element_located((By.ID, "problems")))
    assert "not submitted" in problems.text and problems.find_elements(By.TAG_NAME, "li")
    screenshot(browser, "dashboard-submit-refused")

    # This one is uploaded as a file: the job takes the file's name.
    upload = tmp_path / "long-upload.sh"
    upload.write_text(job_script(env=("SANDBOX_RUN_DURATION=300",)), encoding="utf-8")
    browser.get(f"{url}/dashboard/submit")
    wait(browser).until(ec.presence_of_element_located((By.ID, "upload"))).send_keys(str(upload))
    browser.find_element(By.ID, "submit").click()
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "note"), "Job submitted."))
    job_id = browser.find_element(By.ID, "job-id").text
    assert browser.find_element(By.ID, "job-name").text == "long-upload.sh"
    jobs.submitted.append(job_id)
    jobs.wait_state(job_id, {"RUNNING"}, timeout_s=90)
    wait(browser, 30).until(ec.text_to_be_present_in_element((By.ID, "job-state"), "RUNNING"))
    click(browser, By.ID, "cancel")
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "note"), "Cancel sent to Slurm."))
    assert jobs.wait_state(job_id, {"CANCELLED"}, timeout_s=60) == "CANCELLED"
    wait(browser, 60).until(ec.text_to_be_present_in_element((By.ID, "job-state"), "CANCELLED"))
    wait(browser, 30).until(lambda d: not d.find_elements(By.ID, "cancel"))
    screenshot(browser, "dashboard-job-cancelled")
