"""The chat demo (ws4web.demo) driven end to end in a real headless Chromium, on every server stack.

Each stack's app (``python -m ws4web.demo.<stack>_app``) runs as a subprocess on 127.0.0.1 on a
free port. Two browser pages join under one name (the server makes it unique, each page marks
itself by its id), talk, and see each other come and go; the server restarts and the page says why
in words, counts down, reconnects and joins again; a flood from the page is closed (1008), told in
words, and the page comes back. Needs Debian's chromium and chromium-driver plus Selenium (see
tests/browser_setup.md); skipped without them.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
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

pytestmark = pytest.mark.timeout(120)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STACKS = ["stdlib", "cherrypy", "gevent", "asgi"]

# Every wait on the browser or the app is bounded by this (seconds).
WAIT = 15.0
URL_LINE = re.compile(r"(https?://\S+/)")


# -- the app ----------------------------------------------------------------------------


class App:
    """A chat app subprocess; ``url`` is the page's address, read from what the app prints."""

    def __init__(self, stack: str, port: int = 0) -> None:
        self.stack = stack
        self.lines: queue.Queue[str | None] = queue.Queue()
        self._url: str | None = None
        # Closed in stop(): the file outlives this method, a with-block cannot hold it.
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"ws4web.demo.{stack}_app", "--host", "127.0.0.1", "--port", str(port)],
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
        if self._url is not None:
            return self._url
        while True:
            try:
                line = self.lines.get(timeout=WAIT)
            except queue.Empty:
                raise AssertionError(f"{self.stack} app printed no URL within {WAIT} s: {self.errors()}") from None
            if line is None:
                raise AssertionError(f"{self.stack} app exited ({self.proc.poll()}) before its URL: {self.errors()}")
            match = URL_LINE.search(line)
            if match:
                self._url = match.group(1)
                return self._url

    def port(self) -> int:
        return int(self.url().rsplit(":", 1)[1].rstrip("/"))

    def errors(self) -> str:
        self.stderr.seek(0)
        return self.stderr.read().decode("utf-8", "replace")[-2000:]

    def stop(self) -> None:
        if self.stderr.closed:
            return
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


def free_port() -> int:
    """A port nothing listens on. Chosen here, not with --port 0, because the test restarts the
    app on it: cheroot sets SO_REUSEADDR only on a port it is given, and without it the old
    connections' TIME_WAIT would keep the port from the new process."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(params=STACKS)
def app(request: pytest.FixtureRequest) -> Iterator[App]:
    running = App(request.param, free_port())
    try:
        yield running
    finally:
        running.stop()


# -- the browsers -----------------------------------------------------------------------


def chromium_options(profile: str) -> Any:
    """Headless Debian Chromium with a fresh profile (also used by tests/chat_screenshot.py)."""
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
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=chromium_options(str(profile)))
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


def log_entries(driver: webdriver.Chrome) -> list[tuple[str, str]]:
    """(text, class) of each line of the page's log, read in one script (the page may be adding one)."""
    entries = driver.execute_script(
        "return [...document.querySelectorAll('#log > div')].map((line) => [line.textContent, line.className])"
    )
    return [(str(text), str(cls)) for text, cls in entries]


def log_lines(driver: webdriver.Chrome) -> list[str]:
    return [text for text, _ in log_entries(driver)]


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


def me(driver: webdriver.Chrome) -> str:
    """The name the page marks as its own in the list of who is online."""
    marked = driver.execute_script("return [...document.querySelectorAll('#online .me')].map((n) => n.textContent)")
    return str(marked[0]) if len(marked) == 1 else f"{len(marked)} names marked"


def wait_line(driver: webdriver.Chrome, line: str, what: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: line in log_lines(d))
    except Exception as exc:
        raise AssertionError(f"{what}: no line {line!r} in {log_lines(driver)}") from exc


def wait_status(driver: webdriver.Chrome, start: str, what: str) -> None:
    try:
        WebDriverWait(driver, WAIT).until(lambda d: text_of(d, "status").startswith(start))
    except Exception as exc:
        raise AssertionError(f"{what}: #status is {text_of(driver, 'status')!r}") from exc


def test_two_pages_chat_come_and_go_and_come_back(app: App, browser: Callable[[], webdriver.Chrome]) -> None:
    url = app.url()
    assert url.startswith("http://127.0.0.1:")
    ann, twin = browser(), browser()

    # Ann's chat lives in a second tab, so that closing it really closes the page
    # (and its WebSocket) while her browser session stays up.
    ann_blank = ann.current_window_handle
    ann.switch_to.new_window("tab")
    open_chat(ann, url)
    open_chat(twin, url)

    join(ann, "ann")
    wait_line(ann, "you joined as ann", "ann's welcome")
    wait_text(ann, "online", "ann", "ann joined alone")
    # A second "ann": the server makes the name unique; each page marks itself by its id.
    join(twin, "Ann")
    wait_line(twin, "you joined as Ann (2)", "the second ann's welcome")
    wait_line(ann, "Ann (2) joined", "ann hears the second ann arrive")
    for page in (ann, twin):
        wait_text(page, "online", "ann, Ann (2)", "both see who is online")
    assert (me(ann), me(twin)) == ("ann", "Ann (2)")

    say(ann, "hello from ann")
    wait_line(twin, "ann: hello from ann", "ann's line reaches the other page")
    say(twin, "hello from the other")
    for page in (ann, twin):
        wait_line(page, "Ann (2): hello from the other", "the lines reach both")
    assert log_entries(ann) == [
        ("you joined as ann", "sys"),
        ("Ann (2) joined", "sys"),
        ("ann: hello from ann", "me"),
        ("Ann (2): hello from the other", ""),
    ]
    assert [text for text, cls in log_entries(twin) if cls == "me"] == ["Ann (2): hello from the other"]

    # Ann leaves: her tab closes, the browser closes its WebSocket, the room tells the other page.
    ann.close()
    ann.switch_to.window(ann_blank)
    wait_line(twin, "ann left", "ann's tab closed")
    wait_text(twin, "online", "Ann (2)", "ann is gone from the list")
    assert text_of(twin, "status") == "connected", "one page leaving must not disturb another"

    # The server restarts: the page says so in words, forgets who was online, counts down,
    # comes back by itself and joins again under the name it asked for.
    port = app.port()
    app.stop()
    wait_line(twin, "disconnected: the server is restarting", "a readable close reason (1001)")
    wait_status(twin, "the server is restarting — reconnecting in ", "the countdown")
    assert text_of(twin, "online") == "\u2013", "nobody is known to be online while disconnected"
    assert not twin.find_element(By.ID, "text").is_enabled()
    restarted = App(app.stack, port)
    try:
        restarted.url()
        wait_text(twin, "status", "connected", "the page reconnects")
        wait_line(twin, "you joined as Ann", "the page joins again")
        wait_text(twin, "online", "Ann", "back in the room")
        assert me(twin) == "Ann"

        # A flood from the page's socket: closed with 1008, told in words, back again.
        twin.execute_script(
            "for (let i = 0; i < 40; i++) window.chatSocket.send(JSON.stringify({type: 'say', text: 'spam ' + i}))"
        )
        wait_line(twin, "disconnected: you were sending too fast", "a readable close reason (1008)")
        WebDriverWait(twin, WAIT).until(lambda d: log_lines(d).count("you joined as Ann") == 2)
        wait_text(twin, "status", "connected", "the page reconnects after the flood")
        assert restarted.proc.poll() is None, f"the {app.stack} app died: {restarted.errors()}"
    finally:
        restarted.stop()
