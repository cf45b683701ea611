"""Run one fuzz target for a bounded time and summarise what libFuzzer reported.

::

    python fuzzing/run.py --target protocol --seconds 600
    python fuzzing/run.py --target http --seconds 600
    python fuzzing/run.py --target protocol --replay fuzzing/artifacts/protocol/crash-...   # no atheris needed
    python fuzzing/run.py --target http --seeds-only        # write the seed inputs and check them

The corpus lives in ``fuzzing/corpus/<target>`` (seed files are committed, the
rest is generated and git-ignored); crashes go to ``fuzzing/artifacts/<target>/``
and the full fuzzer log to ``fuzzing/logs/``. The summary gives executions, exec/s,
the coverage (libFuzzer's ``cov:`` edges and ``ft:`` features), the corpus size and
peak memory; the exit status is non-zero if the target crashed.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
import time
import traceback
from typing import Any, NamedTuple

HERE = os.path.dirname(os.path.abspath(__file__))
TARGETS = {"protocol": "fuzz_protocol", "http": "fuzz_http"}
MAX_LEN = {"protocol": 8192, "http": 4096}

# libFuzzer status lines: "#1234	NEW    cov: 567 ft: 890 corp: 12/3456b lim: 4096 exec/s: 789 rss: 60Mb ..."
STATUS = re.compile(
    r"^#(?P<execs>\d+)\s+(?P<event>\w+)\s+cov: (?P<cov>\d+) ft: (?P<ft>\d+)"
    r"(?: corp: (?P<corp>\d+)/(?P<size>\S+))?.*?(?: exec/s: (?P<rate>\d+))?(?: rss: (?P<rss>\d+)Mb)?"
)
STAT = re.compile(r"^stat::(?P<name>\w+):\s*(?P<value>\d+)")
ARTIFACT = re.compile(r"(?:Test unit written to|written to) (?P<path>\S+)")


class Summary(NamedTuple):
    execs: int
    rate: int
    cov: int
    ft: int
    corpus: int
    rss: int
    crashes: list[str]


def summarise(lines: list[str], seconds: float) -> Summary:
    execs = rate = cov = ft = corpus = rss = 0
    crashes: list[str] = []
    stats: dict[str, int] = {}
    for line in lines:
        match = STATUS.match(line)
        if match:
            execs = int(match["execs"])
            cov, ft = int(match["cov"]), int(match["ft"])
            if match["corp"]:
                corpus = int(match["corp"])
            if match["rate"]:
                rate = int(match["rate"])
            if match["rss"]:
                rss = max(rss, int(match["rss"]))
            continue
        match = STAT.match(line)
        if match:
            stats[match["name"]] = int(match["value"])
            continue
        match = ARTIFACT.search(line)
        if match and ("crash-" in line or "leak-" in line or "timeout-" in line or "oom-" in line):
            crashes.append(match["path"])
    execs = stats.get("number_of_executed_units", execs)
    if "average_exec_per_sec" in stats:
        rate = stats["average_exec_per_sec"]
    elif seconds > 0 and execs:
        rate = int(execs / seconds)
    rss = max(rss, stats.get("peak_rss_mb", 0))
    return Summary(execs, rate, cov, ft, corpus, rss, crashes)


def load_harness(target: str) -> object:
    if HERE not in sys.path:
        sys.path.insert(0, HERE)
    return importlib.import_module(TARGETS[target])


def write_seeds(target: str, corpus: str) -> int:
    """Write the harness's seed inputs into ``corpus`` and check each one; return the failures."""
    harness = load_harness(target)
    os.makedirs(corpus, exist_ok=True)
    failures = 0
    for name, data in harness.seeds().items():  # type: ignore[attr-defined]
        path = os.path.join(corpus, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.write(data)
        try:
            harness.check(data)  # type: ignore[attr-defined]
        except Exception:
            failures += 1
            print(f"seed {name} fails:", file=sys.stderr)
            traceback.print_exc()
    return failures


# The modules each target is about, for --coverage reports.
MODULES = {
    "protocol": ["frames.py", "protocol.py", "streams.py", "extensions/permessage_deflate.py"],
    "http": ["http11.py", "handshake.py", "auth.py", "streams.py", "extensions/permessage_deflate.py"],
}


def replay(target: str, paths: list[str], with_coverage: bool = False) -> int:
    """Run inputs through the harness without atheris; print each failure's traceback.

    ``with_coverage`` measures the line and branch coverage of ws4web that the
    inputs reach, with coverage.py (a corpus replayed gives the coverage it found).
    """
    measure: Any = None
    if with_coverage:
        package = os.path.join(os.path.dirname(HERE), "ws4web")
        measure = importlib.import_module("coverage").Coverage(
            config_file=False, branch=True, include=[os.path.join(package, m) for m in MODULES[target]]
        )
        measure.start()
    harness = load_harness(target)
    failures = 0
    for path in paths:
        files = [os.path.join(path, n) for n in sorted(os.listdir(path))] if os.path.isdir(path) else [path]
        for name in files:
            with open(name, "rb") as f:
                data = f.read()
            try:
                harness.check(data)  # type: ignore[attr-defined]
            except Exception:
                failures += 1
                print(f"--- {name} ({len(data)} bytes): {data[:200]!r}", file=sys.stderr)
                traceback.print_exc()
    if measure is not None:
        measure.stop()
        measure.report(show_missing=True)
    print(f"replayed {target}: {failures} failing input(s)")
    return 1 if failures else 0


def fuzz(target: str, seconds: int, corpus: str, extra: list[str]) -> int:
    try:
        importlib.import_module("atheris")
    except ImportError as exc:
        print(f"atheris cannot be imported ({exc}); install it with: pip install atheris", file=sys.stderr)
        return 2
    if write_seeds(target, corpus):
        return 1
    artifacts = os.path.join(HERE, "artifacts", target) + os.sep
    logs = os.path.join(HERE, "logs")
    os.makedirs(artifacts, exist_ok=True)
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{target}-{time.strftime('%Y%m%d-%H%M%S')}.log")
    command = [
        sys.executable,
        os.path.join(HERE, TARGETS[target] + ".py"),
        corpus,
        f"-max_total_time={seconds}",
        f"-max_len={MAX_LEN[target]}",
        f"-artifact_prefix={artifacts}",
        "-print_final_stats=1",
        "-timeout=10",  # one input running this long is a hang: reported as timeout-*
        "-rss_limit_mb=2048",
        *extra,
    ]
    dictionary = os.path.join(HERE, f"{target}.dict")
    if os.path.exists(dictionary):
        command.append(f"-dict={dictionary}")
    print("running:", " ".join(command), flush=True)
    lines: list[str] = []
    started = time.monotonic()
    with open(log_path, "w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as process:
        assert process.stdout is not None
        last_print = 0.0
        try:
            for line in process.stdout:
                log.write(line)
                lines.append(line.rstrip("\n"))
                now = time.monotonic()
                # Echo progress at most every 30 s, and everything that is not a status line.
                if not STATUS.match(line) or now - last_print > 30:
                    print(line, end="", flush=True)
                    last_print = now if STATUS.match(line) else last_print
        finally:
            # The fuzzer stops itself at max_total_time; give it a margin, then end it.
            try:
                process.wait(timeout=max(60, seconds // 10))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    elapsed = time.monotonic() - started
    summary = summarise(lines, elapsed)
    print()
    print(f"== fuzz {target}: {elapsed:.0f} s, exit status {process.returncode}")
    print(f"   executions {summary.execs}, {summary.rate} exec/s")
    print(f"   coverage: cov {summary.cov} edges, ft {summary.ft} features, corpus {summary.corpus} inputs")
    print(f"   peak rss {summary.rss} MB; log {log_path}")
    if summary.crashes:
        print(f"   CRASHES ({len(summary.crashes)}):")
        for path in summary.crashes:
            print(f"     {path}   (replay: python fuzzing/run.py --target {target} --replay {path})")
    else:
        print("   no crash")
    return 1 if summary.crashes or process.returncode not in (0,) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), required=True)
    parser.add_argument("--seconds", type=int, default=600, help="fuzzing time (default: 600)")
    parser.add_argument("--corpus", help="corpus directory (default: fuzzing/corpus/<target>)")
    parser.add_argument("--replay", nargs="+", metavar="PATH", help="run these inputs (files or dirs) and stop")
    parser.add_argument("--coverage", action="store_true", help="with --replay: report ws4web line coverage")
    parser.add_argument("--seeds-only", action="store_true", help="write and check the seed inputs, then stop")
    parser.add_argument(
        "--allow", default="", help="known bugs to look past, comma-separated (see README: basic-auth-non-ascii)"
    )
    parser.add_argument("libfuzzer", nargs="*", help="extra libFuzzer flags, after --, e.g. -- -jobs=2")
    args = parser.parse_args(argv)
    corpus = args.corpus or os.path.join(HERE, "corpus", args.target)
    if args.allow:
        os.environ["WS4WEB_FUZZ_ALLOW"] = args.allow  # read by the harness, here and in the fuzzer process
    if args.replay:
        return replay(args.target, args.replay, args.coverage)
    if args.seeds_only:
        failures = write_seeds(args.target, corpus)
        print(f"seeds for {args.target} written to {corpus}: {failures} failing")
        return 1 if failures else 0
    return fuzz(args.target, args.seconds, corpus, args.libfuzzer)


if __name__ == "__main__":
    sys.exit(main())
