"""The ASGI driver (ws4web/drivers/asgi.py) on a fake ASGI receive/send pair, on a real asyncio loop."""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from ws4web import WebSocket
from ws4web.drivers import Driver, Limits
from ws4web.drivers.asgi import (
    AWAIT,
    THREAD,
    THREADS,
    ASGIDriver,
    AsyncCallbacks,
    Plan,
    UnsupportedByASGI,
)
from ws4web.exceptions import ConnectionClosed, SendQueueFull
from ws4web.frames import Frame, Opcode
from ws4web.logs import ConnectionLog, new_id
from ws4web.messages import BinaryMessage, Message, TextMessage

TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(60)


class FakeServer:
    """``receive`` and ``send`` as an ASGI server hands them to an app, driven by the test.

    ``journal`` records, in order, each ``receive()`` call and each event sent; a
    cleared ``gate`` holds every ``send()`` (a peer that does not read).
    """

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.journal: list[str] = []
        self.receives = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.changed = asyncio.Event()
        #: what send() raises, once set: uvicorn raises ClientDisconnected once the peer's close came
        self.refuse: Exception | None = None

    async def receive(self) -> dict[str, Any]:
        self.receives += 1
        self.journal.append("receive")
        return await self.incoming.get()

    async def send(self, event: Any) -> None:
        await self.gate.wait()
        if self.refuse is not None:
            raise self.refuse
        self.sent.append(dict(event))
        if event["type"] == "websocket.send":
            self.journal.append(f"send {event.get('text', event.get('bytes'))!r}")
        self.changed.set()

    def message(self, data: str | bytes) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        self.incoming.put_nowait({"type": "websocket.receive", key: data})

    def disconnect(self, code: int = 1000, reason: str = "") -> None:
        self.incoming.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})

    def payloads(self) -> list[Any]:
        return [e.get("text", e.get("bytes")) for e in self.sent if e["type"] == "websocket.send"]

    def closes(self) -> list[tuple[Any, Any]]:
        return [(e.get("code"), e.get("reason")) for e in self.sent if e["type"] == "websocket.close"]

    async def until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        """Wait (on the loop) until ``predicate()`` holds."""
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.005)


class Connection:
    """A driver, its handler, the fake server and the task serving them."""

    def __init__(self, driver: ASGIDriver, handler: WebSocket, server: FakeServer, task: asyncio.Task[None]) -> None:
        self.driver = driver
        self.handler = handler
        self.server = server
        self.task = task

    async def ended(self) -> None:
        await asyncio.wait_for(asyncio.shield(self.task), TIMEOUT)


DEFAULTS = Limits()
NO_CALLBACKS = AsyncCallbacks()


async def serve(
    handler: WebSocket, plan: Plan, *, limits: Limits = DEFAULTS, callbacks: AsyncCallbacks = NO_CALLBACKS
) -> Connection:
    server = FakeServer()
    log = ConnectionLog(logging.getLogger("tests.asgi"), new_id())
    driver = ASGIDriver(server.receive, server.send, log, plan=plan, limits=limits, callbacks=callbacks)
    typed: Driver = driver  # the Driver contract, as mypy checks it in the door
    handler.bind(typed)
    await driver.accept()
    task = asyncio.get_running_loop().create_task(driver.serve())
    return Connection(driver, handler, server, task)


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run one test's coroutine on a fresh loop; no hook thread may be left running after it."""
    asyncio.run(asyncio.wait_for(coro(), TIMEOUT * 3))
    deadline = time.monotonic() + TIMEOUT
    while THREADS.busy and time.monotonic() < deadline:
        time.sleep(0.01)
    assert THREADS.busy == 0, "a hook thread is still running"


class Recorder(WebSocket):
    """Echoes, and notes each callback with the thread it ran in."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[str, int, Any]] = []

    def received_message(self, message: Message) -> None:
        self.calls.append(("message", threading.get_ident(), message.data))
        self.send(message)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.calls.append(("closed", threading.get_ident(), (code, reason)))


def names(handler: Recorder) -> list[str]:
    return [call[0] for call in handler.calls]


# -- inline callbacks ---------------------------------------------------------------------------------


def test_plain_callbacks_run_inline_and_reply_before_the_next_receive() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"))
        loop_thread = threading.get_ident()
        for data in ("a", b"b", "c"):
            conn.server.message(data)
        conn.server.disconnect(1000, "bye")
        await conn.ended()
        assert conn.server.payloads() == ["a", b"b", "c"]
        assert {thread for _, thread, _ in handler.calls} == {loop_thread}  # no thread hop
        assert handler.calls[-1] == ("closed", loop_thread, (1000, "bye"))
        # Each reply left before the next receive(): a peer that does not read is not read.
        assert conn.server.journal == ["receive", "send 'a'", "receive", "send b'b'", "receive", "send 'c'", "receive"]
        assert conn.driver.closed and conn.driver.close_code == 1000

    run(main)


def test_replies_from_threads_and_the_callback_keep_their_order() -> None:
    async def main() -> None:
        class Mixed(WebSocket):
            def received_message(self, message: Message) -> None:
                worker = threading.Thread(target=self.send, args=("from a thread",))
                worker.start()
                worker.join()  # queued first: it goes out first
                self.send("from the callback")

        conn = await serve(Mixed(), Plan("Mixed"))
        conn.server.message("go")
        await conn.server.until(lambda: len(conn.server.payloads()) == 2)
        assert conn.server.payloads() == ["from a thread", "from the callback"]
        conn.server.disconnect()
        await conn.ended()

    run(main)


def test_a_callback_that_raises_closes_with_1011_and_gets_nothing_more() -> None:
    async def main() -> None:
        class Fragile(Recorder):
            def received_message(self, message: Message) -> None:
                super().received_message(message)
                raise ValueError("boom")

        handler = Fragile()
        conn = await serve(handler, Plan("Fragile"))
        conn.server.message("one")
        conn.server.message("two")  # after the failure: not delivered
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.closes() == [(1011, "internal error")]
        conn.server.disconnect(1011)
        await conn.ended()
        assert names(handler) == ["message", "closed"]

    run(main)


def test_max_message_size_closes_with_1009_without_a_callback() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"), limits=Limits(max_message_size=4))
        conn.server.message(b"1234")
        conn.server.message("héllo")  # 6 bytes of UTF-8
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.closes() == [(1009, "message too big")]
        assert conn.server.payloads() == [b"1234"]
        conn.server.disconnect(1009)
        await conn.ended()

    run(main)


# -- threads: opened(), pull style, blocking classes ------------------------------------------------------


def test_plain_opened_runs_in_a_thread_then_callbacks_come_back_inline() -> None:
    async def main() -> None:
        release = threading.Event()

        class SlowStart(Recorder):
            def opened(self) -> None:
                self.calls.append(("opened", threading.get_ident(), None))
                release.wait(TIMEOUT)

        handler = SlowStart()
        conn = await serve(handler, Plan("SlowStart", open=THREAD))
        loop_thread = threading.get_ident()
        conn.server.message("early")  # arrives while opened() runs: waits for it
        await conn.server.until(lambda: conn.server.receives >= 2)
        assert names(handler) == ["opened"]
        release.set()
        await conn.server.until(lambda: conn.server.payloads() == ["early"])
        conn.server.message("later")
        await conn.server.until(lambda: conn.server.payloads() == ["early", "later"])
        conn.server.disconnect()
        await conn.ended()
        (opened, early, later, closed) = handler.calls
        assert opened[1] != loop_thread and early[1] == opened[1]  # opened() and what queued behind it: a thread
        assert later[1] == loop_thread and closed[1] == loop_thread  # then back on the loop

    run(main)


def test_pull_style_in_opened() -> None:
    async def main() -> None:
        seen: list[Any] = []

        class Pull(WebSocket):
            def opened(self) -> None:
                for message in self:
                    self.send(message.data[::-1])

            def closed(self, code: int, reason: str | None = None) -> None:
                seen.append(code)

        conn = await serve(Pull(), Plan("Pull", open=THREAD))
        for data in (b"abc", b"de"):
            conn.server.message(data)
        await conn.server.until(lambda: conn.server.payloads() == [b"cba", b"ed"])
        conn.server.disconnect(1000)
        await conn.ended()
        await conn.server.until(lambda: seen == [1000])

    run(main)


def test_recv_timeout_in_a_thread() -> None:
    async def main() -> None:
        outcome: list[str] = []

        class Waits(WebSocket):
            def opened(self) -> None:
                try:
                    self.recv(timeout=0.05)
                except TimeoutError:
                    outcome.append("timeout")
                outcome.append(str(self.recv(timeout=TIMEOUT)))

        conn = await serve(Waits(), Plan("Waits", open=THREAD))
        await conn.server.until(lambda: outcome == ["timeout"])
        conn.server.message("now")
        await conn.server.until(lambda: outcome == ["timeout", "now"])
        conn.server.disconnect()
        await conn.ended()

    run(main)


def test_a_callback_that_holds_the_loop_past_the_budget_moves_its_class_to_threads(
    caplog: pytest.LogCaptureFixture,
) -> None:
    plan = Plan("Sleepy", budget=0.02)

    async def main() -> None:
        class Sleepy(Recorder):
            def received_message(self, message: Message) -> None:
                if message.data == b"hold":
                    # Hold the loop thread until the watchdog notices (bounded).
                    deadline = time.monotonic() + TIMEOUT
                    while not plan.blocking and time.monotonic() < deadline:
                        time.sleep(0.01)
                super().received_message(message)

        handler = Sleepy()
        conn = await serve(handler, plan)
        loop_thread = threading.get_ident()
        conn.server.message("hold")
        conn.server.message("next")
        await conn.server.until(lambda: conn.server.payloads() == ["hold", "next"])
        conn.server.disconnect()
        await conn.ended()
        await conn.server.until(lambda: names(handler)[-1:] == ["closed"])  # delivered by a thread
        hold, after, closed = handler.calls
        assert hold[1] == loop_thread
        assert after[1] != loop_thread and closed[1] != loop_thread  # in threads from then on

    with caplog.at_level(logging.WARNING, logger="ws4web.drivers.asgi"):
        run(main)
    assert plan.blocking
    warnings = [r for r in caplog.records if r.name == "ws4web.drivers.asgi" and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert re.match(r"Sleepy held the event loop thread for over \d+ ms \(budget 20 ms\)", warnings[0].getMessage())


def test_recv_on_the_loop_thread_is_refused_and_moves_the_class() -> None:
    plan = Plan("Mixup")

    async def main() -> None:
        class Mixup(Recorder):
            def received_message(self, message: Message) -> None:
                if message.data == b"first":
                    self.recv(timeout=1)  # pull style inside a callback
                super().received_message(message)

        handler = Mixup()
        conn = await serve(handler, plan)
        conn.server.message("first")
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.closes() == [(1011, "internal error")]  # the RuntimeError is a handler error
        conn.server.disconnect(1011)
        await conn.ended()

    run(main)
    assert plan.blocking


def test_wait_closed_on_the_loop_thread_from_a_coroutine_is_refused() -> None:
    async def main() -> None:
        conn = await serve(WebSocket(), Plan("Plain"))
        with pytest.raises(RuntimeError, match="would block the event loop"):
            conn.driver.wait_closed(0.1)
        with pytest.raises(RuntimeError, match="would block the event loop"):
            conn.driver.recv_message(0.1)
        conn.server.disconnect()
        await conn.ended()
        assert conn.driver.wait_closed(0)  # closed: answered at once

    run(main)


# -- async callbacks ------------------------------------------------------------------------------------------


def test_async_callbacks_are_awaited_on_the_loop() -> None:
    async def main() -> None:
        events: list[Any] = []

        class Async(WebSocket):
            async def opened(self) -> None:  # type: ignore[override]
                events.append(("opened", threading.get_ident()))
                await self.asend("hello")

            async def received_message(self, message: Message) -> None:  # type: ignore[override]
                if message.data == b"fail":
                    raise KeyError("fail")
                self.send("queued " + str(message))  # from the loop: queued, in order
                await self.asend(message)

            async def closed(self, code: int, reason: str | None = None) -> None:  # type: ignore[override]
                events.append(("closed", code))

        handler = Async()
        callbacks = AsyncCallbacks(
            opened=handler.opened, received_message=handler.received_message, closed=handler.closed
        )
        conn = await serve(handler, Plan("Async", open=AWAIT, message=AWAIT, close=AWAIT), callbacks=callbacks)
        conn.server.message("x")
        conn.server.message("fail")
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.payloads() == ["hello", "queued x", "x"]
        assert conn.server.closes() == [(1011, "internal error")]
        conn.server.disconnect(1011)
        await conn.ended()
        assert events == [("opened", threading.get_ident()), ("closed", 1011)]

    run(main)


def test_aclose_from_a_callback_reads_to_the_end_itself() -> None:
    async def main() -> None:
        done: list[int] = []

        class Closer(WebSocket):
            async def received_message(self, message: Message) -> None:  # type: ignore[override]
                await self.aclose(4000, "done")
                done.append(self.close_code)

        handler = Closer()
        conn = await serve(
            handler, Plan("Closer", message=AWAIT), callbacks=AsyncCallbacks(received_message=handler.received_message)
        )
        conn.server.message("bye")
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.closes() == [(4000, "done")]
        conn.server.disconnect(4000, "done")
        await conn.ended()
        assert done == [4000]

    run(main)


# -- bounds ----------------------------------------------------------------------------------------------------


def test_a_busy_handler_stops_the_reading_at_max_queue() -> None:
    async def main() -> None:
        entered = threading.Event()
        release = threading.Event()
        got: list[bytes] = []

        class Busy(WebSocket):
            def received_message(self, message: Message) -> None:
                entered.set()
                release.wait(TIMEOUT)
                got.append(message.data)

        plan = Plan("Busy", blocking=True)  # its callbacks run in threads
        conn = await serve(Busy(), plan, limits=Limits(max_queue=4))
        for i in range(200):  # a flood
            conn.server.message(b"%d" % i)
        await conn.server.until(entered.is_set)
        await conn.server.until(lambda: conn.server.receives >= 4)
        await asyncio.sleep(0.2)
        # One message in the callback and at most four queued: then no receive() until there is room.
        assert 4 <= conn.server.receives <= 5
        release.set()
        await conn.server.until(lambda: len(got) == 200)
        assert got == [b"%d" % i for i in range(200)]  # nothing accepted is lost
        conn.server.disconnect()
        await conn.ended()

    run(main)


def test_send_buffer_bounds_every_kind_of_sender() -> None:
    async def main() -> None:
        limits = Limits(max_send_buffer=4096)
        conn = await serve(WebSocket(), Plan("Plain"), limits=limits)
        driver = conn.driver
        conn.server.gate.clear()  # the peer reads nothing
        loop = asyncio.get_running_loop()

        # A thread sender waits once past the bound.
        sent_by_thread: list[int] = []

        def flood() -> None:
            for i in range(20):
                driver.send_message(bytes(1024))
                sent_by_thread.append(i)

        thread_task = loop.run_in_executor(None, flood)
        await conn.server.until(lambda: len(sent_by_thread) >= 3)
        await asyncio.sleep(0.1)
        assert len(sent_by_thread) < 20
        assert driver.buffered_amount <= 4096 + 1024

        # A sender on the loop, outside a callback, cannot wait: it is refused.
        with pytest.raises(SendQueueFull):
            driver.send_message(b"x")
        # asend() waits for room.
        asend = loop.create_task(driver.asend(b"awaited"))
        await asyncio.sleep(0.05)
        assert not asend.done()

        conn.server.gate.set()
        await asyncio.wait_for(thread_task, TIMEOUT)
        await asyncio.wait_for(asend, TIMEOUT)
        assert conn.server.payloads().count(b"awaited") == 1
        assert len(conn.server.payloads()) == 21  # nothing accepted is lost
        conn.server.disconnect()
        await conn.ended()

    run(main)


# -- closing ---------------------------------------------------------------------------------------------------


def test_close_then_send_raises_and_the_disconnect_ends_it() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"))
        handler.close(4001, "see you")
        with pytest.raises(ConnectionClosed):
            handler.send("too late")
        with pytest.raises(ValueError):
            handler.close(1006)  # RFC 6455 §7.4.1: never sent
        await conn.server.until(lambda: bool(conn.server.closes()))
        assert conn.server.closes() == [(4001, "see you")]
        conn.server.message("ignored after our close")
        conn.server.disconnect(4001, "see you")
        await conn.ended()
        assert handler.calls == [("closed", threading.get_ident(), (4001, "see you"))]

    run(main)


def test_a_refused_send_waits_for_the_disconnect_and_its_code() -> None:
    """The peer's close came in right behind a message: the server refuses the echo, and the
    disconnect it reports next carries the peer's code, which closed() gets (not 1006)."""

    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"))
        conn.server.refuse = OSError("client disconnected")
        conn.server.message("last words")
        await conn.server.until(lambda: conn.server.receives == 2)  # the echo failed, the task reads on
        with pytest.raises(ConnectionClosed):
            handler.send("nothing more goes out")
        conn.server.disconnect(4000, "right behind")
        await conn.ended()
        assert handler.calls[-1] == ("closed", threading.get_ident(), (4000, "right behind"))
        assert conn.driver.close_code == 4000

    run(main)


def test_a_refused_send_and_no_disconnect_ends_at_the_close_timeout() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"), limits=Limits(close_timeout=0.1))
        conn.server.refuse = OSError("client disconnected")
        conn.server.message("last words")
        await conn.ended()  # the server never reports the disconnect: we stop waiting
        assert conn.driver.close_code == 1006
        assert names(handler) == ["message", "closed"]

    run(main)


def test_close_timeout_when_the_end_never_comes() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"), limits=Limits(close_timeout=0.1))
        handler.close()
        await conn.ended()  # the server never reports the disconnect: we stop waiting
        assert conn.driver.close_code == 1006
        assert names(handler) == ["closed"]

    run(main)


def test_terminate_from_a_thread_ends_the_connection() -> None:
    async def main() -> None:
        class Quit(Recorder):
            def opened(self) -> None:
                self.terminate()

        handler = Quit()
        conn = await serve(handler, Plan("Quit", open=THREAD))
        await conn.ended()
        await conn.server.until(lambda: names(handler) == ["closed"])
        assert handler.calls[0][2] == (1006, "")
        assert conn.server.closes() == []  # no close of ours: the server ends it its own way

    run(main)


def test_the_server_cancelling_the_app_still_delivers_closed() -> None:
    async def main() -> None:
        handler = Recorder()
        conn = await serve(handler, Plan("Recorder"))
        conn.server.message("one")
        await conn.server.until(lambda: conn.server.payloads() == ["one"])
        conn.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await conn.task
        await conn.server.until(lambda: names(handler) == ["message", "closed"])
        assert handler.calls[-1][2] == (1006, "")

    run(main)


# -- what ASGI cannot carry ----------------------------------------------------------------------------------


def test_frames_and_pings_are_unsupported() -> None:
    async def main() -> None:
        conn = await serve(WebSocket(), Plan("Plain"))
        driver = conn.driver
        operations: list[Callable[[], object]] = [
            lambda: driver.ping(b"x"),
            lambda: driver.pong(b"x"),
            lambda: driver.send_frame(Frame(Opcode.TEXT, b"x")),
            lambda: driver.recv_frame(1),
            lambda: driver.start_keepalive(1.0),
        ]
        for operation in operations:
            with pytest.raises(UnsupportedByASGI, match=r"^ws4web ASGI adapter: "):
                operation()
        with pytest.raises(RuntimeError):
            driver.start()
        conn.server.disconnect()
        await conn.ended()

    run(main)


def test_fragments_are_joined_and_messages_keep_their_type() -> None:
    async def main() -> None:
        conn = await serve(WebSocket(), Plan("Plain"))
        driver = conn.driver
        driver.send_fragments(iter(["ab", "c"]))
        driver.send_fragments(iter([b"\x01", b"\x02"]))
        driver.send_message(TextMessage("t"))
        driver.send_message(BinaryMessage(b"b"))
        driver.send_message(b"as text", binary=False)
        driver.send_message("as bytes", binary=True)
        await conn.server.until(lambda: len(conn.server.payloads()) == 6)
        assert conn.server.payloads() == ["abc", b"\x01\x02", "t", b"b", "as text", b"as bytes"]
        conn.server.disconnect()
        await conn.ended()

    run(main)


def test_no_watchdog_thread_outlives_the_connections() -> None:
    def watchdogs() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "ws4web-asgi-watchdog"]

    async def main() -> None:
        conn = await serve(Recorder(), Plan("Recorder"))
        conn.server.message("x")
        await conn.server.until(lambda: conn.server.payloads() == ["x"])
        assert watchdogs()  # one watches the loop while it has connections
        conn.server.disconnect()
        await conn.ended()

    run(main)
    deadline = time.monotonic() + TIMEOUT
    while watchdogs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not watchdogs()  # an idle process holds no watchdog thread
