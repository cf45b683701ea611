"""Fan-out benchmark: one group of N local subscribers, messages/s delivered by the pub/sub hub vs a naive send() loop.

    python bench/fanout.py                         # 1000 subscribers, 100 messages of 64 bytes per round
    python bench/fanout.py --redis redis://127.0.0.1:6379/0 --rounds 3
    python bench/fanout.py --subscribers 200 --messages 50 --size 1024

This process runs a ws4web WebSocketServer (the selector loop) whose handler joins the
group "bench"; a client process opens the N connections and counts the bytes
arriving on all of them (frames are all the same size, so bytes give messages)
and reports the monotonic time at which the last expected byte arrived.

Modes, each timed from the first publish to that last byte:

* ``naive``    — ``for ws in members: ws.send(message)``: one serialization and one
  write per member, in the publishing thread;
* ``hub``      — ``Hub().publish("bench", message)``: framed once, the same bytes
  written to each member in the publishing thread (queued for a member whose buffer
  is full, and written when it drains);
* ``redis``    — a second Hub in this process publishes through a RedisBackplane;
  the subscribers' hub gets it from Redis and fans it out (needs ``redis`` and a
  server: ``--redis URL``, or redis-server on PATH to start a throwaway one).

Also reported: the latency of one lone message, from publish until the last of the
N subscribers has it. Numbers are medians over ``--rounds``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUP = "bench"


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))


# -- the client process ----------------------------------------------------------------------


def clients_main(port: int, count: int) -> None:
    """Open ``count`` WebSockets; on "expect <bytes>" count bytes until that many came, then say "done <t>"."""
    from ws4web.upgrade import client_handshake

    _raise_fd_limit(count + 64)
    socks = []
    for _ in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
        client_handshake(sock, f"127.0.0.1:{port}", f"/{GROUP}", timeout=10.0)
        sock.setblocking(False)
        socks.append(sock)
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)
    buffer = bytearray(1 << 20)
    print("ready", flush=True)
    for line in sys.stdin:
        word, _, value = line.partition(" ")
        if word != "expect":
            break
        expected, received = int(value), 0
        deadline = time.monotonic() + 300.0
        while received < expected and time.monotonic() < deadline:
            for key, _ in selector.select(1.0):
                try:
                    received += key.fileobj.recv_into(buffer)  # type: ignore[union-attr]
                except BlockingIOError:
                    pass
        print(f"done {time.monotonic()!r} {received}", flush=True)
    for sock in socks:
        sock.close()


# -- the server side ------------------------------------------------------------------------------


class Clients:
    """The client process, seen from here."""

    def __init__(self, port: int, count: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__, "clients", "--port", str(port), "--subscribers", str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"client process failed: {line!r}")

    def expect(self, total: int) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(f"expect {total}\n")
        self.process.stdin.flush()

    def done(self) -> tuple[float, int]:
        assert self.process.stdout is not None
        _, when, received = self.process.stdout.readline().split()
        return float(when), int(received)

    def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(30)


def frame_size(size: int) -> int:
    return size + (2 if size < 126 else 4 if size < 65536 else 10)


def run_mode(publish: Callable[[bytes], None], clients: Clients, subscribers: int, messages: int, size: int) -> float:
    """Publish ``messages`` and return deliveries per second (messages x subscribers / seconds)."""
    payload = b"x" * size
    clients.expect(messages * subscribers * frame_size(size))
    start = time.monotonic()
    for _ in range(messages):
        publish(payload)
    end, received = clients.done()
    if received < messages * subscribers * frame_size(size):
        raise RuntimeError(f"only {received} bytes arrived")
    return messages * subscribers / (end - start)


def latency(publish: Callable[[bytes], None], clients: Clients, subscribers: int, size: int) -> float:
    """Seconds from publishing one message to the last subscriber having it."""
    clients.expect(subscribers * frame_size(size))
    start = time.monotonic()
    publish(b"y" * size)
    end, _ = clients.done()
    return end - start


@contextlib.contextmanager
def redis_url(url: str | None) -> Iterator[str | None]:
    if url is not None:
        yield url
        return
    server = shutil.which("redis-server")
    if server is None:
        yield None
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("role", nargs="?", default="bench", choices=["bench", "clients"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--modes", default="naive,hub,redis")
    args = parser.parse_args()
    if args.role == "clients":
        clients_main(args.port, args.subscribers)
        return

    from ws4web import WebSocket, WebSocketServer
    from ws4web.pubsub import Hub

    _raise_fd_limit(args.subscribers + 256)
    modes = args.modes.split(",")
    with redis_url(args.redis if "redis" in modes else "unused") as url:
        if "redis" in modes and url is None:
            print("redis: skipped (no --redis URL and no redis-server on PATH)")
            modes.remove("redis")
        members_hub = Hub(max_queue=100000, max_queue_bytes=64 * 2**20)
        hubs: list[Any] = [members_hub]
        if "redis" in modes:
            from ws4web.pubsub.redis import RedisBackplane

            # The subscribers also join a second hub whose backplane is Redis; a third
            # hub, with no members, publishes into Redis.
            prefix = f"fanout{os.getpid()}"
            redis_members_hub = Hub(RedisBackplane(url, prefix=prefix), max_queue=100000, max_queue_bytes=64 * 2**20)
            publisher_hub = Hub(RedisBackplane(url, prefix=prefix))
            hubs += [redis_members_hub, publisher_hub]

        class Subscriber(WebSocket):
            def opened(self) -> None:
                for hub in hubs[:2]:
                    hub.join(GROUP, self)

        server = WebSocketServer(Subscriber, "127.0.0.1", 0, backlog=4096)
        server.start()
        clients = Clients(server.port, args.subscribers)
        try:
            deadline = time.monotonic() + 60
            while any(len(hub.members(GROUP)) < args.subscribers for hub in hubs[:2]):
                if time.monotonic() > deadline:
                    raise RuntimeError("the subscribers did not all join")
                time.sleep(0.05)
            if "redis" in modes:
                backplane = redis_members_hub.backplane
                if not backplane.wait_ready(30.0):  # type: ignore[attr-defined]
                    raise RuntimeError("the Redis backplane did not get ready")

            def naive(payload: bytes) -> None:
                for ws in members_hub.members(GROUP):
                    ws.send(payload)

            publishers: dict[str, Callable[[bytes], None]] = {
                "naive": naive,
                "hub": lambda payload: members_hub.publish(GROUP, payload),
            }
            if "redis" in modes:
                publishers["redis"] = lambda payload: publisher_hub.publish(GROUP, payload)
            rates: dict[str, list[float]] = {mode: [] for mode in modes}
            latencies: dict[str, list[float]] = {mode: [] for mode in modes}
            for _ in range(args.rounds):
                for mode in modes:
                    latencies[mode].append(latency(publishers[mode], clients, args.subscribers, args.size))
                    rates[mode].append(run_mode(publishers[mode], clients, args.subscribers, args.messages, args.size))
        finally:
            clients.close()
            server.shutdown(timeout=5.0)
            for hub in hubs:
                hub.close()

    print(
        f"\nFan-out to {args.subscribers} subscribers, {args.messages} messages of {args.size} bytes per round, "
        f"{args.rounds} round(s), medians; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n"
    )
    print("| mode | deliveries/s | publishes/s | one message to all, ms |")
    print("|---|---|---|---|")
    for mode in modes:
        rate = statistics.median(rates[mode])
        one = statistics.median(latencies[mode]) * 1000
        print(f"| {mode} | {rate:,.0f} | {rate / args.subscribers:,.1f} | {one:.1f} |")


if __name__ == "__main__":
    main()
