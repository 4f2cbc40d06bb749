"""A real headless browser for the dashboard tests: Debian's chromium driven by chromedriver
through selenium, and a signed-in session as a lab user would get one (`skbridge dashboard`).

Screenshots go to $SKBRIDGE_ARTIFACTS (default .pytest_artifacts/ in the checkout, git-ignored).
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.service.conftest import SKBRIDGE

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("SKBRIDGE_ARTIFACTS") or REPO / ".pytest_artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def sign_in_link(url: str, user: str) -> str:
    """What `skbridge dashboard` prints when `user` runs it (their own MUNGE credential)."""
    done = subprocess.run(["runuser", "-u", user, "--", str(SKBRIDGE), "dashboard", "--url", url],
                          capture_output=True, text=True, timeout=60, check=True)
    link = done.stdout.strip()
    assert re.fullmatch(re.escape(url) + r"/login\?ticket=[A-Za-z0-9_%-]{40,}", link), (done.stdout, done.stderr)
    return link


def wait(driver: WebDriver, timeout_s: float = 30) -> WebDriverWait[WebDriver]:
    # The pages re-read their changing parts every few seconds: an element found a moment ago
    # may have been replaced, so a stale one means "look again".
    return WebDriverWait(driver, timeout_s, poll_frequency=0.2, ignored_exceptions=(StaleElementReferenceException,))


def click(driver: WebDriver, by: str, value: str, timeout_s: float = 30) -> None:
    """Click the element, finding it again if the page replaced it in between."""
    wait(driver, timeout_s).until(lambda d: d.find_element(by, value).click() or True)


def text_of(driver: WebDriver, by: str, value: str, timeout_s: float = 30) -> str:
    """The element's visible text, read from one and the same element."""
    found: list[str] = []
    wait(driver, timeout_s).until(lambda d: found.append(d.find_element(by, value).text) or True)
    return found[-1]


def texts_of(driver: WebDriver, by: str, value: str, timeout_s: float = 30) -> list[str]:
    found: list[list[str]] = []
    wait(driver, timeout_s).until(lambda d: found.append([e.text for e in d.find_elements(by, value)]) or True)
    return found[-1]


def sign_in(driver: WebDriver, url: str, user: str) -> None:
    driver.delete_all_cookies()
    driver.get(sign_in_link(url, user))
    wait(driver).until(ec.text_to_be_present_in_element((By.ID, "whoami"), user))
    assert driver.current_url == f"{url}/dashboard/"


@contextmanager
def session_client(url: str, user: str) -> Iterator[httpx.Client]:
    """An HTTP client holding a dashboard session cookie of `user` (for checks below the browser)."""
    with httpx.Client(base_url=url, timeout=30) as client:
        answer = client.get(sign_in_link(url, user).removeprefix(url))
        assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/", answer.text
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


@pytest.fixture
def browser(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[WebDriver]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "apt-get install chromium chromium-driver (.ci/run does)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1000", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=ChromeService(executable_path=str(CHROMEDRIVER)), options=options)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    try:
        yield driver
    finally:
        try:  # where the test left the browser: the first thing to look at when it failed
            driver.save_screenshot(str(artifacts_dir() / f"last-{request.node.name}.png"))
            (artifacts_dir() / f"last-{request.node.name}.html").write_text(driver.page_source, encoding="utf-8")
        finally:
            driver.quit()


def screenshot(driver: WebDriver, name: str) -> Path:
    path = artifacts_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
