"""The Redis backplane against a real redis-server: processes, outages, gaps, presence, slow consumers.

Each test starts its own redis-server on a free loopback port and stops it. The
server processes under test are this module run as a program (``python -m
tests.pubsub.test_redis node ...``): a WebSocketServer with a Hub over a
RedisBackplane, driven by JSON lines on stdin and answering on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import pytest

from tests.conftest import TIMEOUT, wait_until
from ws4web import WebSocket, connect
from ws4web.frames import Opcode

ROOT = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server")

if __name__ != "__main__":
    pytestmark = [
        pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not on PATH (apt-get install redis-server)"),
        pytest.mark.timeout(90),
    ]
    redis = pytest.importorskip("redis", reason="the redis client library is not installed (pip install redis)")


# -- a redis-server of our own ---------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """redis-server on 127.0.0.1:<free port>, no persistence; can be killed and started again on the same port."""

    def __init__(self, workdir: str) -> None:
        assert REDIS_SERVER is not None
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None
        command = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        command += ["--dir", self.workdir]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            assert wait_until(lambda: self._pings(client), timeout=TIMEOUT), "redis-server did not start"
        finally:
            client.close()

    @staticmethod
    def _pings(client: Any) -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(TIMEOUT)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(TIMEOUT)
            self.process = None

    def client(self) -> Any:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2.0, socket_connect_timeout=2.0)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory() as workdir:
        server = RedisServer(workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


# -- server processes (this module as a program) ------------------------------------------------


class Node:
    """A server process: WebSocketServer + Hub + RedisBackplane; commands over stdin, answers on stdout."""

    def __init__(self, redis_url: str, prefix: str, **options: Any) -> None:
        command = [sys.executable, "-m", "tests.pubsub.test_redis", "node", "--redis", redis_url, "--prefix", prefix]
        for name, value in options.items():
            command += [f"--{name.replace('_', '-')}", str(value)]
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log
        )
        self._answers: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._reader.start()
        hello = self._answer(30.0)
        self.port: int = hello["port"]
        self.origin: str = hello["origin"]

    def _read(self, stream: IO[bytes]) -> None:
        for line in stream:
            self._answers.put(json.loads(line))

    def _answer(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        try:
            return self._answers.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"node gave no answer within {timeout} s; its log:\n{self.stderr()}") from None

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"cmd": cmd, **args}) + "\n").encode())
        self.process.stdin.flush()
        return self._answer()

    def status(self) -> dict[str, Any]:
        return self.call("status")

    def presence(self, group: str = "room") -> list[str]:
        names: list[str] = self.call("presence", group=group)["names"]
        return names

    def publish(self, start: int, count: int, tag: str = "", size: int = 0, group: str = "room") -> None:
        self.call("publish", group=group, start=start, count=count, tag=tag, size=size)

    def wait_ready(self, timeout: float = 20.0) -> None:
        assert wait_until(lambda: bool(self.status()["ready"]), timeout=timeout, interval=0.05), (
            f"node not ready: {self.status()}\n{self.stderr()}"
        )

    def url(self, path: str = "/room") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def stderr(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-4000:]

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                self.call("quit")
                self.process.wait(TIMEOUT)
            except (AssertionError, OSError, subprocess.TimeoutExpired):
                self.process.kill()
                self.process.wait(TIMEOUT)
        assert self.process.stdin is not None
        self.process.stdin.close()
        self._reader.join(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()
        self.log.close()


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Any]:
    """``nodes(**options)`` starts a server process on the test's Redis; all are stopped at teardown."""
    started: list[Node] = []
    prefix = f"t{uuid.uuid4().hex[:8]}"

    def start(**options: Any) -> Node:
        node = Node(redis_server.url, prefix, **options)
        started.append(node)
        return node

    yield start
    for node in started:
        node.stop()


def recv_all(ws: WebSocket, count: int) -> list[str]:
    """Exactly ``count`` messages, then nothing more for a moment."""
    got = [ws.recv(TIMEOUT).data.decode() for _ in range(count)]
    with pytest.raises(TimeoutError):
        extra = ws.recv(0.3)
        got.append(extra.data.decode())  # pragma: no cover - reported by the assertion below
    return got


# -- the tests -----------------------------------------------------------------------------------------


def test_envelopes_round_trip_and_foreign_data_is_refused() -> None:
    from ws4web.pubsub.redis import decode_envelope, encode_envelope

    data = encode_envelope(b"host:1:abcd", 2**40 + 7, Opcode.BINARY, b"\x00payload")
    assert decode_envelope(data) == (b"host:1:abcd", 2**40 + 7, Opcode.BINARY, b"\x00payload")
    for bad in (b"", b"hello", b"W4" + bytes(20), data[:14], b"XX" + data[2:], data[:3] + b"\x09" + data[4:]):
        with pytest.raises(ValueError):
            decode_envelope(bad)


def test_every_message_reaches_every_member_in_both_processes_exactly_once(nodes: Any) -> None:
    a, b = nodes(), nodes()
    clients = [connect(a.url(f"/room?a{i}")) for i in range(3)] + [connect(b.url(f"/room?b{i}")) for i in range(3)]
    try:
        a.wait_ready()
        b.wait_ready()
        assert a.presence() == b.presence() == ["a0", "a1", "a2", "b0", "b1", "b2"]
        a.publish(0, 50, tag="A")
        b.publish(0, 50, tag="B")
        for k, client in enumerate(clients):  # clients publish too, through their handler
            client.send(f"c{k}:0")
            client.send(f"c{k}:1")
        expected = {f"A:{i}" for i in range(50)} | {f"B:{i}" for i in range(50)}
        expected |= {f"c{k}:{j}" for k in range(6) for j in range(2)}
        for client in clients:
            got = recv_all(client, len(expected))
            assert len(got) == len(set(got)) == len(expected), "no message twice"
            assert set(got) == expected
            for tag in ("A", "B"):  # one origin's messages keep their order
                assert [m for m in got if m.startswith(f"{tag}:")] == [f"{tag}:{i}" for i in range(50)]
        for node in (a, b):
            stats = node.status()["backplane"]
            assert stats["gaps"] == 0 and stats["missed"] == 0 and stats["lost_publishing"] == 0
    finally:
        for client in clients:
            client.close()


def test_redis_restart_reconnects_resumes_and_reports_the_gap(redis_server: RedisServer, nodes: Any) -> None:
    a = nodes(heartbeat=0.5, presence_ttl=2.0, backoff_max=0.5)
    b = nodes(heartbeat=0.5, presence_ttl=2.0, backoff_max=0.5)
    on_a, on_b = connect(a.url("/room?ann")), connect(b.url("/room?bob"))
    try:
        a.wait_ready()
        b.wait_ready()
        a.publish(0, 5, tag="pre")
        assert [on_a.recv(TIMEOUT).data for _ in range(5)] == [f"pre:{i}".encode() for i in range(5)]
        assert [on_b.recv(TIMEOUT).data for _ in range(5)] == [f"pre:{i}".encode() for i in range(5)]

        redis_server.kill()
        a.publish(0, 5, tag="down")  # reaches a's own members only
        assert [on_a.recv(TIMEOUT).data for _ in range(5)] == [f"down:{i}".encode() for i in range(5)]
        assert wait_until(lambda: not a.status()["backplane"]["connected"] and not b.status()["backplane"]["connected"])

        redis_server.start()  # same port, empty
        a.wait_ready()
        b.wait_ready()
        assert a.presence() == b.presence() == ["ann", "bob"], "presence was written again"
        a.publish(0, 5, tag="post")
        b.publish(0, 5, tag="postb")
        after = {f"post:{i}" for i in range(5)} | {f"postb:{i}" for i in range(5)}
        assert set(recv_all(on_a, 10)) == after
        assert set(recv_all(on_b, 10)) == after, "the messages published during the outage are lost, not late"

        # The loss is reported where it happened: b missed a's 5 messages (sequence 6-10).
        gaps = b.status()["gaps"]
        assert len(gaps) == 1, gaps
        gap = gaps[0]
        assert (gap["origin"], gap["group"], gap["missed"], gap["first_missing"]) == (a.origin, "room", 5, 6)
        assert gap["outage"] is not None and gap["outage"] > 0
        b_stats = b.status()["backplane"]
        assert b_stats["gaps"] == 1 and b_stats["missed"] == 5 and b_stats["outages"] >= 1
        a_status = a.status()
        assert a_status["gaps"] == [] and a_status["backplane"]["lost_publishing"] == 5
        assert len(a_status["outages"]) >= 1 and all(seconds > 0 for seconds in a_status["outages"])
    finally:
        on_a.close()
        on_b.close()


def test_presence_spans_processes_and_a_killed_process_leaves_no_ghosts(redis_server: RedisServer, nodes: Any) -> None:
    # A TTL of several heartbeats: on a loaded machine a heartbeat may come late.
    a = nodes(heartbeat=0.5, presence_ttl=3.0)
    b = nodes(heartbeat=0.5, presence_ttl=3.0)
    ann, bob, carl = connect(a.url("/room?ann")), connect(a.url("/room?bob")), connect(b.url("/room?carl"))
    dana = connect(b.url("/other?dana"))
    try:
        a.wait_ready()
        b.wait_ready()
        assert a.presence() == b.presence() == ["ann", "bob", "carl"]
        assert a.presence("other") == ["dana"]

        bob.close()  # a normal leave is seen at once
        assert wait_until(lambda: b.presence() == ["ann", "carl"])

        b.kill()  # no chance to clean up: its entries stay until they expire
        client = redis_server.client()
        try:
            entries = client.zrange(f"{a.status()['prefix']}:presence:room", 0, -1)
        finally:
            client.close()
        assert f"{b.origin}|carl".encode() in entries
        assert wait_until(lambda: a.presence() == ["ann"] and a.presence("other") == [], timeout=TIMEOUT)
        # a's own members stay: its heartbeat keeps refreshing them past the TTL.
        time.sleep(3.5)
        assert a.presence() == ["ann"]
    finally:
        for ws in (ann, bob, carl, dana):
            ws.close()


def test_slow_consumer_behind_redis_is_evicted_without_slowing_100_others(nodes: Any) -> None:
    from tests.pubsub.test_hub import RawClients, read_until_close

    a = nodes(max_queue_bytes=128 * 1024)
    b = nodes(max_queue_bytes=128 * 1024)
    on_a = RawClients(a.port, 50, keep=4)
    on_b = RawClients(b.port, 50, slow=1, keep=4)
    count, size, batch = 400, 1024, 50
    try:
        a.wait_ready()
        b.wait_ready()
        rss_before = b.status()["rss_kib"]
        for start in range(0, count, batch):
            a.publish(start, batch, size=size)  # through Redis to b's 51 members
            end = start + batch
            assert wait_until(lambda end=end: on_a.all_have(end) and on_b.all_have(end)), (
                f"stalled at {end}: {sorted(set(on_a.counts() + on_b.counts()))}"
            )
        for messages in on_a.messages + on_b.messages:
            assert [struct.unpack("!I", m)[0] for m in messages] == list(range(count))
        status = b.status()
        assert status["hub"]["evicted"] == 1
        assert status["hub"]["peak_pending_bytes"] <= 128 * 1024 + size + 16
        assert status["rss_kib"] - rss_before < 32 * 1024
        sock, initial = on_b.slow[0]
        _messages, code = read_until_close(sock, initial)
        assert code == 1013
    finally:
        on_a.close()
        on_b.close()


def test_invalid_utf8_text_from_redis_is_dropped_not_relayed(redis_server: RedisServer, nodes: Any) -> None:
    """Anyone who can publish on the Redis channel could otherwise make every member close with 1007."""
    from ws4web.pubsub.redis import encode_envelope

    node = nodes()
    client = connect(node.url("/room?m"))
    raw = redis_server.client()
    try:
        node.wait_ready()
        channel = f"{node.status()['prefix']}:msg:room"
        stranger = b"stranger:1:0000"
        for seq, opcode, payload in [
            (1, Opcode.TEXT, b"bad \xff\xfe text"),  # not UTF-8
            (2, Opcode.TEXT, b"caf\xc3"),  # cut inside a sequence
            (3, Opcode.TEXT, "good caf\u00e9".encode()),
            (4, Opcode.BINARY, b"\xff binary may be anything"),
            (5, Opcode.TEXT, b"\xed\xa0\x80 surrogate"),  # UTF-8 forbids encoded surrogates
            (6, Opcode.TEXT, b"last"),
        ]:
            assert raw.publish(channel, encode_envelope(stranger, seq, opcode, payload)) == 1
        got = [client.recv(TIMEOUT) for _ in range(3)]
        assert [(m.is_binary, bytes(m.data)) for m in got] == [
            (False, "good caf\u00e9".encode()),
            (True, b"\xff binary may be anything"),
            (False, b"last"),
        ]
        client.send("still open")  # the member was not closed with 1007
        assert client.recv(TIMEOUT).data == b"still open"
        stats = node.status()["backplane"]
        assert stats["invalid_text"] == 3
        assert stats["gaps"] == 0 and stats["missed"] == 0  # dropped, not lost: no false gap
        assert node.stderr().count("not UTF-8") == 3
    finally:
        client.close()
        raw.close()


def test_two_stacks_example(redis_server: RedisServer) -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pubsub_two_processes.py"), "demo", "--redis", redis_server.url],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    out = result.stdout.decode()
    assert result.returncode == 0, out + result.stderr.decode()[-3000:]
    assert "ann: hello from the stdlib server" in out.split("bob saw:")[1]
    assert "bob: hello from the CherryPy server" in out.split("bob saw:")[0]


# -- bounds: the outbox, the inbound streams, a flood through Redis ----------------------------------


@pytest.mark.parametrize("bound", ["count", "bytes"])
def test_the_outbox_stays_bounded_while_redis_stalls(redis_server: RedisServer, bound: str) -> None:
    """Redis stops answering (SIGSTOP): publishers wait up to outbox_wait for room, then
    the envelope is lost and counted; the outbox never holds more than its bounds."""
    from ws4web.pubsub import Hub
    from ws4web.pubsub.redis import RedisBackplane

    if bound == "count":  # tiny messages: the count binds
        limits, size = {"max_outbox": 50, "max_outbox_bytes": 2**30}, 8
    else:  # 1 KiB messages: the bytes bind
        limits, size = {"max_outbox": 10**6, "max_outbox_bytes": 64 * 1024}, 1024
    backplane = RedisBackplane(
        redis_server.url, prefix=f"t{uuid.uuid4().hex[:8]}", socket_timeout=3.0, outbox_wait=0.05, **limits
    )
    hub = Hub(backplane)
    assert redis_server.process is not None
    try:
        assert wait_until(lambda: backplane.connected)
        hub.publish("room", b"before")
        assert wait_until(lambda: backplane.stats()["published"] == 1)
        redis_server.process.send_signal(signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 1.5  # within socket_timeout: the keeper is stuck in its write
            while time.monotonic() < deadline:
                hub.publish("room", b"x" * size)
            stats = backplane.stats()
        finally:
            redis_server.process.send_signal(signal.SIGCONT)
        assert stats["outbox_full"] > 0 and stats["outbox_waits"] >= stats["outbox_full"]
        assert stats["lost_publishing"] >= stats["outbox_full"]
        assert stats["outbox"] <= limits["max_outbox"]
        entry = size + 100 + 160  # envelope header and channel, and the entry overhead
        assert stats["peak_outbox_bytes"] <= max(limits["max_outbox_bytes"], entry)
        if bound == "count":
            assert stats["outbox"] == 50 or stats["published"] > 1
        # Redis answers again: publishing resumes.
        assert wait_until(lambda: backplane.connected, timeout=20.0)
        published = backplane.stats()["published"]
        hub.publish("room", b"after")
        assert wait_until(lambda: backplane.stats()["published"] > published, timeout=20.0)
    finally:
        hub.close()


def test_inbound_streams_and_oversize_messages_are_bounded(redis_server: RedisServer, make_server: Any) -> None:
    """A stranger on the channel makes up origins and sends a message too large for any member."""
    from tests.pubsub.test_hub import make_hub_handler
    from ws4web.pubsub import Hub
    from ws4web.pubsub.redis import RedisBackplane, encode_envelope

    prefix = f"t{uuid.uuid4().hex[:8]}"
    backplane = RedisBackplane(redis_server.url, prefix=prefix, max_streams=100, max_message_size=4096)
    hub = Hub(backplane)
    server = make_server(make_hub_handler(hub))
    client = connect(f"ws://127.0.0.1:{server.port}/room?m")
    raw = redis_server.client()
    try:
        assert backplane.wait_ready(20.0)
        channel = f"{prefix}:msg:room"
        pipe = raw.pipeline(transaction=False)
        for n in range(1000):
            pipe.publish(channel, encode_envelope(f"stranger:{n}".encode(), 1, Opcode.TEXT, f"m{n}".encode()))
        pipe.publish(channel, encode_envelope(b"stranger:big", 1, Opcode.BINARY, bytes(5000)))
        pipe.publish(channel, encode_envelope(b"stranger:0", 2, Opcode.TEXT, b"last"))
        pipe.execute()
        got = [client.recv(TIMEOUT).data for _ in range(1001)]
        assert got == [f"m{n}".encode() for n in range(1000)] + [b"last"], "the oversize one is not relayed"
        stats = backplane.stats()
        assert stats["oversize"] == 1
        assert stats["streams"] <= 100
        assert stats["streams_forgotten"] >= 900
        # stranger:0 was forgotten long before its second message: it starts a new count, no false gap.
        assert stats["gaps"] == 0 and stats["duplicates"] == 0
    finally:
        client.close()
        raw.close()
        hub.close()


@pytest.mark.timeout(180)
def test_a_flood_through_redis_grows_neither_process(nodes: Any) -> None:
    """Issue 17 across processes: a member of node a floods; 19 members on node b talk meanwhile."""
    from tests.pubsub.test_hub import Flooder, RawClients

    a, b = nodes(), nodes()
    honest = RawClients(b.port, 19, path="/chat", keep_if=lambda data: data.startswith(b"honest-"))
    flooder: Flooder | None = None
    try:
        flooder = Flooder(a.port)
        assert wait_until(lambda: len(b.presence("chat")) == 20 and a.status()["ready"] and b.status()["ready"])
        before = {node: node.status()["rss_kib"] for node in (a, b)}
        flooder.start()
        started = time.monotonic()
        said = 0
        while said < 10 or time.monotonic() - started < 4.0:
            time.sleep(0.1)
            honest.send(0, f"honest-{said}")
            said += 1
            assert wait_until(lambda n=said: all(len(m) >= n for m in honest.messages), timeout=60.0), (
                f"honest line {said - 1} did not reach everyone"
            )
        after = {node: node.status() for node in (a, b)}
        flooder.stop()
        for name, node in (("a", a), ("b", b)):
            growth = after[node]["hwm_kib"] - before[node]
            hub_stats, backplane_stats = after[node]["hub"], after[node]["backplane"]
            print(f"\nnode {name}: +{growth / 1024:.1f} MiB; hub {hub_stats}; backplane {backplane_stats}")
            assert growth < 64 * 1024, f"node {name} grew by {growth} KiB"
            assert after[node]["hub"]["evicted"] == 0
        for messages in honest.messages:
            assert messages == [f"honest-{k}".encode() for k in range(said)]
        assert honest.close_codes == [None] * 19
        assert min(honest.totals) > said, "the flood reached b through Redis too"
    finally:
        if flooder is not None:
            flooder.stop()
        honest.close()


# -- the node program -------------------------------------------------------------------------------


def _rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def node_main(argv: list[str]) -> None:
    import logging

    from tests.pubsub.test_hub import make_hub_handler, numbered
    from ws4web import WebSocketServer
    from ws4web.pubsub import Hub
    from ws4web.pubsub.redis import RedisBackplane

    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--presence-ttl", type=float, default=3.0)
    parser.add_argument("--backoff-max", type=float, default=1.0)
    parser.add_argument("--max-queue-bytes", type=int, default=2**20)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(threadName)s %(message)s")

    backplane = RedisBackplane(
        args.redis,
        prefix=args.prefix,
        heartbeat=args.heartbeat,
        presence_ttl=args.presence_ttl,
        backoff_initial=0.05,
        backoff_max=args.backoff_max,
    )
    hub = Hub(backplane, max_queue=100000, max_queue_bytes=args.max_queue_bytes)
    server = WebSocketServer(make_hub_handler(hub), "127.0.0.1", 0, close_timeout=5.0).start()

    def answer(**fields: Any) -> None:
        sys.stdout.write(json.dumps(fields) + "\n")
        sys.stdout.flush()

    answer(port=server.port, origin=backplane.origin)
    try:
        for line in sys.stdin:
            command = json.loads(line)
            cmd = command["cmd"]
            if cmd == "status":
                answer(
                    ready=backplane.ready(),
                    prefix=args.prefix,
                    backplane=backplane.stats(),
                    hub=asdict(hub.stats()),
                    gaps=[asdict(gap) for gap in backplane.gaps],
                    outages=list(backplane.outages),
                    rss_kib=_rss_kib(),
                    hwm_kib=_rss_kib("VmHWM"),
                )
            elif cmd == "publish":
                for i in range(command["start"], command["start"] + command["count"]):
                    if command["size"]:
                        hub.publish(command["group"], numbered(i, command["size"]))
                    else:
                        hub.publish(command["group"], f"{command['tag']}:{i}")
                answer(ok=True)
            elif cmd == "presence":
                answer(names=hub.presence(command["group"]))
            elif cmd == "quit":
                break
    finally:
        server.shutdown(timeout=2.0)
        hub.close()
    answer(bye=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["node"]:
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        node_main(sys.argv[2:])
