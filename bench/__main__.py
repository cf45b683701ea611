"""`python -m bench`: every target through the same load client, in interleaved rounds, as medians and ratios.

    python -m bench                                   # 3 rounds x 1.5 s per measurement (~15 min on 2 cores)
    python -m bench --quick                           # 1 round x 0.5 s (~3 min)
    python -m bench --scenarios rt64,stream64 --targets floor,ws4web-stdlib,websockets-sync
    python -m bench --profile ws4web-stdlib:rt64      # also cProfile that server during that scenario
    python -m bench --list                            # targets, scenarios, and which targets can run here

Each target is an echo server in its own process on 127.0.0.1 (bench/servers/).
Round r starts every server afresh, then for each scenario runs every target in
turn (the order rotated by one each round), so slow drifts of a shared machine
spread over all targets alike. The table gives the median over rounds and ratios
to the floor, to websockets' threaded server and to ws4web's stdlib server.
Nothing is installed here: a peer that is missing is reported and skipped
(bench/requirements.txt lists them all).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import pstats
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import loadgen
from bench.loadgen import Endpoint, Measurement, ScenarioSkipped

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "performance.md"
UNAVAILABLE = 3


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    env: dict[str, str] = field(default_factory=dict)
    floor: bool = False
    #: the checkout whose bench/servers/<module>.py (and ws4web) runs this target
    root: Path = ROOT


def baseline_targets(root: Path) -> list[Target]:
    """The ws4web targets of another checkout (an older commit, say), named ``base:<name>``:
    its own server modules and its own ws4web, measured in the same interleaved run."""
    script = "import json, bench.__main__ as b; print(json.dumps([[t.name, t.module, t.env] for t in b.TARGETS]))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return [
        Target(f"base:{name}", module, env, root=root)
        for name, module, env in json.loads(out.strip().splitlines()[-1])
        if name.startswith("ws4web")
    ]


TARGETS = [
    Target("floor", "floor", floor=True),
    Target("ws4web-stdlib", "ws4web_stdlib"),
    Target("ws4web-stdlib-py", "ws4web_stdlib", env={"WS4WEB_NO_SPEEDUPS": "1"}),
    Target("ws4web-cherrypy", "ws4web_cherrypy"),
    Target("ws4web-gevent", "ws4web_gevent"),
    Target("ws4web-asgi", "ws4web_asgi"),
    Target("ws4web-asgi-async", "ws4web_asgi", env={"WS4WEB_ASGI_ASYNC": "1"}),
    Target("websockets-sync", "websockets_sync"),
    Target("websockets-asyncio", "websockets_asyncio"),
    Target("ws4py-cherrypy", "ws4py_cherrypy"),
    Target("ws4py-gevent", "ws4py_gevent"),
    Target("gevent-websocket", "gevent_websocket"),
    Target("simple-websocket", "simple_websocket_werkzeug"),
    Target("aiohttp", "aiohttp_server"),
    Target("picows", "picows_server"),
    Target("starlette-uvicorn", "starlette_uvicorn"),
]
BY_NAME = {t.name: t for t in TARGETS}
REFERENCES = ("floor", "websockets-sync", "ws4web-stdlib")


@dataclass(frozen=True)
class Scenario:
    name: str
    letter: str
    title: str
    unit: str
    higher_is_better: bool = True
    fmt: str = "rate"


SCENARIOS = [
    Scenario("rt64", "a", "one 64-byte round trip at a time", "round trips/s"),
    Scenario("stream64", "b", f"64-byte messages streamed, {loadgen.WINDOW} in flight", "msg/s"),
    Scenario("big1m", "c", "1 MiB messages, one at a time", "GB/s each way", fmt="gbps"),
    Scenario("handshake", "d", "connections: open, one echo, close", "conn/s"),
    Scenario("conc100", "e", f"{loadgen.CONCURRENT} connections, one round trip in flight each", "round trips/s"),
    Scenario("idle1k", "f", "memory per idle connection", "KiB/conn", higher_is_better=False, fmt="kib"),
    Scenario("deflate16k", "g", "permessage-deflate, 16 KiB JSON-like text, one at a time", "msg/s"),
]
SCENARIO_BY_KEY = {s.name: s for s in SCENARIOS} | {s.letter: s for s in SCENARIOS}
# Run order inside a round: idle memory first, on servers that have served nothing yet;
# handshakes last, as they leave the most sockets in TIME_WAIT behind them.
RUN_ORDER = ["idle1k", "rt64", "stream64", "big1m", "conc100", "deflate16k", "handshake"]


# --- servers ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(65536, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def check_targets(targets: Sequence[Target]) -> dict[str, tuple[bool, str]]:
    """Ask every server module, in parallel, whether it can run here."""
    procs = {
        t.name: subprocess.Popen(
            [sys.executable, "-m", f"bench.servers.{t.module}", "--check"],
            cwd=t.root,
            env=os.environ | t.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for t in targets
    }
    status = {}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            status[name] = (False, "--check timed out")
            continue
        lines = [line for line in out.strip().splitlines() if line.strip()]
        text = lines[-1] if lines else f"exit status {proc.returncode}"
        status[name] = (proc.returncode == 0, text)
    return status


class Server:
    """One target's echo server process."""

    def __init__(self, target: Target, logdir: Path, profile: Path | None = None, clock: str = "wall") -> None:
        self.target = target
        self.port = free_port()
        self.log_path = logdir / f"{target.name}.log"
        cmd = [sys.executable, "-m", f"bench.servers.{target.module}", "--host", "127.0.0.1", "--port", str(self.port)]
        self.profiled = profile is not None
        if profile is not None:
            cmd += ["--profile", str(profile), "--profile-clock", clock]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=target.root, env=os.environ | target.env, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, self.proc.pid, floor=self.target.floor)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.alive():
                raise RuntimeError(f"exited with status {self.proc.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"not listening after {timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.alive():
            # A profiled server dumps its profile on SIGUSR2 (servers that run an example
            # install their own SIGTERM handler, the example's clean shutdown).
            self.proc.send_signal(signal.SIGUSR2 if self.profiled else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def start_servers(targets: Sequence[Target], logdir: Path) -> dict[str, Server]:
    servers = {t.name: Server(t, logdir) for t in targets}
    ready = {}
    for name, server in servers.items():
        try:
            server.wait_ready()
            ready[name] = server
        except RuntimeError as exc:
            print(f"  ! {name} did not start: {exc}\n{server.log_tail()}", flush=True)
            server.stop()
    return ready


# --- running ---------------------------------------------------------------------------


@dataclass
class Options:
    duration: float
    warmup: float
    idle_connections: int


def measure(scenario: str, ep: Endpoint, opts: Options) -> Measurement:
    if scenario == "idle1k":
        with loadgen.deadline(60 + opts.idle_connections * 0.05):
            return loadgen.idle1k(ep, opts.idle_connections)
    function: Callable[[Endpoint, float, float], Measurement] = getattr(loadgen, scenario)
    with loadgen.deadline(opts.duration + opts.warmup + 60):
        return function(ep, opts.duration, opts.warmup)


def fmt_value(scenario: Scenario, value: float | None) -> str:
    if value is None:
        return "—"
    if scenario.fmt == "gbps":
        return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"
    if scenario.fmt == "kib":
        return f"{value:.1f}"
    if value >= 100_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def fmt_ratio(ratio: float) -> str:
    if ratio >= 100:
        return f"{ratio:.0f}"
    if ratio >= 10:
        return f"{ratio:.1f}"
    if ratio >= 0.1:
        return f"{ratio:.2f}"
    return f"{ratio:.2g}"


def describe_measurement(scenario: Scenario, m: Measurement) -> str:
    text = f"{fmt_value(scenario, m.value)} {scenario.unit}"
    if scenario.name == "idle1k":
        return text + f", {m.extra['threads_per_conn']:.2f} threads/conn (RSS {m.extra['rss_mib']} MiB)"
    us = m.server_us_per_op
    load = m.client_load
    if us is not None:
        text += f"  (server {us:.1f} µs CPU/op"
        text += f", client {load * 100:.0f}% CPU)" if load is not None else ")"
    return text


def run_rounds(
    targets: list[Target], scenarios: list[Scenario], rounds: int, opts: Options, logdir: Path
) -> tuple[dict[str, dict[str, list[Measurement]]], dict[str, dict[str, str]]]:
    results: dict[str, dict[str, list[Measurement]]] = {s.name: {} for s in scenarios}
    notes: dict[str, dict[str, str]] = {s.name: {} for s in scenarios}
    ordered = [s for name in RUN_ORDER for s in scenarios if s.name == name]
    for r in range(rounds):
        shift = r % len(targets)
        order = targets[shift:] + targets[:shift]
        print(f"\n== round {r + 1}/{rounds}: starting {len(order)} servers", flush=True)
        servers = start_servers(order, logdir)
        try:
            for scenario in ordered:
                print(f"-- round {r + 1} ({scenario.letter}) {scenario.name}: {scenario.title}", flush=True)
                for target in order:
                    name = target.name
                    if notes[scenario.name].get(name, "").startswith("skipped"):
                        continue
                    server = servers.get(name)
                    if server is None:
                        notes[scenario.name].setdefault(name, "server did not start")
                        continue
                    if not server.alive():
                        print(f"  ! {name} died (status {server.proc.returncode}); restarting", flush=True)
                        print(server.log_tail(), flush=True)
                        server = servers[name] = Server(target, logdir)
                        try:
                            server.wait_ready()
                        except RuntimeError as exc:
                            print(f"  ! {name} did not restart: {exc}", flush=True)
                            del servers[name]
                            continue
                    try:
                        m = measure(scenario.name, server.endpoint, opts)
                    except ScenarioSkipped as exc:
                        notes[scenario.name][name] = f"skipped: {exc}"
                        print(f"  {name:22s} skipped: {exc}", flush=True)
                        continue
                    except Exception as exc:
                        notes[scenario.name][name] = f"error: {type(exc).__name__}: {exc}"
                        print(f"  {name:22s} ERROR {type(exc).__name__}: {exc}", flush=True)
                        continue
                    results[scenario.name].setdefault(name, []).append(m)
                    print(f"  {name:22s} {describe_measurement(scenario, m)}", flush=True)
                    time.sleep(0.1)  # let the server finish closing before the next target starts
        finally:
            for server in servers.values():
                server.stop()
    return results, notes


def tottime_by_package(stats: pstats.Stats) -> collections.Counter[str]:
    """Own time per top-level package: ws4web, cherrypy, cheroot, the standard library, C builtins."""
    shares: collections.Counter[str] = collections.Counter()
    for (filename, _line, _function), row in stats.stats.items():  # type: ignore[attr-defined]
        tottime = row[2]
        if filename == "~":
            package = "builtins and C methods"
        elif "site-packages" in filename:
            package = filename.split("site-packages/", 1)[1].split("/", 1)[0]
        elif "/ws4web/" in filename:
            package = "ws4web"
        elif "/lib/python3" in filename:
            package = "standard library"
        else:
            package = Path(filename).parent.name or filename
        shares[package] += tottime
    return shares


def run_profile(spec: str, opts: Options, logdir: Path, clock: str, known: dict[str, Target]) -> str:
    """Run one scenario against one target under cProfile; return the top 25 by tottime."""
    name, _, scenario_key = spec.rpartition(":") if spec.count(":") > 1 else spec.partition(":")
    target = known[name]
    scenario = SCENARIO_BY_KEY[scenario_key or "rt64"]
    stats_path = logdir / f"profile-{name}-{scenario.name}.pstats"
    server = Server(target, logdir, profile=stats_path, clock=clock)
    try:
        server.wait_ready()
        m = measure(scenario.name, server.endpoint, opts)
        time.sleep(0.5)  # connection threads finish and hand their profiles in
    finally:
        server.stop(timeout=30)
    import io

    out = io.StringIO()
    stats = pstats.Stats(str(stats_path), stream=out)
    by_package = tottime_by_package(stats)
    stats.strip_dirs().sort_stats("tottime").print_stats(25)
    text = out.getvalue()
    text = text[text.find("   ncalls") :] if "   ncalls" in text else text
    header = (
        f"cProfile ({clock} clock) of {name} during ({scenario.letter}) {scenario.name}, {opts.duration:g} s "
        f"(profiled rate {describe_measurement(scenario, m)}; profiling slows the server)\n"
    )
    total = sum(by_package.values()) or 1.0
    shares = ", ".join(f"{package} {seconds / total:.0%}" for package, seconds in by_package.most_common(8))
    report = f"{header}time by package (own time of its functions): {shares}\n\n{text}"
    (RESULTS / f"profile-{name}-{scenario.name}-{clock}.txt").write_text(report)
    return report


# --- reporting -------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        nproc = str(len(os.sched_getaffinity(0)))
    except AttributeError:
        nproc = str(os.cpu_count())
    mem = ""
    with contextlib.suppress(OSError):
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))  # type: ignore[union-attr]
        mem = f", {kib / 2**20:.0f} GiB RAM"
    return {
        "cpu": f"{model}{mem}",
        "nproc": nproc,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
    }


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def median(values: list[float]) -> float:
    return statistics.median(values)


def render(
    results: dict[str, dict[str, list[Measurement]]],
    notes: dict[str, dict[str, str]],
    targets: list[Target],
    scenarios: list[Scenario],
    descriptions: dict[str, str],
    meta: dict[str, Any],
) -> str:
    lines = [
        f"Run {meta['date']} on nproc {meta['machine']['nproc']}, {re.sub(r'^[0-9]+ x ', '', meta['machine']['cpu'])}; "
        f"{meta['machine']['python']}, {meta['machine']['os']}.",
        f"{meta['rounds']} interleaved round(s), {meta['duration']:g} s per measurement after a "
        f"{meta['warmup']:g} s warm-up, {meta['idle']} idle connections; medians of rounds. "
        f"Load average {meta['load_start']} at the start, {meta['load_end']} at the end"
        + (f"; {meta['note']}" if meta.get("note") else "")
        + ".",
        "",
    ]
    med: dict[str, dict[str, float]] = {
        s.name: {t: median([m.value for m in ms]) for t, ms in results[s.name].items()} for s in scenarios
    }
    names = [t.name for t in targets]

    # summary matrix
    head = ["target"] + [f"({s.letter}) {s.unit}" for s in scenarios]
    if any(s.name == "idle1k" for s in scenarios):
        head.insert(head.index(next(h for h in head if h.startswith("(f)"))) + 1, "(f) threads/conn")
    lines += ["### Summary (medians; higher is better except (f))", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        row = [f"`{name}`"]
        for s in scenarios:
            value = med[s.name].get(name)
            cell = fmt_value(s, value) if value is not None else _short_note(notes[s.name].get(name))
            row.append(cell)
            if s.name == "idle1k":
                ms = results[s.name].get(name)
                row.append(f"{median([m.extra['threads_per_conn'] for m in ms]):.2f}" if ms else "—")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")

    # The same runs as CPU time: what each operation cost the server, whatever the load.
    timed = [s for s in scenarios if s.name != "idle1k"]
    if timed:
        lines += [
            "### Server CPU per operation (µs, medians; lower is better; holds up better than rates "
            "on a shared machine)",
            "",
        ]
        head = ["target"] + [f"({s.letter}) {s.name}" for s in timed]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in names:
            row = [f"`{name}`"]
            for s in timed:
                us = [m.server_us_per_op for m in results[s.name].get(name, []) if m.server_us_per_op is not None]
                row.append(f"{median(us):.1f}" if us else _short_note(notes[s.name].get(name)))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")

    for s in scenarios:
        better = "higher is better" if s.higher_is_better else "lower is better"
        lines += [f"### ({s.letter}) {s.title} — {s.unit}, {better}", ""]
        refs = [r for r in REFERENCES if r in med[s.name]]
        cols = ["target", "median", "range"] + [f"x {r}" for r in refs]
        if s.name == "idle1k":
            cols += ["threads/conn", "threads", "RSS MiB"]
        else:
            cols += ["server CPU µs/op", "client CPU"]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        ranked = sorted(
            (n for n in names if n in med[s.name]),
            key=lambda n: -med[s.name][n] if s.higher_is_better else med[s.name][n],
        )
        for name in ranked:
            ms = results[s.name][name]
            values = [m.value for m in ms]
            value = med[s.name][name]
            row = [f"`{name}`", fmt_value(s, value), f"{fmt_value(s, min(values))} - {fmt_value(s, max(values))}"]
            for r in refs:
                ref = med[s.name][r]
                row.append(fmt_ratio(value / ref) if ref else "—")
            if s.name == "idle1k":
                row.append(f"{median([m.extra['threads_per_conn'] for m in ms]):.2f}")
                row.append(ms[-1].extra["threads"])
                row.append(ms[-1].extra["rss_mib"])
            else:
                us = [m.server_us_per_op for m in ms if m.server_us_per_op is not None]
                load = [m.client_load for m in ms if m.client_load is not None]
                row.append(f"{median(us):.1f}" if us else "—")
                row.append(f"{median(load) * 100:.0f}%" if load else "—")
            lines.append("| " + " | ".join(row) + " |")
        for name in names:
            if name not in med[s.name] and notes[s.name].get(name):
                lines.append(f"| `{name}` | {notes[s.name][name]} |" + " |" * (len(cols) - 2))
        lines.append("")

    lines += ["### Targets", "", "| target | server |", "|---|---|"]
    for name in names:
        lines.append(f"| `{name}` | {descriptions.get(name, '')} |")
    lines.append("")
    return "\n".join(lines)


def _short_note(note: str | None) -> str:
    if not note:
        return "—"
    if note.startswith("skipped"):
        return "n/a"
    return "error"


DOC_INTRO = """# Performance

How ws4web compares with the other Python WebSocket servers, measured by the
project's own benchmark (`bench/`, described in `bench/README.md`):

```sh
pip install -r bench/requirements.txt
python -m bench --docs          # ~15 min on 2 cores; --quick for a ~3 min smoke run
```

Every target is an echo server in its own process on 127.0.0.1, driven by the
same raw-socket load client with frames masked in advance; targets are measured
in interleaved rounds and the tables give medians over rounds. Ratios are
"this target ÷ the reference": above 1 is faster for rates, larger for memory.
"server CPU µs/op" is the CPU time the server process used per operation
during the timed window (from /proc/<pid>/stat): when the machine is shared
with other work it holds up much better than the rates, which move with the
load (the load average is given with each run).

The floor is a raw TCP echo in Python (a thread per connection, no framing)
sent the very same bytes. On one connection no WebSocket server can beat it,
so "x floor" there says how much of the budget the WebSocket layer uses; with
many connections, or many handshakes, a selector-based server can, since the
floor pays a thread per connection. For (b) and (g) the floor is a bare byte
pipe (it never looks at messages), far above any WebSocket server.

"""


def write_docs(table: str) -> None:
    DOCS.parent.mkdir(parents=True, exist_ok=True)
    DOCS.write_text(DOC_INTRO + "## Latest results\n\n" + table)


def rerender(path: Path, out: Path, docs: bool) -> int:
    """Render the tables again from a run's .json (e.g. after changing the layout)."""
    raw = json.loads(path.read_text())
    results = {s: {t: [Measurement(**m) for m in ms] for t, ms in per.items()} for s, per in raw["results"].items()}
    scenarios = [s for s in SCENARIOS if s.name in results]
    names = set(raw["targets"])
    targets = [t for t in TARGETS if t.name in names]
    notes = {s.name: raw["notes"].get(s.name, {}) for s in scenarios}
    table = render(results, notes, targets, scenarios, raw["targets"], raw["meta"])
    print(table)
    out.write_text(f"# ws4web benchmark: latest run\n\n{table}")
    if docs:
        write_docs(table)
    return 0


# --- command line ----------------------------------------------------------------------


def parse_list(value: str | None, known: dict[str, Any], what: str) -> list[Any]:
    if not value:
        return []
    items = []
    for key in (k.strip() for k in value.split(",") if k.strip()):
        if key not in known:
            sys.exit(f"unknown {what} {key!r}; known: {', '.join(sorted(set(known)))}")
        items.append(known[key])
    return items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3, --quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 1.5, --quick 0.5)")
    parser.add_argument("--warmup", type=float, help="seconds of warm-up before each (default 0.25, --quick 0.1)")
    parser.add_argument("--idle-connections", type=int, help="connections in scenario (f) (default 1000)")
    parser.add_argument("--scenarios", help="comma list of names or letters a-g (default: all)")
    parser.add_argument("--targets", help="comma list of target names (default: all)")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="CHECKOUT",
        help="also offer that checkout's ws4web targets, as base:<name> (e.g. a worktree of the last release)",
    )
    parser.add_argument("--quick", action="store_true", help="one short round: a smoke run in ~3 minutes")
    parser.add_argument("--profile", action="append", default=[], metavar="TARGET:SCENARIO", help="cProfile a server")
    parser.add_argument(
        "--profile-clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: cProfile's default (blocking waits show up); cpu: each thread's CPU time",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.md", help="markdown table (and .json beside)")
    parser.add_argument("--docs", action="store_true", help="also write the table into docs/performance.md")
    parser.add_argument("--note", default="", help="free text added to the run description (e.g. machine shared)")
    parser.add_argument("--list", action="store_true", help="list targets and scenarios, check targets, exit")
    parser.add_argument("--from-json", type=Path, metavar="PATH", help="re-render a saved run's .json; run nothing")
    args = parser.parse_args(argv)

    rounds = args.rounds if args.rounds is not None else (1 if args.quick else 3)
    opts = Options(
        duration=args.duration or (0.5 if args.quick else 1.5),
        warmup=args.warmup if args.warmup is not None else (0.1 if args.quick else 0.25),
        idle_connections=args.idle_connections or 1000,
    )
    known = dict(BY_NAME)
    if args.baseline:
        known |= {t.name: t for t in baseline_targets(args.baseline.resolve())}
    targets = parse_list(args.targets, known, "target") or list(TARGETS)
    scenarios = parse_list(args.scenarios, SCENARIO_BY_KEY, "scenario") or list(SCENARIOS)
    scenarios = [s for s in SCENARIOS if s in scenarios]
    for spec in args.profile:
        name, _, key = spec.rpartition(":") if spec.count(":") > 1 else spec.partition(":")
        if name not in known or (key and key not in SCENARIO_BY_KEY):
            sys.exit(f"--profile wants TARGET:SCENARIO, e.g. ws4web-stdlib:rt64 (got {spec!r})")

    if args.from_json:
        return rerender(args.from_json, args.out, args.docs)

    raise_nofile()
    RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"checking {len(targets)} targets ...", flush=True)
    status = check_targets(targets)
    available = []
    for t in targets:
        ok, text = status[t.name]
        print(f"  {t.name:22s} {'ok  ' if ok else 'SKIP'} {text}", flush=True)
        if ok:
            available.append(t)
    if args.list:
        print("\nscenarios:")
        for s in SCENARIOS:
            print(f"  ({s.letter}) {s.name:11s} {s.title} [{s.unit}]")
        return 0
    missing = [t.name for t in targets if not status[t.name][0]]
    if missing:
        print(
            f"skipping {', '.join(missing)}: see the reasons above (peers: pip install -r bench/requirements.txt)",
            flush=True,
        )
    if not available:
        print("nothing to run", file=sys.stderr)
        return 1

    logdir = Path(tempfile.mkdtemp(prefix="ws4web-bench-"))
    print(f"server logs in {logdir}", flush=True)
    started = time.monotonic()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "rounds": rounds,
        "duration": opts.duration,
        "warmup": opts.warmup,
        "idle": opts.idle_connections,
        "load_start": loadavg(),
        "note": args.note,
    }
    results, notes = run_rounds(available, scenarios, rounds, opts, logdir) if rounds else ({}, {})
    meta["load_end"] = loadavg()
    meta["elapsed_s"] = round(time.monotonic() - started)

    if rounds:
        descriptions = {t.name: status[t.name][1] for t in targets}
        for t in targets:
            if not status[t.name][0]:
                for s in scenarios:
                    notes[s.name][t.name] = f"skipped: {status[t.name][1]}"
        table = render(results, notes, targets, scenarios, descriptions, meta)
        print("\n" + table, flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(f"# ws4web benchmark: latest run\n\n{table}")
        raw = {
            "meta": meta,
            "targets": descriptions,
            "results": {s: {t: [asdict(m) for m in ms] for t, ms in per.items()} for s, per in results.items()},
            "notes": notes,
        }
        args.out.with_suffix(".json").write_text(json.dumps(raw, indent=1, ensure_ascii=False))
        print(f"wrote {args.out} and {args.out.with_suffix('.json')} ({meta['elapsed_s']} s)", flush=True)
        if args.docs:
            write_docs(table)
            print(f"wrote {DOCS}", flush=True)

    for spec in args.profile:
        print(f"\n== profiling {spec}", flush=True)
        try:
            print(run_profile(spec, opts, logdir, args.profile_clock, known), flush=True)
        except Exception as exc:
            print(f"profiling {spec} failed: {type(exc).__name__}: {exc}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
