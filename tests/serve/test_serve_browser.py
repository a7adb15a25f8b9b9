"""The web page in a real browser: Debian's headless Chromium, driven by Selenium.

Signs in with a wrong token link and then the right one, loads the example config, submits the
toy config through the form, watches the progress advance and the report's ROC plot and metrics
appear, saves a screenshot of the run view, checks the pages in a 400 px window, drops the
connection under a run page's event stream, and stops the service with a page open. In CI the
browser must be there (``make system-deps`` installs it): the test fails rather than skips.
"""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_runs import append_history, shard, write_run
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
    wait = WebDriverWait(browser, 60)
    browser.get(f"{service.url}/#token=not-the-token")
    wait.until(lambda b: "wrong token" in b.find_element(By.ID, "error").text)
    browser.get(f"{service.url}/#token={service.token}")  # pasted into the same tab
    WebDriverWait(browser, 15).until(seen.presence_of_element_located((By.ID, "submit-form")))
    assert service.token not in browser.current_url  # swapped for a cookie, out of the address

    config = browser.find_element(By.ID, "config-yaml")
    assert config.get_attribute("value") == ""
    browser.find_element(By.ID, "example-button").click()
    wait.until(lambda b: config.get_attribute("value"))
    assert config.get_attribute("value") == EXAMPLE.read_text()

    browser.find_element(By.ID, "run-name").send_keys("browser-1")
    config.clear()
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
    plots = browser.find_element(By.ID, "plots")
    assert roc.size["width"] > 0.9 * plots.size["width"]  # the ROC on a row of its own

    metrics = json.loads((service.root / "browser-1" / "metrics.json").read_text())
    table = wait.until(metric_table)
    assert table["AUC"] == f"{metrics['auc']:.4f}"
    assert table["accuracy"] == f"{metrics['accuracy']:.4f}"
    assert table["loss"] == f"{metrics['loss']:.4f}"
    best, last = metrics["best_epoch"], metrics["epochs"] - 1
    assert table["best epoch"].startswith(f"{best} (of epochs 0\u2013{last})")

    shot = tmp_path / "serve.png"  # the whole page, as docs/img/serve.png shows it
    wait.until(lambda b: b.execute_script(
        "return [...document.images].every((image) => image.complete && image.naturalWidth)"
    ))  # fmt: skip
    page = browser.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    shot.write_bytes(base64.b64decode(page["data"]))
    assert shot.read_bytes()[:4] == b"\x89PNG"

    browser.set_window_size(400, 900)
    for page in (f"{service.url}/runs/browser-1", f"{service.url}/"):
        browser.get(page)
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#metrics tbody tr, #runs a"))
        assert overflow(browser) == 0, f"{page} is wider than a 400 px window"
        assert browser.save_screenshot(str(tmp_path / f"narrow-{len(page)}.png"))
    browser.set_window_size(1280, 1400)

    check_a_reconnected_page_draws_no_point_twice(browser, service)

    stopped = write_run(service.root, "stopped-1")  # cancelled: the leases say interrupted
    (stopped / "state.json").write_text(json.dumps({"leases": {"stopped": "interrupted"}}))
    lost = write_run(service.root, "lost-1")  # a driver.json whose driver is gone
    driver = {"pid": 1, "host": socket.gethostname(), "command": []}
    (lost / "driver.json").write_text(json.dumps(driver))
    browser.get(f"{service.url}/")  # a tab open on the runs page, its event stream open
    wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#runs tr[data-run]")) == 4)
    badge = {phase: badge_colour(browser, phase) for phase in ("stopped", "lost", "prepared")}
    assert badge["stopped"] == badge["prepared"]  # neutral: stopped on purpose
    red, green, blue = badge["lost"]
    assert min(red - green, red - blue) > 10  # red: something went wrong
    assert service.process is not None
    started = time.monotonic()
    service.process.send_signal(signal.SIGTERM)
    service.process.wait(timeout=10)
    assert time.monotonic() - started < 5, "the service took over 5 s to stop beside a page"


EXAMPLE = Path(__file__).parents[2] / "config" / "config.yaml"


def metric_table(browser: Any) -> dict[str, str]:
    """The run page's metrics table, label to value (empty until it is filled)."""
    rows: list[list[str]] = browser.execute_script(
        "return [...document.querySelectorAll('#metrics tbody tr')]"
        ".map((row) => [...row.cells].map((cell) => cell.textContent));"
    )
    return dict(rows)


def badge_colour(browser: Any, phase: str) -> tuple[int, ...]:
    """The background of the runs table's badge for ``phase``, as (red, green, blue)."""
    colour: str = browser.execute_script(
        f"return getComputedStyle(document.querySelector('#runs .phase.{phase}')).backgroundColor"
    )
    return tuple(int(part) for part in colour[colour.index("(") + 1 : -1].split(",")[:3])


def overflow(browser: Any) -> int:
    """By how many pixels the page is wider than the window (0: no horizontal scrolling)."""
    width: int = browser.execute_script(
        "const root = document.documentElement; return root.scrollWidth - root.clientWidth;"
    )
    return width


def loss_points(browser: Any) -> int:
    """The points of the training-loss curve on the run page."""
    points: str = browser.execute_script(
        "const line = document.querySelector('#loss-curve polyline.train');"
        "return line ? line.getAttribute('points') : '';"
    )
    return len(points.split())


def check_a_reconnected_page_draws_no_point_twice(browser: Any, service: Any) -> None:
    """A run page behind a tunnel that drops: its event stream reconnects (with Last-Event-ID)
    and the curve gets the new points, each once."""
    from selenium.webdriver.support.ui import WebDriverWait

    run = write_run(service.root, "followed")
    append_history(run, *(shard(step) for step in range(3)))
    port = int(service.url.rsplit(":", 1)[1])
    with Tunnel(port) as tunnel:
        browser.get(f"http://127.0.0.1:{tunnel.port}/runs/followed")  # the cookie is per host
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda b: loss_points(b) == 3)
        tunnel.cut()
        append_history(run, shard(3), shard(4))
        wait.until(lambda b: loss_points(b) >= 5)
        time.sleep(1.5)  # a poll or more later: still each point once
        assert loss_points(browser) == 5
        assert b"last-event-id:" in tunnel.sent.lower()  # it reconnected, resuming


class Tunnel:
    """A TCP relay to 127.0.0.1:``port``, as an ssh tunnel is, that can drop every connection."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.sent = bytearray()  # everything the browser sent through it
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closing = False
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> Tunnel:
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing = True
        self._threads[0].join(timeout=30)  # no connection is accepted after this ...
        self.listener.close()
        self.cut()  # ... so every one is closed here, a late one included
        for thread in self._threads[1:]:
            thread.join(timeout=30)

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._open += [client, upstream]
            for source, target in ((client, upstream), (upstream, client)):
                pump = (source, target, source is client)
                thread = threading.Thread(target=self._pump, args=pump, daemon=True)
                thread.start()
                self._threads.append(thread)

    def _pump(self, source: socket.socket, target: socket.socket, from_browser: bool) -> None:
        try:
            while data := source.recv(65536):
                if from_browser:
                    self.sent += data
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        """Drop every open connection, as a tunnel that breaks."""
        with self._lock:
            ends, self._open = self._open, []
        for end in ends:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        for end in ends:
            end.close()
