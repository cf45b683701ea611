"""The reactor (ws4web/reactor.py): inline handlers, promotion past a slow handler, following, timers, shutdown.

Connections run over socketpairs: the server side is a reactor-driven WebSocket,
the client side a blocking ws4web WebSocket.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ws4web import CLIENT, SERVER, WebSocket
from ws4web.messages import Message
from ws4web.reactor import Reactor, ReactorConnection

from .conftest import TIMEOUT, CountingSocket, RawPeer, encode_frame, wait_until

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]


@pytest.fixture
def make_reactor() -> Iterator[Callable[..., Reactor]]:
    started: list[Reactor] = []

    def factory(**options: Any) -> Reactor:
        reactor = Reactor(**options).start()
        started.append(reactor)
        return reactor

    yield factory
    for reactor in started:
        reactor.stop(TIMEOUT)


class Pair:
    """A reactor-driven server WebSocket of class ``handler`` and a blocking client, over a socketpair."""

    def __init__(self, reactor: Reactor, handler: type[WebSocket], **options: Any) -> None:
        a, b = socket.socketpair()
        self.server = handler(a, side=SERVER, reactor=reactor, close_timeout=2.0, **options)
        self.client = WebSocket(b, side=CLIENT, close_timeout=2.0)
        self.server.start()

    def close(self) -> None:
        self.client.terminate()
        assert self.server.connection.wait_closed(TIMEOUT)


@pytest.fixture
def pairs() -> Iterator[Callable[..., Pair]]:
    made: list[Pair] = []

    def factory(reactor: Reactor, handler: type[WebSocket], **options: Any) -> Pair:
        pair = Pair(reactor, handler, **options)
        made.append(pair)
        return pair

    yield factory
    for pair in made:
        pair.close()


class Where(WebSocket):
    """Echoes, prefixed with the name of the thread that ran the callback."""

    def received_message(self, message: Message) -> None:
        self.send(f"{threading.current_thread().name}:{bytes(message.data).decode()}")


class Gated(WebSocket):
    """A handler that blocks on "block" until the test opens the gate; echoes everything."""

    gate = threading.Event()
    blocked = threading.Event()

    def received_message(self, message: Message) -> None:
        if message.data == b"block":
            Gated.blocked.set()
            assert Gated.gate.wait(TIMEOUT)
        self.send(message)


@pytest.fixture
def gated() -> Iterator[type[Gated]]:
    Gated.gate = threading.Event()
    Gated.blocked = threading.Event()
    yield Gated
    Gated.gate.set()


def test_call_soon_and_timers_run_in_the_loop(make_reactor: Callable[..., Reactor]) -> None:
    reactor = make_reactor()
    seen: list[tuple[str, bool]] = []
    done = threading.Event()

    def later() -> None:
        timer = reactor.call_later(0.01, lambda: (seen.append(("late", reactor.in_loop)), done.set()))
        cancelled = reactor.call_later(0.0, lambda: seen.append(("cancelled", True)))
        cancelled.cancel()
        assert timer is not cancelled

    reactor.call_soon(lambda: seen.append(("soon", reactor.in_loop)))
    reactor.call_soon(later)
    assert done.wait(TIMEOUT)
    assert seen == [("soon", True), ("late", True)]
    assert not reactor.in_loop  # this thread is not the loop


def test_fast_handlers_run_inline_in_the_loop_thread(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]
) -> None:
    reactor = make_reactor(name="loop", inline=True)
    pair = pairs(reactor, Where)
    for i in range(20):
        pair.client.send(str(i))
        assert pair.client.recv(TIMEOUT).data == f"loop:{i}".encode()
    assert reactor.promotions == 0


def test_without_inline_handlers_run_on_workers(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]
) -> None:
    reactor = make_reactor(name="loop", inline=False, follow=0)
    pair = pairs(reactor, Where)
    pair.client.send("x")
    assert pair.client.recv(TIMEOUT).data.startswith(b"ws4web-worker")


def test_a_slow_inline_handler_hands_the_loop_over(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair], gated: type[Gated]
) -> None:
    reactor = make_reactor(inline=True, handler_budget=0.01)
    slow, other = pairs(reactor, gated), pairs(reactor, gated)
    slow.client.send("block")
    assert gated.blocked.wait(TIMEOUT)
    # The blocked handler holds its thread; the other connection is still served.
    # Without the hand-over this echo could not come back before the gate opens.
    other.client.send("still served")
    assert other.client.recv(TIMEOUT).data == b"still served"
    assert reactor.promotions >= 1 and reactor.demoted == 1
    # Messages for the blocked connection queue up in order behind the slow one.
    for text in ("after-1", "after-2"):
        slow.client.send(text)
    gated.gate.set()
    assert [slow.client.recv(TIMEOUT).data for _ in range(3)] == [b"block", b"after-1", b"after-2"]
    assert wait_until(lambda: reactor.demoted == 0)  # the old loop thread is gone
    other.client.send("and again")
    assert other.client.recv(TIMEOUT).data == b"and again"


class Flood(WebSocket):
    """On "flood", sends 8 MiB to a peer that does not read."""

    sent = threading.Event()

    def received_message(self, message: Message) -> None:
        if message.data == b"flood":
            for _ in range(128):
                self.send(b"\0" * 65536)
            Flood.sent.set()
        else:
            self.send(message)


def test_an_inline_handler_waiting_for_a_slow_reader_leaves_the_loop(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]
) -> None:
    Flood.sent = threading.Event()
    reactor = make_reactor(inline=True, handler_budget=10.0)  # no watchdog help: the handler must leave by itself
    stuck, other = pairs(reactor, Flood), pairs(reactor, Flood)
    stuck.client.send("flood")  # its client does not read for now
    assert wait_until(lambda: reactor.demoted == 1)
    other.client.send("hello")
    assert other.client.recv(TIMEOUT).data == b"hello"
    assert not Flood.sent.is_set()  # still waiting for the peer to read
    connection = stuck.server.connection
    assert isinstance(connection, ReactorConnection)
    assert connection.buffered_amount <= connection.max_send_buffer + 65536 + 14
    for _ in range(128):
        assert len(stuck.client.recv(TIMEOUT).data) == 65536
    assert Flood.sent.wait(TIMEOUT)


class Count(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


def count_loop_reads(reactor: Reactor) -> list[int]:
    """Count the reads the loop thread makes from now on (in a one-element list)."""
    loop_reads = [0]
    recv_into = reactor.recv_into

    def counting(sock: Any) -> Any:
        loop_reads[0] += 1
        return recv_into(sock)

    reactor.recv_into = counting  # type: ignore[method-assign]
    return loop_reads


def round_trips(pair: Pair, count: int) -> None:
    for i in range(count):
        pair.client.send(str(i))
        assert pair.client.recv(TIMEOUT).data == str(i).encode()


def test_following_reads_without_the_loop(make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]) -> None:
    reactor = make_reactor(inline=False, follow=1.0)
    loop_reads = count_loop_reads(reactor)
    pair = pairs(reactor, Count)
    round_trips(pair, 200)
    # The worker that ran the handler read the next message itself, every time.
    assert loop_reads[0] < 10
    # And it lets go: the peer closes while a worker follows; nothing hangs.
    pair.client.close()
    assert pair.server.connection.wait_closed(TIMEOUT)
    assert pair.server.close_code == 1000
    assert wait_until(lambda: reactor.followers == 0)


def test_without_following_the_loop_reads_every_message(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]
) -> None:
    reactor = make_reactor(inline=False, follow=0)
    loop_reads = count_loop_reads(reactor)
    pair = pairs(reactor, Count)
    round_trips(pair, 50)
    assert loop_reads[0] >= 50


def test_a_follower_gives_the_socket_back_when_idle(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair]
) -> None:
    reactor = make_reactor(inline=False, follow=0.01)
    pair = pairs(reactor, Count)
    pair.client.send("one")
    assert pair.client.recv(TIMEOUT).data == b"one"
    assert wait_until(lambda: reactor.followers == 0)  # linger over: back to the loop
    pair.client.send("two")  # read by the loop again
    assert pair.client.recv(TIMEOUT).data == b"two"


def test_stop_returns_while_a_handler_is_stuck(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair], gated: type[Gated]
) -> None:
    reactor = Reactor(inline=True, handler_budget=0.01).start()
    pair = Pair(reactor, gated)
    try:
        pair.client.send("block")
        assert gated.blocked.wait(TIMEOUT)
        assert wait_until(lambda: reactor.promotions >= 1)
        reactor.stop(TIMEOUT)  # the current loop thread stops; the stuck one is not waited for
        assert pair.server.connection.closed
    finally:
        gated.gate.set()
        pair.client.terminate()
    assert wait_until(lambda: reactor.demoted == 0)


def test_by_default_handlers_run_on_workers_that_follow(
    make_reactor: Callable[..., Reactor], pairs: Callable[..., Pair], gated: type[Gated]
) -> None:
    reactor = make_reactor(name="loop")
    assert not reactor.inline and reactor.follow > 0
    slow, other = pairs(reactor, gated), pairs(reactor, Where)
    slow.client.send("block")
    assert gated.blocked.wait(TIMEOUT)
    other.client.send("x")  # a blocked handler holds a worker, not the loop
    assert other.client.recv(TIMEOUT).data.endswith(b":x")
    gated.gate.set()
    assert slow.client.recv(TIMEOUT).data == b"block"


def test_replies_to_a_burst_are_written_together(make_reactor: Callable[..., Reactor]) -> None:
    reactor = make_reactor()
    a, b = socket.socketpair()
    counting = CountingSocket(a)
    server = Count(counting, side=SERVER, reactor=reactor, close_timeout=2.0)
    server.start()
    try:
        b.sendall(b"".join(encode_frame(0x1, str(i).encode()) for i in range(50)))
        peer = RawPeer(b)
        assert [peer.read_frame().payload for _ in range(50)] == [str(i).encode() for i in range(50)]
        # Fifty messages arrived in one read: their replies left in a few writes, not fifty.
        assert counting.writes <= 5
    finally:
        b.close()
        assert server.connection.wait_closed(TIMEOUT)
