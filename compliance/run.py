"""Autobahn|Testsuite runner: every echo server and the echo client, one summary each.

    python compliance/run.py                      # sections 1-10, every agent installed
    python compliance/run.py --cases all          # 1-13 (12-13 need permessage-deflate)
    python compliance/run.py --servers stdlib --no-client --cases quick

wstest is, first found: ``--wstest COMMAND``; ``wstest`` on the PATH; compliance/.wstest,
where compliance/install-wstest puts it (run here when none is found). ``--wstest`` takes
the Docker image too (docs/conformance.md). Prints one line per agent with the count of each
result, and exits 1 when any case ends FAILED or UNIMPLEMENTED, or closes with WRONG CODE
(or FAILED); OK, NON-STRICT and INFORMATIONAL pass. Reports land in compliance/reports/.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EXAMPLES = ROOT / "examples"
# Each run writes to its own folder, so runs started side by side never clobber each other.
REPORTS = HERE / "reports" / time.strftime(f"%Y%m%d-%H%M%S-{os.getpid()}")
INSTALLER = HERE / "install-wstest"

# name -> (example script, module that must be importable for it to run)
SERVERS: dict[str, tuple[str, str | None]] = {
    "stdlib": ("echo_stdlib.py", None),
    "cherrypy": ("echo_cherrypy.py", "cherrypy"),
    "gevent": ("echo_gevent.py", "gevent"),
    "wsgiref": ("echo_wsgiref.py", None),
    "asgi": ("echo_asgi.py", "uvicorn"),
    "asgi-starlette-bare": ("echo_starlette_bare.py", "uvicorn"),
}

CASE_SETS = {
    "quick": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.1.*", "6.4.*", "7.1.*", "7.3.*", "7.5.*", "7.7.*", "10.*"],
    "core": ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"],
    "all": ["*"],
    "deflate": ["12.*", "13.*"],
}

PASSING = {"OK", "NON-STRICT", "INFORMATIONAL"}
PASSING_CLOSE = {"OK", "INFORMATIONAL", "UNCLEAN"}


def find_wstest(command: str | None) -> list[str]:
    """The command that runs wstest; compliance/install-wstest's (idempotent) when none is given or found."""
    if command:
        return shlex.split(command)
    found = shutil.which("wstest")
    if found:
        return [found]
    print(f"wstest: {INSTALLER.relative_to(ROOT)} (a minute or more the first time) ...", flush=True)
    installed = subprocess.run(["bash", str(INSTALLER)], stdout=subprocess.PIPE, text=True, check=False)
    if installed.returncode != 0:
        sys.exit(f"{INSTALLER.relative_to(ROOT)} failed; --wstest can run another wstest (docs/conformance.md)")
    return [installed.stdout.strip().splitlines()[-1]]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout}s")


def summarize(index: Path, agents: list[str]) -> dict[str, tuple[collections.Counter[str], list[str]]]:
    data = json.loads(index.read_text())
    result = {}
    for agent in agents:
        counts: collections.Counter[str] = collections.Counter()
        bad = []
        for case, outcome in sorted(data.get(agent, {}).items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
            behavior, close = outcome["behavior"], outcome["behaviorClose"]
            counts[behavior] += 1
            if close not in PASSING_CLOSE:
                counts[f"close {close}"] += 1
            if behavior not in PASSING or close not in PASSING_CLOSE:
                bad.append(f"{case}: {behavior} / close {close}")
        result[agent] = (counts, bad)
    return result


def expand(cases: str) -> tuple[list[str], list[str]]:
    names = CASE_SETS.get(cases, cases.split(","))
    exclude = (
        []
        if cases in ("all", "deflate") or any(c.startswith("1") and c[:2] in ("12", "13") for c in names)
        else ["12.*", "13.*"]
    )
    return names, exclude


def run_servers(
    wstest: list[str], names: list[str], cases: list[str], exclude: list[str], env: dict[str, str]
) -> list[str]:
    procs, servers = [], []
    try:
        for name in names:
            script, _module = SERVERS[name]
            port = free_port()
            proc = subprocess.Popen([sys.executable, str(EXAMPLES / script), "--port", str(port)], env=env)
            procs.append(proc)
            wait_port(port, proc)
            servers.append({"agent": f"ws4web-{name}", "url": f"ws://127.0.0.1:{port}"})
        spec = {
            "outdir": str(REPORTS / "servers"),
            "servers": servers,
            "cases": cases,
            "exclude-cases": exclude,
            "exclude-agent-cases": {},
        }
        spec_path = REPORTS / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec, indent=2))
        subprocess.run(
            [*wstest, "-m", "fuzzingclient", "-s", str(spec_path)], check=True, stdout=subprocess.DEVNULL, cwd=REPORTS
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return [s["agent"] for s in servers]


def run_client(wstest: list[str], cases: list[str], exclude: list[str], env: dict[str, str]) -> str:
    agent = "ws4web-client"
    port = free_port()
    spec = {
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(REPORTS / "clients"),
        "cases": cases,
        "exclude-cases": exclude,
        "exclude-agent-cases": {},
    }
    spec_path = REPORTS / "fuzzingserver.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    server = subprocess.Popen(
        [*wstest, "-m", "fuzzingserver", "-s", str(spec_path), "--webport", "0"], stdout=subprocess.DEVNULL, cwd=REPORTS
    )
    try:
        wait_port(port, server)  # type: ignore[arg-type]
        sys.path.insert(0, str(ROOT))
        from ws4web import connect

        ws = connect(f"ws://127.0.0.1:{port}/getCaseCount")
        count = int(ws.recv().data)
        ws.close()
        client = [sys.executable, str(EXAMPLES / "echo_client.py")]
        for case in range(1, count + 1):
            url = f"ws://127.0.0.1:{port}/runCase?case={case}&agent={agent}"
            proc = subprocess.run([*client, url], env=env, timeout=120, check=False)
            if proc.returncode != 0:
                print(f"echo_client exited {proc.returncode} on case {case}", file=sys.stderr)
        ws = connect(f"ws://127.0.0.1:{port}/updateReports?agent={agent}")
        try:
            ws.recv(timeout=30)
        except Exception:
            pass
        ws.close()
    finally:
        server.terminate()
        server.wait(10)
    return agent


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the Autobahn testsuite against ws4web.")
    parser.add_argument(
        "--cases", default="core", help="quick, core (1-10), deflate (12-13), all, or a comma list like 1.*,2.1"
    )
    parser.add_argument(
        "--servers", default="auto", help="comma list of " + ", ".join(SERVERS) + "; 'auto' = those installed; 'none'"
    )
    parser.add_argument("--no-client", action="store_true", help="skip the client run")
    parser.add_argument(
        "--env", action="append", default=[], help="NAME=VALUE for the agents (e.g. WS4WEB_NO_SPEEDUPS=1)"
    )
    parser.add_argument(
        "--wstest", metavar="COMMAND", help="how to run wstest: a path, or 'docker run ...' (docs/conformance.md)"
    )
    args = parser.parse_args()

    wstest = find_wstest(args.wstest)
    REPORTS.mkdir(parents=True)
    env = dict(os.environ)
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value

    if args.servers == "auto":
        names = [
            n
            for n, (script, module) in SERVERS.items()
            if (EXAMPLES / script).exists() and (module is None or importlib.util.find_spec(module) is not None)
        ]
    elif args.servers == "none":
        names = []
    else:
        names = args.servers.split(",")
    cases, exclude = expand(args.cases)
    start = time.monotonic()
    summaries = {}
    if names:
        agents = run_servers(wstest, names, cases, exclude, env)
        summaries.update(summarize(REPORTS / "servers" / "index.json", agents))
    if not args.no_client:
        agent = run_client(wstest, cases, exclude, env)
        summaries.update(summarize(REPORTS / "clients" / "index.json", [agent]))

    failed = False
    print(f"\nAutobahn ({args.cases}: {','.join(cases)}) in {time.monotonic() - start:.0f}s; reports in {REPORTS}")
    for agent, (counts, bad) in summaries.items():
        total = sum(v for k, v in counts.items() if not k.startswith("close "))
        detail = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        print(f"{agent:<32} {total:>4} cases: {detail}")
        for line in bad[:20]:
            print(f"    {line}")
        if len(bad) > 20:
            print(f"    ... {len(bad) - 20} more")
        # Under ASGI the server (uvicorn) frames: a case that the bare Starlette endpoint on
        # the same uvicorn fails too is the server's, not the adapter's. Say so; count the rest.
        reference = summaries.get("ws4web-asgi-starlette-bare") if agent == "ws4web-asgi" else None
        counted = bad
        if reference is not None:
            server_cases = {line.split(":")[0] for line in reference[1]}
            counted = [line for line in bad if line.split(":")[0] not in server_cases]
            if len(counted) < len(bad):
                print(f"    ({len(bad) - len(counted)} of these also fail the bare Starlette endpoint: uvicorn's)")
        if counted and not agent.endswith("-bare"):
            failed = True
        if total == 0:
            print(f"    {agent}: no case ran")
            failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
