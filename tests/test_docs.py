"""The documentation: the Sphinx site builds with warnings as errors, and every code example in it runs.

How the examples are tested
===========================

Every fenced ``python`` block of the pages ``docs/*.md`` is a complete program, run as it is
written, by itself, in a fresh interpreter (a subprocess whose working directory is an empty
temporary directory, with this checkout on ``PYTHONPATH``). It must exit with status 0 within
:data:`RUN_TIMEOUT` seconds. Examples check what they claim with ``assert`` where a reader
should see the result, so a wrong claim fails here too.

A block may be preceded by one HTML comment of the form ``<!-- docs-test: option ... -->``
(invisible on GitHub and in the built site) that says how to run it:

``name=NAME``
    other blocks of the same page can refer to this one.
``needs=NAME[,NAME...]``
    the named blocks' code is put before this block's (a page defines its handler once).
``server``
    the program serves until it is stopped (``serve_forever()``, ``uvicorn.run()``...).
    The harness replaces the port number written in it (``port=N``, default 9000) with a free
    port on 127.0.0.1, starts it, waits until it accepts TCP connections, opens a WebSocket
    to ``path=/...`` (default ``/``) with ws4web's client, sends a text message and asserts
    that the same message comes back (within the first five messages: a server may greet
    first). Then it interrupts the program with SIGINT (Ctrl-C).
    With ``shutdown=CODE`` the block runs twice, stopped once with SIGINT (Ctrl-C) and once
    with SIGTERM (a service manager's stop); each time the WebSocket stays open across the
    signal and the harness asserts that the server closes it with ``CODE`` (1001 for the
    servers whose shutdown says "Going Away") and that the program then exits by itself,
    with status 0 and no traceback on stderr (one exception, for uvicorn: see
    :func:`uvicorn_reraise`).
``against=NAME``
    a client program: the server block ``NAME`` of the same page is started first (as for
    ``server``, same port substitution), this block runs against it, then the server stops.
``redis``
    a ``redis-server`` is started on a free port and the port 6379 written in the block is
    replaced with it (the test is skipped where redis-server is not installed).
``files=SRC:DST[,...]``
    files of this repository (``SRC``, relative to its root) are copied into the working
    directory as ``DST`` first (test certificates for the TLS examples).
``modules=NAME:FILE[,...]``
    the program of block ``NAME`` of the same page is written into the working directory as
    ``FILE`` first, for a program made of several files (the tutorial's ``app.py`` and
    ``test_chat.py`` import its ``chat.py``).
``noecho``
    with ``server``: the server speaks a protocol of its own (JSON, say), so the harness
    skips its echo exchange and only opens its WebSocket; it needs ``shutdown=``, whose
    check is then the harness's whole test, and a client block of the page with
    ``against=`` this block, which checks what the server says.

Nothing else is skipped: a ``python`` block that is not a complete program fails. Other
languages (``sh``, ``text``) are not run; blocks tagged ``py`` or ``python3`` are refused so
that no Python example escapes the runner by its spelling.

The site itself is built by :func:`test_sphinx_build_has_no_warnings` with the command CI uses,
``python -m sphinx -W --keep-going -b html docs <out>``, skipped when Sphinx or myst-parser is
not installed (``pip install -e '.[docs]'``). The build starts in the background with the first
test of this file and runs while the examples do; the build test, last, waits for it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ws4web import ConnectionClosed, TextMessage, connect

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

RUN_TIMEOUT = 60.0  # seconds for one example program to finish
START_TIMEOUT = 30.0  # seconds for a server example to accept connections
IO_TIMEOUT = 10.0  # seconds for one WebSocket operation against a server example
SETTLE = 0.5  # seconds a server example runs after the exchange before it is interrupted

pytestmark = pytest.mark.timeout(180)

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")
_DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<options>.*?)-->\s*$")
_KNOWN = {"name", "needs", "server", "port", "path", "shutdown", "against", "redis", "files", "modules", "noecho"}


@dataclass
class Block:
    """One fenced code block of a page, with its docs-test options."""

    page: str
    line: int
    info: str
    code: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse_options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for word in text.split():
        key, _, value = word.partition("=")
        if key not in _KNOWN:
            raise ValueError(f"unknown docs-test option {key!r}")
        options[key] = value
    return options


def blocks_of(path: Path) -> list[Block]:
    """Every fenced block of a Markdown page, in order (nested fences are not used in docs/)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match is None:
            i += 1
            continue
        indent, fence, info = match["indent"], match["fence"], match["info"]
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence) and lines[i].strip().strip(fence[0]) == ""):
            line = lines[i]
            body.append(line[len(indent) :] if line.startswith(indent) else line.lstrip())
            i += 1
        i += 1  # the closing fence
        options: dict[str, str] = {}
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        if above >= 0:
            directive = _DIRECTIVE.match(lines[above])
            if directive is not None:
                options = parse_options(directive["options"])
        blocks.append(Block(path.name, start + 1, info, "\n".join(body) + "\n", options))
    return blocks


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def all_blocks() -> list[Block]:
    return [block for page in pages() for block in blocks_of(page)]


PYTHON_BLOCKS = [block for block in all_blocks() if block.info == "python"]


def named(block: Block, name: str) -> Block:
    for other in all_blocks():
        if other.page == block.page and other.info == "python" and other.options.get("name") == name:
            return other
    raise AssertionError(f"{block.id}: no block named {name!r} on {block.page}")


def program(block: Block) -> str:
    """The block's code with the blocks it needs in front."""
    parts = [named(block, name).code for name in block.options.get("needs", "").split(",") if name]
    return "\n".join([*parts, block.code])


# -- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def substitute(code: str, old: int | str, new: int) -> str:
    result, count = re.subn(rf"(?<!\d){old}(?!\d)", str(new), code)
    assert count, f"the example does not mention port {old}"
    return result


# The examples talk to servers on 127.0.0.1: a proxy configured on this machine (the
# client takes *_proxy variables from the environment, as curl does) must not intercept them.
PROXY_VARIABLES = {"http_proxy", "https_proxy", "all_proxy", "no_proxy"}


@pytest.fixture(autouse=True)
def no_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.lower() in PROXY_VARIABLES:
            monkeypatch.delenv(name)


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WS4WEB_") and k.lower() not in PROXY_VARIABLES}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def prepare(block: Block, workdir: Path, code: str, name: str = "example.py") -> Path:
    for pair in filter(None, block.options.get("files", "").split(",")):
        source, _, target = pair.partition(":")
        shutil.copy(ROOT / source, workdir / (target or Path(source).name))
    for pair in filter(None, block.options.get("modules", "").split(",")):
        source, _, target = pair.partition(":")
        (workdir / target).write_text(program(named(block, source)), encoding="utf-8")
    script = workdir / name
    script.write_text(code, encoding="utf-8")
    return script


def describe(block: Block, proc: subprocess.Popen[str] | subprocess.CompletedProcess[str], out: str, err: str) -> str:
    return f"{block.id} exited with {proc.returncode}\n--- stdout ---\n{out}\n--- stderr ---\n{err}"


def run_program(block: Block, workdir: Path, code: str) -> subprocess.CompletedProcess[str]:
    script = prepare(block, workdir, code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=workdir,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )


def stop(proc: subprocess.Popen[str], timeout: float = 5.0) -> tuple[str, str]:
    """Ctrl-C, then SIGKILL if the program does not exit within ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate(timeout=timeout)


def wait_for_port(port: int, proc: subprocess.Popen[str], block: Block) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the server exited before accepting connections: {describe(block, proc, out, err)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                out, err = stop(proc)
                pytest.fail(f"no connection accepted within {START_TIMEOUT} s: {describe(block, proc, out, err)}")
            time.sleep(0.05)


class Server:
    """A server example running in a subprocess on a free port."""

    def __init__(self, block: Block, workdir: Path, extra: dict[int | str, int] | None = None) -> None:
        self.block = block
        self.port = free_port()
        self.substitutions: dict[int | str, int] = {int(block.options.get("port") or 9000): self.port, **(extra or {})}
        code = program(block)
        for old, new in self.substitutions.items():
            code = substitute(code, old, new)
        workdir.mkdir(parents=True, exist_ok=True)
        script = prepare(block, workdir, code, "server.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script)],
            cwd=workdir,
            env=environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wait_for_port(self.port, self.proc, block)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.block.options.get('path') or '/'}"

    def stop(self) -> tuple[str, str]:
        return stop(self.proc)


@pytest.fixture
def redis_port(request: pytest.FixtureRequest) -> Iterator[int | None]:
    block: Block = request.node.callspec.params["block"]
    if "redis" not in block.options:
        yield None
        return
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                break
            except OSError:
                assert proc.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the examples ------------------------------------------------------------------------


def test_examples_are_found_and_their_options_are_valid() -> None:
    assert len(PYTHON_BLOCKS) >= 20, [b.id for b in PYTHON_BLOCKS]
    stray = [b.id for b in all_blocks() if b.info.lower() in {"py", "python3", "pycon", "{code-block}"}]
    assert not stray, f"Python examples must be fenced as ```python to be run: {stray}"
    for block in PYTHON_BLOCKS:  # options refer to blocks that exist
        program(block)
        if "against" in block.options:
            assert "server" in named(block, block.options["against"]).options, block.id
        for pair in filter(None, block.options.get("modules", "").split(",")):
            source, _, target = pair.partition(":")
            named(block, source)
            assert target.endswith(".py"), block.id
        if "noecho" in block.options:
            assert "server" in block.options and block.options.get("shutdown"), block.id
            name = block.options.get("name")
            clients = [b for b in PYTHON_BLOCKS if b.page == block.page and b.options.get("against") == name]
            assert name and clients, f"{block.id}: noecho needs a client block against it"


def runs() -> list[object]:
    """One run per block; two for a server block with ``shutdown=``, one per stop signal."""
    params: list[object] = []
    for block in PYTHON_BLOCKS:
        if "server" in block.options and block.options.get("shutdown"):
            for stop in (signal.SIGINT, signal.SIGTERM):
                params.append(pytest.param(block, stop, id=f"{block.id}-{stop.name}"))
        else:
            params.append(pytest.param(block, signal.SIGINT, id=block.id))
    return params


@pytest.mark.parametrize(("block", "stop"), runs())
def test_example_runs(block: Block, stop: signal.Signals, tmp_path: Path, redis_port: int | None) -> None:
    extra: dict[int | str, int] = {6379: redis_port} if redis_port is not None else {}
    if "server" in block.options:
        check_server(block, tmp_path, extra, stop)
        return
    code = program(block)
    server = None
    if "against" in block.options:
        server = Server(named(block, block.options["against"]), tmp_path / "server", extra)
        for old, new in server.substitutions.items():
            code = substitute(code, old, new)
    else:
        for old, new in extra.items():
            code = substitute(code, old, new)
    try:
        result = run_program(block, tmp_path, code)
    finally:
        if server is not None:
            server.stop()
    assert result.returncode == 0, describe(block, result, result.stdout, result.stderr)


def uvicorn_reraise(block: Block, stop: signal.Signals, returncode: int | None, err: str) -> bool:
    """Whether ``err`` and ``returncode`` are uvicorn's own way of ending on a signal, and nothing else.

    uvicorn re-raises the signal it caught once it has shut down (``Server.capture_signals``):
    after SIGINT Python reports the ``KeyboardInterrupt`` a Ctrl-C is (a traceback of
    ``KeyboardInterrupt`` and asyncio's ``CancelledError`` only, then status 1 or death by
    SIGINT); after SIGTERM the process dies by SIGTERM, silently. The connections were closed
    with the right code first (checked before this). This is the one exception to "status 0,
    no traceback", for blocks that run uvicorn only, while the ASGI door's clean exit is
    being built; it goes when that lands.
    """
    if "uvicorn" not in program(block):
        return False
    if stop == signal.SIGTERM:
        return returncode == -signal.SIGTERM and "Traceback" not in err
    # The exceptions a traceback reports are its unindented lines but its headers.
    reported = [
        line for line in err.strip().splitlines() if line and not line[0].isspace() and line not in _TRACEBACK_HEADERS
    ]
    return (
        returncode in (1, -signal.SIGINT)
        and bool(reported)
        and reported[-1] == "KeyboardInterrupt"
        and set(reported) <= {"KeyboardInterrupt", "asyncio.exceptions.CancelledError"}
    )


_TRACEBACK_HEADERS = {
    "Traceback (most recent call last):",
    "During handling of the above exception, another exception occurred:",
}


def check_server(block: Block, workdir: Path, extra: dict[int | str, int], stop: signal.Signals) -> None:
    server = Server(block, workdir, extra)
    shutdown = block.options.get("shutdown")
    out = err = ""
    try:
        ws = connect(server.url, timeout=IO_TIMEOUT, close_timeout=IO_TIMEOUT)
        try:
            if "noecho" not in block.options:
                ws.send("hello from the docs")
                # A server may greet first ("welcome"): the echo is among the first few messages.
                received = [ws.recv(IO_TIMEOUT) for _ in range(1)]
                while received[-1] != TextMessage("hello from the docs") and len(received) < 5:
                    received.append(ws.recv(IO_TIMEOUT))
                assert received[-1] == TextMessage("hello from the docs"), received
            if shutdown:
                # CherryPy accepts connections before its engine has finished starting,
                # and a Ctrl-C in that window aborts the start instead of stopping it.
                time.sleep(SETTLE)
                server.proc.send_signal(stop)
                with pytest.raises(ConnectionClosed) as closed:
                    ws.recv(IO_TIMEOUT)
                assert closed.value.code == int(shutdown), closed.value
                out, err = server.proc.communicate(timeout=IO_TIMEOUT)
                clean = server.proc.returncode == 0 and "Traceback" not in err
                assert clean or uvicorn_reraise(block, stop, server.proc.returncode, err), describe(
                    block, server.proc, out, err
                )
        finally:
            if shutdown:
                ws.terminate()
            else:
                ws.close()
    finally:
        if server.proc.poll() is None:
            out, err = server.stop()
    assert server.proc.returncode is not None


def test_examples_have_no_undefined_or_unused_names(tmp_path: Path) -> None:
    """pyflakes' rules (through ruff) on every example as it runs: what a reader copies is clean."""
    if importlib.util.find_spec("ruff") is None:
        pytest.skip("ruff is not installed (the lint extra)")
    paths = []
    for index, block in enumerate(PYTHON_BLOCKS):
        path = tmp_path / f"{index:03d}_{block.page.replace('.', '_').replace('-', '_')}_{block.line}.py"
        path.write_text(program(block), encoding="utf-8")
        paths.append(path)
    rules = ["--isolated", "--no-cache", "--select", "F,E9", "--output-format", "concise"]
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", *rules, *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# -- the site ------------------------------------------------------------------------------


BUILD_TIMEOUT = 240.0  # seconds for the whole site (about 20 s on an idle 2-core machine)


class SiteBuild:
    """The Sphinx build, started in the background so that it overlaps the example runs."""

    def __init__(self, workdir: Path) -> None:
        self.out = workdir / "html"
        self.log = workdir / "sphinx.log"
        # CI's command (see the module docstring), with the doctrees kept out of docs/.
        command = ["-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", "-d", str(workdir / "doctrees")]
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *command, str(DOCS), str(self.out)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
            )

    def wait(self) -> tuple[int, str]:
        try:
            returncode = self.proc.wait(timeout=BUILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        return returncode, self.log.read_text(encoding="utf-8", errors="replace")


@pytest.fixture(scope="module")
def site_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SiteBuild]:
    pytest.importorskip("sphinx")
    pytest.importorskip("myst_parser")
    build = SiteBuild(tmp_path_factory.mktemp("site"))
    try:
        yield build
    finally:
        if build.proc.poll() is None:
            build.proc.kill()
            build.proc.wait()


@pytest.fixture(scope="module", autouse=True)
def start_site_build_early(request: pytest.FixtureRequest) -> None:
    """Start the build with the first test of this file, if the build test is going to run."""
    if any(item.name == "test_sphinx_build_has_no_warnings" for item in request.session.items):
        try:
            request.getfixturevalue("site_build")
        except pytest.skip.Exception:
            pass  # Sphinx is not installed: the build test reports the skip itself


def test_sphinx_build_has_no_warnings(site_build: SiteBuild) -> None:
    returncode, log = site_build.wait()
    assert returncode == 0, log
    assert "WARNING" not in log, log
    out = site_build.out
    # The API reference really is generated from the code.
    api = (out / "api" / "websocket.html").read_text(encoding="utf-8")
    assert 'id="ws4web.websocket.WebSocket.received_message"' in api
    for page in pages():
        assert (out / page.with_suffix(".html").name).exists(), page.name


def test_package_page_lists_every_export() -> None:
    import ws4web

    text = (DOCS / "api" / "ws4web.rst").read_text(encoding="utf-8")
    missing = [name for name in ws4web.__all__ if not re.search(rf"[.~`]{re.escape(name)}`", text)]
    assert not missing, f"docs/api/ws4web.rst does not list: {missing}"


def test_every_public_module_has_an_api_page() -> None:
    documented = set()
    for page in (DOCS / "api").glob("*.rst"):
        documented |= set(re.findall(r"^\.\. automodule:: (\S+)", page.read_text(encoding="utf-8"), re.M))
    modules = set()
    for path in (ROOT / "ws4web").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if parts[-1] == "__main__":
            continue
        modules.add(".".join(parts))
    missing = sorted(modules - documented)
    assert not missing, f"modules without an automodule in docs/api/: {missing}"
