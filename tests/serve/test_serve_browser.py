"""The web page in a real browser: Debian's headless Chromium, driven by Selenium.

Opens the page with the token link, submits the toy config through the form, watches the progress
advance and the report's ROC plot appear, and saves a screenshot of the run view. In CI the
browser must be there (``make system-deps`` installs it): the test fails rather than skips.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import toy_yaml

from tests.conftest import in_ci

pytestmark = pytest.mark.slow

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture
def browser() -> Iterator[Any]:
    if not (Path(CHROMIUM).exists() and shutil.which(DRIVER)):
        reason = f"no {CHROMIUM} or {DRIVER}: make system-deps installs Debian's chromium"
        if in_ci():
            pytest.fail(f"CI must run the browser test, but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,1400", "--disable-gpu"):  # fmt: skip
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(DRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def test_a_config_submitted_through_the_page_trains_and_shows_its_roc(
    browser: Any, start_service: Any, toy_dir: Path, serve_dataset: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as seen
    from selenium.webdriver.support.ui import WebDriverWait

    service = start_service()
    browser.get(f"{service.url}/#token={service.token}")
    wait = WebDriverWait(browser, 60)
    wait.until(seen.presence_of_element_located((By.ID, "submit-form")))
    assert service.token not in browser.current_url  # swapped for a cookie, out of the address

    browser.find_element(By.ID, "run-name").send_keys("browser-1")
    config = browser.find_element(By.ID, "config-yaml")
    config.send_keys("train: [not, a, mapping]")
    browser.find_element(By.ID, "check-button").click()
    wait.until(lambda b: b.find_element(By.ID, "config-errors").text.strip())
    assert "train" in browser.find_element(By.ID, "config-errors").text

    browser.execute_script(  # typing 60 lines key by key adds nothing the value does not test
        "arguments[0].value = arguments[1]", config, toy_yaml(toy_dir, serve_dataset, epochs=3)
    )
    browser.find_element(By.ID, "submit-button").click()
    wait.until(seen.url_contains("/runs/browser-1"))

    slow = WebDriverWait(browser, 400, poll_frequency=0.5)
    slow.until(lambda b: float(b.find_element(By.ID, "progress-bar").size["width"]) > 0)
    assert "shards" in browser.find_element(By.ID, "progress-text").text
    roc = slow.until(lambda b: b.find_elements(By.ID, "plot-roc"))[0]
    slow.until(lambda b: b.execute_script("return arguments[0].naturalWidth", roc) > 0)
    assert browser.find_element(By.ID, "phase").text == "finished"
    assert browser.find_element(By.ID, "model-link").is_displayed()

    shot = tmp_path / "serve.png"
    assert browser.save_screenshot(str(shot))
    assert shot.read_bytes()[:4] == b"\x89PNG"
