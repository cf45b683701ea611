"""Helpers for the compatibility layers' tests: example and test programs run as server processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment() -> dict[str, str]:
    """This checkout on PYTHONPATH, no proxy from the environment (the programs talk to 127.0.0.1)."""
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


class ServerProcess:
    """A server program and the lines it has printed so far (read by a thread)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)


@contextlib.contextmanager
def server_process(
    argv: Sequence[str], port: int, *, ready: str | None = None, cwd: Path | None = None, probe: bool = True
) -> Iterator[ServerProcess]:
    """Run ``argv`` (a server on ``port``) until the block ends, then Ctrl-C it.

    It is ready once a TCP connection to ``port`` succeeds (``probe=False``: at once,
    for a server that a connection without a request would stop) and, with
    ``ready``, that text is in its output (CherryPy accepts connections before its
    engine has started, and a Ctrl-C then interrupts the start-up instead).
    """
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    server = ServerProcess(proc)
    try:
        deadline = time.monotonic() + 30
        while probe:
            assert proc.poll() is None, server.output
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
                if ready is None or ready in server.output:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"{argv} did not start:\n{server.output}"
            time.sleep(0.1)
        yield server
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(TIMEOUT)
        server.reader.join(TIMEOUT)
