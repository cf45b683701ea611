"""The chat demo (ws4web.demo) driven end to end in a real headless Chromium, on every server stack.

Each stack's app (``python -m ws4web.demo.<stack>_app``) runs as a subprocess on 127.0.0.1 with ``--port 0``; two
browser pages join, one talks, the other hears it and sees who is online; then
the talker closes its page and the room forgets it. Needs Debian's chromium and
chromium-driver plus Selenium (see tests/browser_setup.md); skipped without them.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import IO, Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

if not os.path.isfile(CHROMIUM) or not os.path.isfile(CHROMEDRIVER):
    pytest.skip(
        f"needs {CHROMIUM} and {CHROMEDRIVER} (apt-get install -y chromium chromium-driver)", allow_module_level=True
    )
pytest.importorskip("selenium", reason="needs selenium (pip install selenium)")

# After the skips: without the browser or Selenium there is nothing to import.
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

pytestmark = pytest.mark.timeout(60)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = ["stdlib", "cherrypy", "gevent", "asgi"]

# Every wait on the browser or the app is bounded by this (seconds).
WAIT = 15.0
URL_LINE = re.compile(r"(https?://\S+/)")


# -- the app ----------------------------------------------------------------------------


class App:
    """A chat app subprocess; ``url`` is the page's address, read from what the app prints."""

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.lines: queue.Queue[str | None] = queue.Queue()
        # Closed in stop(): the file outlives this method, a with-block cannot hold it.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"ws4web.demo.{stack}_app", "--host", "127.0.0.1", "--port", "0"],
            cwd=ROOT,  # this checkout's ws4web
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
        )
        # A thread drains stdout to EOF (the app's exit), so reading the URL can time out
        # and a chatty app can never block on a full pipe.
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._drain, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _drain(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def url(self) -> str:
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"{self.stack} app printed no URL within {WAIT} s: {self.errors()}") from None
            if line is None:
                raise AssertionError(f"{self.stack} app exited ({self.proc.poll()}) before its URL: {self.errors()}")
            match = URL_LINE.search(line)
            if match:
                return match.group(1)

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-2000:]

    def stop(self) -> None:
        # Ctrl-C is what every app documents as its way out; kill only if it is ignored.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        self.stderr.close()


@pytest.fixture(params=STACKS)
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    running = App(request.param)
    try:
        yield running
    finally:
        running.stop()


# -- the browsers -----------------------------------------------------------------------


def _options(profile: str) -> Any:
    options = webdriver.ChromeOptions()
    # Debian's binary, never one downloaded by Selenium Manager.
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",  # the app is on loopback; an inherited proxy must not get in the way
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    return options


@pytest.fixture
def browser(tmp_path: Any) -> Iterator[Callable[[], webdriver.Chrome]]:
    """A factory of headless Chromium sessions, each with a fresh profile, all quit at the end."""
    drivers: list[webdriver.Chrome] = []

    def start() -> webdriver.Chrome:
        profile = tmp_path / f"profile-{len(drivers)}"
        profile.mkdir()
        # A Service with an explicit driver path makes Selenium skip Selenium Manager.
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=_options(str(profile)))
        drivers.append(driver)
        driver.set_page_load_timeout(WAIT)
        driver.set_script_timeout(WAIT)
        return driver

    try:
        yield start
    finally:
        for driver in drivers:
            try:
                driver.quit()
            except Exception:  # one broken session must not keep the others alive
                pass


# -- the page ---------------------------------------------------------------------------


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def wait_text(driver: webdriver.Chrome, element_id: str, expected: str, what: str) -> None:
    """Wait until the element's text is exactly ``expected``; fail saying what it was."""
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text_of(d, element_id) == expected)
    except Exception as exc:
        raise AssertionError(f"{what}: #{element_id} is {text_of(driver, element_id)!r}, not {expected!r}") from exc


def log_lines(driver: webdriver.Chrome) -> list[str]:
    return [str(line.text) for line in driver.find_elements(By.CSS_SELECTOR, "#log > div")]


def open_chat(driver: webdriver.Chrome, url: str) -> None:
    driver.get(url)
    assert driver.title == "ws4web chat"
    # The page opens its WebSocket on load; "connected" is set by ws.onopen only.
    wait_text(driver, "status", "connected", "the page's WebSocket did not open")
    # Issue: the browser must have negotiated permessage-deflate (the server's or,
    # under ASGI, uvicorn's answer); ws.extensions is the response header it received.
    extensions = driver.execute_script("return window.chatSocket.extensions")
    assert str(extensions).startswith("permessage-deflate"), f"negotiated extensions: {extensions!r}"


def join(driver: webdriver.Chrome, name: str) -> None:
    driver.find_element(By.ID, "name").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "#join button").click()


def say(driver: webdriver.Chrome, text: str) -> None:
    field = driver.find_element(By.ID, "text")
    assert field.is_enabled(), "the message field stays disabled after joining"
    field.send_keys(text)
    driver.find_element(By.ID, "send").click()


# -- the test ---------------------------------------------------------------------------


def test_two_pages_chat_and_see_each_other_come_and_go(app: App, browser: Callable[[], webdriver.Chrome]) -> None:
    url = app.url()
    assert url.startswith("http://127.0.0.1:") and not url.startswith("http://127.0.0.1:0/")
    ann, bob = browser(), browser()

    # Ann's chat lives in a second tab, so that closing it really closes the page
    # (and its WebSocket) while her browser session stays up.
    ann_blank = ann.current_window_handle
    ann.switch_to.new_window("tab")
    open_chat(ann, url)
    open_chat(bob, url)

    join(ann, "ann")
    wait_text(ann, "online", "ann", "ann joined alone")
    join(bob, "bob")
    wait_text(bob, "online", "ann, bob", "bob sees who is online")
    wait_text(ann, "online", "ann, bob", "ann sees bob arrive")

    say(ann, "hello from ann")
    WebDriverWait(bob, WAIT).until(lambda d: "ann: hello from ann" in log_lines(d))
    WebDriverWait(ann, WAIT).until(lambda d: "ann: hello from ann" in log_lines(d))
    # Bob's page must not show errors (say, "join first") or anything but ann's line.
    assert log_lines(bob) == ["ann: hello from ann"]
    assert ann.find_element(By.CSS_SELECTOR, "#log > div").get_attribute("class") == "me"

    # Ann leaves: her tab closes, the browser closes its WebSocket, the room tells bob.
    ann.close()
    ann.switch_to.window(ann_blank)
    wait_text(bob, "online", "bob", "ann left")
    assert text_of(bob, "status") == "connected", "bob's own connection must survive ann leaving"
    assert app.proc.poll() is None, f"the {app.stack} app died: {app.errors()}"
