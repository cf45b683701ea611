"""ws4web installed as a user installs it: in a fresh virtualenv, not editable, run from another folder.

One virtualenv for the module gets ``pip install '<checkout>[asgi]'``; then the console
script answers ``--version``, ``ws4web serve`` serves the chat page and stops on Ctrl-C, and
the quick start's ``WebSocketASGIApp`` program (taken from docs/quickstart.md as written)
echoes under the uvicorn that ``[asgi]`` installed. A wheel built where the C compiler fails
(``CC=false``) is pure Python and still works. pip needs a package index; without one
these tests skip, saying so. Every server here listens on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import ws4web
from ws4web import TextMessage, connect

from .conftest import TIMEOUT

pytestmark = pytest.mark.timeout(300)

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "quickstart.md"
#: seconds for one pip command (installing ws4web[asgi] takes about 30 s with a warm cache)
PIP_TIMEOUT = 240.0
#: seconds for a server program to print its address or to accept connections
START_TIMEOUT = 30.0

# Generated or large: never part of what a build reads.
NOT_SOURCES = shutil.ignore_patterns(
    ".git", ".ci", ".tox", ".venv", "build", "dist", "_build", "reports", ".wstest", ".peers",
    "__pycache__", "*.so", "*.pyd", "*.egg-info", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis",
)  # fmt: skip


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without what would let the checkout or the test's own virtualenv leak in.

    Proxy variables stay, for pip; the clients here connect to 127.0.0.1 with ``proxy=False``.
    """
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PYTHONSAFEPATH"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(extra)
    return env


@dataclass
class Installed:
    """A virtualenv holding ws4web[asgi] installed from the checkout, and an empty folder to run in."""

    venv: Path
    elsewhere: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.venv / "bin" / name

    def run(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command in the empty folder, with neither the checkout nor our virtualenv in sight."""
        return subprocess.run(
            [str(a) for a in args],
            cwd=self.elsewhere,
            env=clean_env() if env is None else env,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
            check=False,
        )

    def pip(self, *args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """``pip ARGS`` in this virtualenv; skips the test when no package index answers."""
        done = self.run(self.python, "-m", "pip", *args, "--disable-pip-version-check", env=env)
        if done.returncode != 0:
            probe = self.run(self.python, "-m", "pip", "download", "--no-deps", "-d", self.elsewhere / "dl", "uvicorn")
            if probe.returncode != 0:
                pytest.skip(f"no package index answers pip here: {probe.stderr.strip().splitlines()[-1:]}")
            pytest.fail(f"pip {' '.join(map(str, args))} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done


@pytest.fixture(scope="module")
def installed() -> Iterator[Installed]:
    with tempfile.TemporaryDirectory(prefix="ws4web-packaging-") as tmp:
        where = Installed(Path(tmp) / "venv", Path(tmp) / "elsewhere")
        where.elsewhere.mkdir()
        made = where.run(sys.executable, "-m", "venv", where.venv)
        assert made.returncode == 0, made.stderr
        where.pip("install", "-q", f"{ROOT}[asgi]")
        yield where


# -- helpers -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            _, err = proc.communicate(timeout=TIMEOUT)
            raise AssertionError(f"the program exited with {proc.returncode} before listening: {err}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"nothing listens on {port} after {START_TIMEOUT} s"
            time.sleep(0.1)


def read_line(proc: subprocess.Popen[str], timeout: float = START_TIMEOUT) -> str:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"the program printed nothing in {timeout} s"
    return proc.stdout.readline()


def interrupt(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C, then what the program printed; it must end by itself."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=START_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=TIMEOUT)
        raise AssertionError("the program did not stop on Ctrl-C") from None


def quickstart_asgi_program() -> str:
    """The quick start's plain ``WebSocketASGIApp`` program on uvicorn, as the page shows it."""
    blocks = re.findall(r"^```python\n(.*?)^```", QUICKSTART.read_text(encoding="utf-8"), re.S | re.M)
    found = [b for b in blocks if "app = WebSocketASGIApp(Echo)" in b and "uvicorn.run(app" in b]
    assert len(found) == 1, "docs/quickstart.md should have one WebSocketASGIApp program run by uvicorn.run"
    program: str = found[0]
    return program


# -- the installed package ---------------------------------------------------------------


def test_installed_not_editable_with_its_demo_page(installed: Installed) -> None:
    code = "import ws4web, ws4web.demo; print(ws4web.__file__); print(len(ws4web.demo.page()))"
    done = installed.run(installed.python, "-c", code)
    assert done.returncode == 0, done.stderr
    location, size = done.stdout.split()
    assert Path(location).is_relative_to(installed.venv), f"ws4web imported from {location}, not the install"
    assert int(size) == len((ROOT / "ws4web" / "demo" / "index.html").read_bytes())


def test_console_script_version(installed: Installed) -> None:
    for command in ([installed.bin("ws4web")], [installed.python, "-m", "ws4web"]):
        done = installed.run(*command, "--version")
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"ws4web {ws4web.__version__}\n"


def test_serve_from_any_folder_then_ctrl_c(installed: Installed) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [installed.bin("ws4web"), "serve", "--port", str(port)],
        cwd=installed.elsewhere,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert f"ws4web chat on http://127.0.0.1:{port}/" in read_line(proc)
        page = http.client.HTTPConnection("127.0.0.1", port, timeout=TIMEOUT)
        try:
            page.request("GET", "/")
            response = page.getresponse()
            assert response.status == 200
            assert response.read() == (ROOT / "ws4web" / "demo" / "index.html").read_bytes()
        finally:
            page.close()
        with connect(f"ws://127.0.0.1:{port}/ws", timeout=TIMEOUT, close_timeout=2.0, proxy=False) as ws:
            ws.send(json.dumps({"type": "join", "name": "ann"}))
            welcome = json.loads(ws.recv(TIMEOUT).data)
            assert (welcome["type"], welcome["name"]) == ("welcome", "ann")
        _out, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, err
    assert "Traceback" not in err, err


def test_quickstart_asgi_program_echoes_under_the_installed_uvicorn(installed: Installed) -> None:
    port = free_port()
    program = quickstart_asgi_program()
    assert "port=9000" in program
    script = installed.elsewhere / "echo_asgi.py"
    script.write_text(program.replace("port=9000", f"port={port}"), encoding="utf-8")
    proc = subprocess.Popen(
        [installed.python, script.name],
        cwd=installed.elsewhere,
        env=clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, proc)
        with connect(f"ws://127.0.0.1:{port}/", timeout=TIMEOUT, close_timeout=2.0, proxy=False) as ws:
            ws.send("hello")
            assert ws.recv(TIMEOUT) == TextMessage("hello")
        _out, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=TIMEOUT)
    # uvicorn.run() re-raises the Ctrl-C it caught once it has shut down: that is the only error.
    errors = [line for line in err.splitlines() if re.match(r"\w+(\.\w+)*(Error|Exception|Interrupt)\b", line)]
    assert errors in ([], ["KeyboardInterrupt"]), err


# -- no C compiler -----------------------------------------------------------------------


def test_wheel_builds_without_a_compiler_and_runs_pure_python(installed: Installed) -> None:
    source = installed.elsewhere / "source"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES)
    wheels = installed.elsewhere / "wheels"
    # CC=false: every compiler call fails, as where no compiler is installed.
    done = installed.pip("wheel", "-v", "--no-deps", "-w", wheels, source, env=clean_env(CC="false"))
    log = done.stdout + done.stderr  # pip -v passes the build's output on to stderr
    assert re.search(r"ws4web\._speedups not built \(.*\); using pure Python", log), log[-3000:]
    (wheel,) = wheels.glob("ws4web-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "ws4web/demo/index.html" in names
    assert not [n for n in names if n.startswith("ws4web/_speedups.") and not n.endswith(".c")], names
    # A pure-Python wheel imports straight from its zip file.
    check = (
        "import os, ws4web, ws4web.demo, ws4web.frames as f\n"
        "assert ws4web.__file__.startswith(os.environ['PYTHONPATH']), ws4web.__file__\n"
        "assert f._c_apply_mask is None and f.apply_mask is f._py_apply_mask\n"
        "assert f.apply_mask(b'\\x00\\x01\\x02\\x03\\x04', b'\\x01\\x02\\x03\\x04') == b'\\x01\\x03\\x01\\x07\\x05'\n"
        "assert b'ws4web chat' in ws4web.demo.page()\n"
    )
    ran = installed.run(installed.python, "-c", check, env=clean_env(PYTHONPATH=str(wheel)))
    assert ran.returncode == 0, ran.stderr
