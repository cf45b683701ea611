"""What every benchmark echo server shares: the command line, --check, the fd limit and --profile.

Each server module defines ``describe()`` (imports what it needs and returns a
one-line description with versions, or raises :class:`Unavailable` /
``ImportError``) and ``serve(host, port)`` (runs until killed), then calls
:func:`main`. The harness runs ``python -m bench.servers.NAME --check`` first:
exit status :data:`UNAVAILABLE` means "skip this target", and the first line of
output says why.
"""

from __future__ import annotations

import argparse
import importlib
import os
import resource
import runpy
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
UNAVAILABLE = 3
MAX_MESSAGE = 64 * 2**20  # every server accepts the 1 MiB scenario with room to spare


class Unavailable(Exception):
    """This target cannot run here; the message says what is missing."""


def raise_nofile(want: int = 65536) -> None:
    """Lift the soft fd limit toward the hard one: the idle scenario holds 1,000 sockets."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def version(dist: str) -> str:
    try:
        from importlib.metadata import version as _version

        return _version(dist)
    except Exception:
        return "?"


# --- profiling -------------------------------------------------------------------------
# cProfile only sees the thread that enabled it, and thread-per-connection or worker-pool
# servers do their work in other threads. So every thread started after install() gets a
# profiler of its own (wrapping Thread._bootstrap_inner, which runs in the new thread
# before run(), so subclasses that override run() are covered too). On SIGTERM all of them
# are merged, including those of threads still running (a reactor or a worker pool never
# ends on its own): those are read without being disabled, so their calls still in
# progress are left out rather than timed with the main thread's clock.
# --profile-clock cpu times each thread by its own CPU time (a thread blocked in epoll or
# on a queue then costs nothing), at the price of a clock_gettime call per event.
_profilers: list[Any] = []
_profilers_lock = threading.Lock()


class _Snapshot:
    """What pstats.Stats wants (``create_stats`` and ``stats``), read from a live profiler."""

    def __init__(self, profiler: Any) -> None:
        profiler.snapshot_stats()
        self.stats = profiler.stats

    def create_stats(self) -> None:
        pass


def _install_profiling(path: str, clock: str) -> None:
    import cProfile
    import pstats

    timer: Any = (time.thread_time,) if clock == "cpu" else ()

    original = threading.Thread._bootstrap_inner  # type: ignore[attr-defined]

    def bootstrap_inner(self: threading.Thread) -> None:
        profiler = cProfile.Profile(*timer)
        with _profilers_lock:
            _profilers.append(profiler)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    threading.Thread._bootstrap_inner = bootstrap_inner  # type: ignore[attr-defined]
    main_profiler = cProfile.Profile(*timer)

    def dump(signum: int, frame: Any) -> None:
        main_profiler.disable()
        stats = pstats.Stats(_Snapshot(main_profiler))  # type: ignore[arg-type]  # duck-typed on purpose
        with _profilers_lock:
            profilers = list(_profilers)
        for profiler in profilers:
            try:
                stats.add(_Snapshot(profiler))  # type: ignore[arg-type]
            except (TypeError, ValueError):  # a profiler that recorded nothing
                pass
        stats.dump_stats(path)
        os._exit(0)

    signal.signal(signal.SIGUSR2, dump)  # not SIGTERM: an example's own shutdown handler takes that
    main_profiler.enable()


def main(describe: Callable[[], str], serve: Callable[[str, int], None]) -> None:
    parser = argparse.ArgumentParser(description="benchmark echo server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--check", action="store_true", help="say whether this target can run, then exit")
    parser.add_argument("--profile", metavar="FILE", help="cProfile every thread; write pstats to FILE on SIGUSR2")
    parser.add_argument("--profile-clock", choices=("wall", "cpu"), default="wall", help="cProfile's timer")
    args = parser.parse_args()
    try:
        description = describe()
    except ImportError as exc:
        missing = exc.name or str(exc)
        print(f"not installed: {missing} ({exc}); pip install -r bench/requirements.txt", flush=True)
        sys.exit(UNAVAILABLE)
    except Unavailable as exc:
        print(f"{exc}", flush=True)
        sys.exit(UNAVAILABLE)
    except Exception as exc:  # a half-written adapter: report it, do not crash the run
        print(f"{type(exc).__name__}: {exc}", flush=True)
        sys.exit(UNAVAILABLE)
    if args.check:
        print(description, flush=True)
        return
    raise_nofile()
    if args.profile:
        _install_profiling(args.profile, args.profile_clock)
    serve(args.host, args.port)


def run_example(adapter: str, example: str, host: str, port: int) -> None:
    """Run ``examples/<example>`` in this process, as the compliance runner would."""
    path = EXAMPLES / example
    sys.argv = [str(path), "--host", host, "--port", str(port)]
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(path), run_name="__main__")


def describe_example(adapter: str, example: str, what: str) -> str:
    """The ws4web adapters are served by their conformance echo example: check both exist."""
    try:
        importlib.import_module(adapter)
    except ImportError as exc:
        if exc.name and not exc.name.startswith("ws4web"):
            raise  # the framework itself is missing: "not installed"
        raise Unavailable(f"{adapter} is not written yet ({exc})") from exc
    if not (EXAMPLES / example).exists():
        raise Unavailable(f"{adapter} exists but examples/{example} does not yet")
    import ws4web.frames

    accel = "on" if ws4web.frames.apply_mask is not ws4web.frames._py_apply_mask else "off"
    return f"ws4web {version('ws4web')} {what} (examples/{example}), accelerator {accel}"
