"""The ASGI adapter: ws4web handlers, unchanged, under uvicorn, hypercorn or Starlette.

Under ASGI the server owns the socket and the framing; this module maps the ASGI
``websocket.*`` messages onto the handler API, so a ``class Chat(ws4web.WebSocket)``
written for the threaded server runs as it is::

    from ws4web.adapters.asgi import WebSocketASGIApp
    app = WebSocketASGIApp(Chat, protocols=["chat"])      # uvicorn module:app

    from ws4web.adapters.asgi import websocket_route       # or inside Starlette
    routes = [websocket_route("/chat", Chat)]

    from ws4web.adapters.asgi import WebSocketMiddleware   # or around any ASGI app
    app = WebSocketMiddleware(django_or_fastapi_app, {"/ws": Chat, "/feed": Feed})

Threads and the event loop
    A handler whose callbacks are plain ``def`` runs :meth:`WebSocket.run` in a
    thread of its own, so a slow callback never blocks the event loop. Its
    ``send()``/``close()`` hand the work to the loop and wait for it; received
    messages come to it through a thread-safe queue, and the next one is asked of
    the server only when the handler wants it (backpressure, and the order of a
    plain ASGI loop). If any of ``opened``,
    ``received_message``, ``ponged``, ``closed`` is ``async def``, the callback
    loop runs on the event loop instead: ``async`` callbacks are awaited there,
    plain ones go to the loop's default executor. From the loop thread,
    ``self.send()`` and ``self.close()`` never block: they queue the work in
    order and return (an error shows up later, in the log); ``await
    self.connection.asend(data)`` / ``aclose()`` / ``arecv()`` wait for it and
    raise errors where they happen.

Capabilities (what ASGI can carry, and what happens to the rest)

    =====================================  =================================================
    handler feature                        under ASGI
    =====================================  =================================================
    send / receive text and binary         yes (``websocket.send`` / ``websocket.receive``)
    subprotocol (``protocols=``)           yes, chosen from ``scope["subprotocols"]``
    refuse with any status and body        yes with ``websocket.http.response``; else the
                                           server answers 403 (close before accept)
    close(code, reason)                    yes (``websocket.close``)
    close code and reason received         as the server reports them in
                                           ``websocket.disconnect`` (servers differ)
    ``max_message_size``                   yes, enforced here (close 1009)
    ``close_timeout``                      yes, bounds the wait for the disconnect
    send a generator (fragments)           joined into ONE message, sent when the
                                           iterable is exhausted (no streaming)
    ``terminate()`` (drop TCP)             approximated: the app ends without a close
                                           frame; uvicorn drops TCP, hypercorn sends 1011
    ping(data) / latency, pong()           no: ``UnsupportedByASGI`` (servers send their
                                           own keepalive pings)
    ``ponged()``, ``on_ping``              never called (pongs do not reach the app)
    send_frame / recv_frame (raw frames)   no: ``UnsupportedByASGI``
    ``extensions=`` (permessage-deflate)   no: ``UnsupportedByASGI`` at construction
                                           (the server negotiates compression)
    ``ping_interval``, ``ping_timeout``    no: ``UnsupportedByASGI`` at construction
    ``heartbeat_freq``, ``reactor``        no: ``UnsupportedByASGI`` at construction
    ``max_frame_size``                     no: ``UnsupportedByASGI`` at construction
    =====================================  =================================================

Shutdown
    uvicorn closes open WebSockets with 1012 (Service Restart) when it stops, and
    hypercorn cancels them after its graceful timeout. For 1001 (Going Away),
    close them first: :func:`uvicorn_server` builds a ``uvicorn.Server`` that does,
    and :func:`hypercorn_shutdown_trigger` wraps hypercorn's ``shutdown_trigger``;
    both call :func:`close_all`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, MutableMapping, Sequence
from typing import Any, TypeVar

from ..auth import Authenticator, check_origin
from ..concurrency import THREADING
from ..exceptions import ConnectionClosed, ConnectionClosedError, InvalidHandshake, NegotiationError, closed_exception
from ..frames import Close, CloseCode, Frame, Opcode
from ..handshake import SubprotocolSelector, check_request, reject
from ..http11 import Headers, Request, Response
from ..logs import ConnectionLog, format_peer, new_id
from ..messages import BinaryMessage, Data, Message, TextMessage, iter_fragments
from ..protocol import State
from ..websocket import WebSocket

__all__ = [
    "ASGIConnection",
    "UnsupportedByASGI",
    "WebSocketASGIApp",
    "WebSocketMiddleware",
    "close_all",
    "hypercorn_shutdown_trigger",
    "uvicorn_server",
    "websocket_route",
]

logger = logging.getLogger("ws4web.adapters.asgi")

Scope = MutableMapping[str, Any]
Event = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Event]]
Send = Callable[[Event], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: ``process_request(request)`` returns a Response to refuse with, or None; it may
#: raise InvalidHandshake; it may be ``async def`` (a plain one runs in a thread).
ProcessRequest = Callable[[Request], "Response | Awaitable[Response | None] | None"]

T = TypeVar("T")

_CALLBACKS = ("opened", "received_message", "ponged", "closed")
_HTTP_RESPONSE = "websocket.http.response"


class UnsupportedByASGI(NotImplementedError):
    """A handler feature that ASGI cannot carry (see the capability table above)."""

    def __init__(self, feature: str, hint: str = "") -> None:
        text = f"ws4web ASGI adapter: {feature} cannot be carried over ASGI"
        super().__init__(f"{text}; {hint}" if hint else text)
        self.feature = feature


class _EndOfStream:
    """Queued after the last message: the connection is closed."""


_EOF = _EndOfStream()


class ASGIConnection:
    """The :class:`~ws4web.connection.Connection` interface over one ASGI WebSocket.

    Created on the event loop by :class:`WebSocketASGIApp`. Two tasks do the
    I/O: the pump reads ``receive()`` and queues messages for whichever thread or
    coroutine asks; the writer takes sends from one queue, in the order they
    were made (from threads or from the loop), and awaits ``send()`` for each.
    """

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        *,
        subprotocol: str | None = None,
        max_message_size: int | None = 2**20,
        close_timeout: float | None = 10.0,
    ) -> None:
        self.scope = scope
        self.subprotocol = subprotocol
        self.max_message_size = max_message_size
        self.close_timeout = close_timeout
        self.on_ping: Any = None  # never called: ASGI does not deliver control frames
        self.on_pong: Any = None
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._receive = receive
        self._send = send
        self._state = State.CONNECTING
        self._close_code: int = CloseCode.ABNORMAL_CLOSURE
        self._close_reason = ""
        self._sent_code: int | None = None
        # Loop -> consumers. The deque is shared with threads, so it is guarded by
        # the condition; its lock is only ever held for an append or a pop.
        self._inbox: deque[Message | _EndOfStream] = deque()
        self._cond = threading.Condition()
        self._recv_lock = threading.Lock()  # one thread reader at a time, as in Connection
        self._arrived = asyncio.Event()
        # Set while a consumer waits for a message: only then does the pump call
        # receive(), as a plain ASGI loop would. So the server reads the next frame
        # only after the handler is done with the previous message (its reply is
        # out first), and a slow handler slows the client down (backpressure).
        self._wanted = asyncio.Event()
        # Senders -> the writer (loop thread only). A future per send that someone waits for.
        self._outbox: deque[tuple[Event, asyncio.Future[None] | None]] = deque()
        self._wake_writer = asyncio.Event()
        self._writing = False  # a send() is in progress (the writer's or a direct one)
        self._closed_async = asyncio.Event()
        self._closed_thread = threading.Event()
        self._close_timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        peer = format_peer(tuple(scope["client"]) if scope.get("client") else None)
        self._log = ConnectionLog(logger, new_id(), peer)
        self._handler: Any = None

    @property
    def log(self) -> ConnectionLog:
        return self._log

    @property
    def id(self) -> str:
        return self._log.conn_id

    @property
    def buffered_amount(self) -> int:
        return 0

    def attach(self, handler: Any) -> None:
        self._handler = handler

    def start(self) -> None:
        raise UnsupportedByASGI("start()", "the adapter runs the handler itself")

    def run(self) -> None:
        """The callback loop, in the calling thread (the adapter's handler thread)."""
        handler = self._handler
        try:
            if handler.handle_open():
                while handler.handle_message(self.recv_message()):
                    pass
        except ConnectionClosed:
            pass
        finally:
            handler.handle_close()

    def send_prepared(self, message: Frame, wire: bytes) -> None:
        self.send_message(message.data, message.opcode is Opcode.BINARY)

    def wait_closed_sync(self, timeout: float | None = None) -> bool:
        return self._closed_thread.wait(timeout)

    # -- state -----------------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def closed(self) -> bool:
        """True once the server reported the disconnect (or the close timed out)."""
        return self._state is State.CLOSED

    @property
    def close_code(self) -> int:
        """The code of ``websocket.disconnect``; 1006 when there was none."""
        return self._close_code

    @property
    def close_reason(self) -> str:
        return self._close_reason

    def wait_closed(self, timeout: float | None = None) -> bool:
        return self._closed_thread.wait(timeout)

    async def wait_closed_async(self) -> None:
        await self._closed_async.wait()

    # -- sending -----------------------------------------------------------------

    def send_message(self, data: Data, binary: bool | None = None, *, compress: bool = True) -> None:
        """Send one message (str as text, bytes as binary, a Message as its type).

        From a thread this returns once the server took the message; on the loop
        thread it queues the message and returns at once.
        """
        event = _send_event(data, binary)
        if self._on_loop():
            self._enqueue(event, None)
        else:
            self._run(self._send_and_wait(event))

    def send_fragments(
        self, chunks: Iterable[str | bytes], binary: bool | None = None, *, compress: bool = True
    ) -> None:
        """ASGI has no fragments: the chunks are joined and sent as one message.

        The iterable is consumed in the calling thread first, so a generator that
        streams a large payload is held in memory whole.
        """
        opcode_text: bool | None = None
        parts: list[bytes] = []
        for opcode, payload, _fin in iter_fragments(chunks, binary):
            if opcode_text is None:
                opcode_text = opcode is Opcode.TEXT
            parts.append(payload)
        self.send_message(b"".join(parts), binary=not opcode_text)

    def send_frame(self, frame: Frame) -> None:
        raise UnsupportedByASGI("send_frame (raw frames)", "send messages with send()")

    def ping(self, data: bytes | None = None) -> Any:
        raise UnsupportedByASGI(
            "ping() and its latency",
            "the server sends keepalive pings itself (uvicorn --ws-ping-interval, hypercorn websocket_ping_interval)",
        )

    def pong(self, data: bytes = b"") -> None:
        raise UnsupportedByASGI("pong()", "the server answers pings by itself")

    def start_keepalive(self, interval: float, timeout: float | None = None) -> None:
        raise UnsupportedByASGI("keepalive pings (ping_interval)", "configure the server's own keepalive")

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake; from a thread that is not reading, wait for its end.

        On the loop thread this only queues the close and returns.
        """
        Close(code, reason).serialize()  # ValueError for a code or reason that cannot be sent (RFC 6455 §7.4)
        if self._on_loop():
            self._begin_close(code, reason, None)
            return
        self._run(self._close_sent(code, reason))
        # Like Connection.close(): when no other thread is reading, wait here for the
        # end (bounded by close_timeout, which the loop enforces); else the reader sees it.
        if self._recv_lock.acquire(blocking=False):
            try:
                self._closed_thread.wait()
            finally:
                self._recv_lock.release()

    def abort(self) -> None:
        """End the connection now, without a close frame of ours.

        ASGI cannot drop TCP: the app returns at once and the server ends the
        connection its own way (uvicorn closes TCP, hypercorn sends 1011).
        """
        if self._on_loop():
            self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")
        else:
            self._run(self._abort_async())

    # -- async API (for async def callbacks, on the loop thread) ------------------

    async def asend(self, data: Data, binary: bool | None = None) -> None:
        """Send one message and wait until the server took it."""
        await self._send_and_wait(_send_event(data, binary))

    async def aclose(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake and wait for its end (bounded by close_timeout)."""
        Close(code, reason).serialize()
        await self._close_sent(code, reason)
        await self._closed_async.wait()

    async def arecv(self) -> Message:
        """The next message; ConnectionClosed once the connection is closed."""
        while True:
            with self._cond:
                item = self._inbox[0] if self._inbox else None
                if isinstance(item, Message):
                    self._inbox.popleft()
            if isinstance(item, Message):
                return item
            if item is not None:
                raise self._close_exc()
            # No await between the empty check and clear(): the pump runs on this
            # loop too, so it cannot append in between.
            self._arrived.clear()
            self._wanted.set()
            await self._arrived.wait()

    # -- receiving (threads) --------------------------------------------------------

    def recv_message(self, timeout: float | None = None) -> Message:
        """The next message; ConnectionClosed when closed, TimeoutError on timeout."""
        if self._on_loop():
            raise RuntimeError("recv() would block the event loop; use `await self.connection.arecv()`")
        with self._recv_lock, self._cond:
            if not self._inbox:
                try:
                    self.loop.call_soon_threadsafe(self._wanted.set)
                except RuntimeError:  # the loop is closed: nothing will ever arrive
                    self._inbox.append(_EOF)
                if not self._cond.wait_for(lambda: bool(self._inbox), timeout):
                    raise TimeoutError("no message within the timeout")
            item = self._inbox[0]
            if not isinstance(item, Message):
                raise self._close_exc()  # the end marker stays queued for later calls
            self._inbox.popleft()
            return item

    def recv_frame(self, timeout: float | None = None) -> Frame:
        raise UnsupportedByASGI("recv_frame (raw frames)", "the server assembles messages; use recv()")

    # -- the loop side ---------------------------------------------------------------

    async def accept(self, headers: Sequence[tuple[str, str]] = ()) -> None:
        """Send ``websocket.accept`` and start the pump and the writer."""
        event: Event = {"type": "websocket.accept", "subprotocol": self.subprotocol}
        if headers:  # ASGI spec 2.1+; only sent when there are some
            event["headers"] = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        await self._send(event)
        self._state = State.OPEN
        self._tasks = [self.loop.create_task(self._pump()), self.loop.create_task(self._writer())]

    def finish(self) -> None:
        """Release everything when the app returns (or is cancelled)."""
        self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")
        for task in self._tasks:
            task.cancel()

    async def _pump(self) -> None:
        limit = self.max_message_size
        try:
            while True:
                if self._state is State.OPEN and not self._wanted.is_set():
                    await self._wanted.wait()  # while closing, read on to the disconnect
                    continue
                event = await self._receive()
                kind = event.get("type")
                if kind == "websocket.receive":
                    if self._state is not State.OPEN:
                        continue  # after our close nothing received is wanted
                    text = event.get("text")
                    if text is not None:
                        message: Message = TextMessage(text)
                    else:
                        message = BinaryMessage(bytes(event.get("bytes") or b""))
                    if limit is not None and len(message.data) > limit:
                        # RFC 6455 §7.4.1: 1009 for a message too big to process.
                        self._begin_close(CloseCode.MESSAGE_TOO_BIG, "message too big", None)
                        continue
                    self._deliver(message)
                elif kind == "websocket.disconnect":
                    code = int(event.get("code") or CloseCode.NO_STATUS_RCVD)
                    self._mark_closed(code, str(event.get("reason") or ""))
                    return
                else:
                    logger.debug("ignoring ASGI event %r", kind)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the server's receive() failed: treat as a lost connection
            logger.debug("receive() failed: %r", exc)
            self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")

    async def _writer(self) -> None:
        outbox = self._outbox
        while True:
            if not outbox or self._writing:
                if not outbox and self._state is State.CLOSED:
                    return
                self._wake_writer.clear()
                await self._wake_writer.wait()
                continue
            event, future = outbox.popleft()
            if future is not None and future.done():
                continue  # its sender was cancelled before it went out
            self._writing = True
            try:
                await self._send(event)
            except Exception as exc:  # e.g. uvicorn's ClientDisconnected (an OSError)
                logger.debug("send() failed: %r", exc)
                _fail(future, ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code))
                self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")
                continue
            finally:
                self._writing = False
            if event["type"] == "websocket.close" and self.close_timeout is not None and not self.closed:
                # RFC 6455 §7.1.1: do not wait forever for the peer's close frame.
                self._close_timer = self.loop.call_later(
                    self.close_timeout, self._mark_closed, CloseCode.ABNORMAL_CLOSURE, ""
                )
            if future is not None and not future.done():
                future.set_result(None)

    def _enqueue(self, event: Event, future: asyncio.Future[None] | None) -> None:
        """Queue a send for the writer (loop thread); the order of calls is the order on the wire."""
        if self._state is not State.OPEN:
            raise self._close_exc()
        self._outbox.append((event, future))
        self._wake_writer.set()

    async def _send_and_wait(self, event: Event) -> None:
        if self._outbox or self._writing or self._state is not State.OPEN:
            future = self.loop.create_future()
            self._enqueue(event, future)
            await future
            return
        # Nothing queued and nothing being written: send from this task directly.
        # Order is kept (the writer waits while _writing), and an async callback's
        # reply leaves in the same loop step, before the server reads on, as it
        # would from a plain ASGI app.
        self._writing = True
        try:
            await self._send(event)
        except Exception as exc:
            logger.debug("send() failed: %r", exc)
            self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")
            raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code) from exc
        finally:
            self._writing = False
            if self._outbox:
                self._wake_writer.set()

    def _begin_close(self, code: int, reason: str, future: asyncio.Future[None] | None) -> bool:
        """Queue the close after every send already queued (loop thread); False if not open."""
        if self._state is not State.OPEN:
            return False
        event: Event = {"type": "websocket.close", "reason": reason}
        if code != CloseCode.NO_STATUS_RCVD:  # 1005 = no code: the server sends its default
            event["code"] = code
        self._outbox.append((event, future))
        self._wake_writer.set()
        self._state = State.CLOSING  # from now on send() raises, as in the core
        self._sent_code = code
        self._wanted.set()  # read on until the disconnect, whatever the handler does
        return True

    async def _close_sent(self, code: int, reason: str) -> None:
        """Queue the close and wait until it is out (or the connection is gone)."""
        future = self.loop.create_future()
        if self._begin_close(code, reason, future):
            try:
                await future
            except ConnectionClosed:  # already gone: closing it is not an error
                pass

    async def _abort_async(self) -> None:
        self._mark_closed(CloseCode.ABNORMAL_CLOSURE, "")

    def _deliver(self, message: Message) -> None:
        with self._cond:
            self._inbox.append(message)
            self._cond.notify()
        self._wanted.clear()  # in the same loop step: a consumer asks again only after this
        self._arrived.set()

    def _mark_closed(self, code: int, reason: str) -> None:
        if self._state is State.CLOSED:
            return
        self._state = State.CLOSED
        self._close_code = code
        self._close_reason = reason
        if self._close_timer is not None:
            self._close_timer.cancel()
            self._close_timer = None
        while self._outbox:  # sends that will never go out
            _event, future = self._outbox.popleft()
            _fail(future, self._close_exc())
        with self._cond:
            self._inbox.append(_EOF)
            self._cond.notify_all()
        self._arrived.set()
        self._wanted.set()
        self._wake_writer.set()
        self._closed_async.set()
        self._closed_thread.set()

    def _close_exc(self) -> ConnectionClosed:
        return closed_exception(self._close_code, self._close_reason, self._sent_code)

    # -- crossing from threads to the loop ---------------------------------------------

    def _on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop from another thread and wait for its result."""
        try:
            future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        except RuntimeError:  # the loop is closed
            coro.close()
            raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code) from None
        while not future.done():
            # A loop that stops without cancelling its tasks would leave us here
            # forever; look at it now and then.
            concurrent.futures.wait([future], timeout=1.0)
            if not future.done() and self.loop.is_closed():
                future.cancel()
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            raise ConnectionClosedError(CloseCode.ABNORMAL_CLOSURE, "", self._sent_code) from None


def _fail(future: asyncio.Future[None] | None, exc: BaseException) -> None:
    if future is None:  # nobody waits (a send queued from the loop thread): say it in the log
        logger.debug("queued send dropped: %s", exc)
    elif not future.done():
        future.set_exception(exc)


def _send_event(data: Data, binary: bool | None) -> Event:
    """The ``websocket.send`` event for ``data``, typed as send_message() would."""
    if isinstance(data, str):
        if binary is True:
            return {"type": "websocket.send", "bytes": data.encode()}
        return {"type": "websocket.send", "text": data}
    if isinstance(data, Message):
        as_text = data.is_text if binary is None else not binary
        if as_text:
            text = data.text if isinstance(data, TextMessage) else bytes(data.data).decode()
            return {"type": "websocket.send", "text": text}
        return {"type": "websocket.send", "bytes": bytes(data.data)}
    payload = data if isinstance(data, bytes) else bytes(data)
    if binary is False:  # as ws4py: bytes sent as text (ASGI needs a str, so it must be UTF-8)
        return {"type": "websocket.send", "text": payload.decode()}
    return {"type": "websocket.send", "bytes": payload}


def _request_from_scope(scope: Scope) -> Request:
    """The upgrade request as ws4web sees it, rebuilt from the ASGI scope."""
    path = scope.get("raw_path")
    target = path.decode("latin-1") if isinstance(path, (bytes, bytearray)) and path else str(scope.get("path", "/"))
    query = scope.get("query_string") or b""
    if query:
        target += "?" + bytes(query).decode("latin-1")
    headers = Headers(
        (bytes(name).decode("latin-1"), bytes(value).decode("latin-1")) for name, value in scope.get("headers", ())
    )
    return Request("GET", target, headers, "HTTP/" + str(scope.get("http_version", "1.1")))


def _first_offered(offered: Sequence[str], supported: Sequence[str]) -> str | None:
    # The client lists its subprotocols by preference (RFC 6455 §4.1 item 10).
    for name in offered:
        if name in supported:
            return name
    return None


# Handler options the adapter cannot honour: refused unless left at their defaults.
_UNSUPPORTED_OPTIONS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "extensions": (
        lambda v: not v,
        "extension negotiation belongs to the server (e.g. uvicorn --ws-per-message-deflate)",
    ),
    "heartbeat_freq": (lambda v: v is None, "use the server's keepalive pings (uvicorn --ws-ping-interval)"),
    "ping_interval": (lambda v: v is None, "use the server's keepalive pings (uvicorn --ws-ping-interval)"),
    "ping_timeout": (lambda v: v is None, "use the server's keepalive pings (uvicorn --ws-ping-timeout)"),
    "reactor": (lambda v: v is None, "the ASGI server's event loop drives the connection"),
    "max_frame_size": (
        lambda v: v is None,
        "the server assembles frames; bound the message size with max_message_size",
    ),
    "primitives": (lambda v: v is None or v is THREADING, "the adapter bridges threads and asyncio itself"),
    "data": (lambda v: not v, "there is no socket under ASGI"),
}


class WebSocketASGIApp:
    """An ASGI application that runs ``handler_cls`` for every WebSocket connection.

    ``protocols`` are the subprotocols supported, picked in the client's order
    (or by ``select_subprotocol(offered, supported)``). As on the other servers,
    ``process_request(request)`` runs first and may refuse by returning a
    :class:`~ws4web.http11.Response` (or raising
    :class:`~ws4web.exceptions.InvalidHandshake`); then ``origins`` (the Origin
    allow-list of :mod:`ws4web.auth`) and ``authenticate(request)``. The ASGI
    server validated the upgrade itself; ``check_handshake=True`` re-runs ws4web's
    RFC 6455 checks on HTTP/1.1 requests (off by default: Starlette's TestClient,
    for one, sends a handshake that would fail them). ``headers`` go with the
    accept. Non-WebSocket scopes go to ``app`` when given, else get a 404.
    Other keyword arguments go to every handler (``max_message_size``,
    ``close_timeout`` are also honoured by the adapter).
    """

    def __init__(
        self,
        handler_cls: type[WebSocket] = WebSocket,
        protocols: Sequence[str] = (),
        *,
        select_subprotocol: SubprotocolSelector | None = None,
        process_request: ProcessRequest | None = None,
        origins: Sequence[str | None] | None = None,
        authenticate: Authenticator | None = None,
        check_handshake: bool = False,
        headers: Sequence[tuple[str, str]] = (),
        app: ASGIApp | None = None,
        **handler_options: Any,
    ) -> None:
        for name, (is_default, hint) in _UNSUPPORTED_OPTIONS.items():
            if name in handler_options and not is_default(handler_options.pop(name)):
                raise UnsupportedByASGI(f"the handler option {name}=", hint)
        self.handler_cls = handler_cls
        self.protocols = list(protocols)
        self.select_subprotocol = select_subprotocol
        self.process_request = process_request
        self.origins = None if origins is None else list(origins)
        self.authenticate = authenticate
        self.check_handshake = check_handshake
        self.headers = list(headers)
        self.app = app
        self.handler_options = handler_options
        self.max_message_size: int | None = handler_options.pop("max_message_size", 2**20)
        self.close_timeout: float | None = handler_options.pop("close_timeout", 10.0)
        self.asynchronous = any(inspect.iscoroutinefunction(getattr(handler_cls, n, None)) for n in _CALLBACKS)
        #: the handlers of the open connections (for broadcasts and shutdown)
        self.websockets: set[WebSocket] = set()
        self._stopping: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # loops shutting down
        _APPS.add(self)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "websocket":
            await self._websocket(scope, receive, send)
        elif self.app is not None:
            await self.app(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)
        elif kind == "http":
            body = b"Not Found: this endpoint only speaks WebSocket\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 404, "headers": headers})
            await send({"type": "http.response.body", "body": body})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # -- the handshake -------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        first = await receive()
        if first.get("type") != "websocket.connect":
            return  # the client left before the handshake
        loop = asyncio.get_running_loop()
        request = _request_from_scope(scope)
        subprotocol: str | None = None
        refusal: Response | None = None
        try:
            if loop in self._stopping:
                raise InvalidHandshake("server shutting down", status=503)
            # The order of the threaded server (ws4web.upgrade.answer_request).
            if self.process_request is not None:
                refusal = await _off_loop(self.process_request, request)
                if refusal is not None and not isinstance(refusal, Response):
                    raise TypeError(f"process_request returned {refusal!r}, not a Response or None")
            if refusal is None:
                if self.check_handshake and request.version in ("HTTP/1.0", "HTTP/1.1"):
                    # RFC 6455 §4.2.1 (Host, a 16-byte key, version 13) on top of the
                    # server's own checks; HTTP/2 (RFC 8441) has none of these headers.
                    check_request(request)
                if self.origins is not None:
                    check_origin(request, self.origins)
                if self.authenticate is not None:
                    await _off_loop(self.authenticate, request)
                subprotocol = self._choose_subprotocol(list(scope.get("subprotocols") or ()))
        except InvalidHandshake as exc:
            peer = format_peer(tuple(scope["client"]) if scope.get("client") else None)
            ConnectionLog(logger, new_id(), peer).warning(
                "handshake for %s refused (HTTP %d): %s", request.path, exc.status, exc
            )
            refusal = reject(exc)
        if refusal is not None:
            await _refuse(scope, send, refusal)
            return

        conn = ASGIConnection(
            scope,
            receive,
            send,
            subprotocol=subprotocol,
            max_message_size=self.max_message_size,
            close_timeout=self.close_timeout,
        )
        try:
            handler = self.handler_cls(
                None,
                protocols=[subprotocol] if subprotocol else [],
                extensions=[],
                environ=scope,
                heartbeat_freq=None,
                **self.handler_options,
            )
            handler.bind(conn, request)
        except InvalidHandshake as exc:
            await _refuse(scope, send, reject(exc))
            return
        except Exception:
            logger.exception("creating handler %s failed", self.handler_cls.__name__)
            # The details stay in the log: a client has no business reading them.
            await _refuse(scope, send, reject(InvalidHandshake("internal error", status=500)))
            return

        try:
            await conn.accept(self.headers)
        except Exception as exc:  # the client left
            logger.debug("websocket.accept failed: %r", exc)
            conn.finish()
            return
        self.websockets.add(handler)
        try:
            if self.asynchronous:
                await self._run_async(handler, conn)
            else:
                await self._run_thread(handler, conn)
        finally:
            self.websockets.discard(handler)
            conn.finish()

    def _choose_subprotocol(self, offered: list[str]) -> str | None:
        if not offered or not (self.protocols or self.select_subprotocol):
            return None
        chosen = (self.select_subprotocol or _first_offered)(offered, self.protocols)
        if chosen is not None and chosen not in offered:  # RFC 6455 §4.2.2 item 5.4
            raise NegotiationError(f"selected subprotocol {chosen!r} was not offered")
        return chosen

    # -- running the handler ----------------------------------------------------------

    async def _run_thread(self, handler: WebSocket, conn: ASGIConnection) -> None:
        """Run handler.run() in a thread; return once it ended or the connection closed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        def target() -> None:
            try:
                handler.run()
            except BaseException:  # run() handles callback errors; this is anything else
                logger.exception("handler %s stopped; closing with 1011", type(handler).__name__)
                try:
                    conn.close(CloseCode.INTERNAL_ERROR, "internal error")
                except Exception:
                    conn.abort()
            finally:
                try:
                    loop.call_soon_threadsafe(resolve)
                except RuntimeError:  # the loop is already closed
                    pass

        thread = threading.Thread(target=target, name=f"ws4web-asgi {conn.scope.get('path', '/')}", daemon=True)
        thread.start()
        closed = loop.create_task(conn.wait_closed_async())
        try:
            # Returning when the connection closed, even if a callback is still busy,
            # lets the server finish (and shut down) without waiting for it.
            await asyncio.wait({done, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            closed.cancel()
        if conn.state is State.OPEN:  # run() returned without closing: do it for it
            await conn.aclose()
        await conn.wait_closed_async()

    async def _run_async(self, handler: WebSocket, conn: ASGIConnection) -> None:
        """The callback loop of WebSocket.run(), on the event loop."""
        name = type(handler).__name__
        try:
            await _off_loop(handler.opened)
            while True:
                message = await conn.arecv()
                await _off_loop(handler.received_message, message)
        except ConnectionClosed:
            pass
        except Exception:
            logger.exception("handler %s raised; closing with 1011", name)
            await conn.aclose(CloseCode.INTERNAL_ERROR, "internal error")
        await conn.wait_closed_async()
        try:
            await _off_loop(handler.closed, conn.close_code, conn.close_reason)
        except Exception:
            logger.exception("closed() of %s raised", name)

    # -- shutdown ------------------------------------------------------------------

    async def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Refuse new connections on this loop, close the open ones, wait up to ``timeout``."""
        loop = asyncio.get_running_loop()
        self._stopping.add(loop)
        await _close_connections([h.connection for h in list(self.websockets)], code, reason, timeout)


async def _off_loop(hook: Callable[..., Any], *args: Any) -> Any:
    """Await an ``async def`` hook or callback; run a plain one in the loop's executor (it may block)."""
    if inspect.iscoroutinefunction(hook):
        return await hook(*args)
    result = await asyncio.get_running_loop().run_in_executor(None, functools.partial(hook, *args))
    if inspect.isawaitable(result):
        result = await result
    return result


async def _refuse(scope: Scope, send: Send, response: Response) -> None:
    """Answer the handshake with ``response``, or with the server's 403 when ASGI cannot say more."""
    if _HTTP_RESPONSE in (scope.get("extensions") or {}):
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if "Content-Length" not in response.headers:
            # The whole body is known: say its size, or a server may fall back to
            # chunked encoding, which a WebSocket client need not read.
            headers.append((b"content-length", str(len(response.body)).encode("ascii")))
        await send({"type": "websocket.http.response.start", "status": response.status, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": response.body, "more_body": False})
    else:
        # A close before the accept is the only refusal plain ASGI has; servers
        # answer it with HTTP 403. The code is not sent anywhere.
        await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})


async def _close_connections(conns: list[Any], code: int, reason: str, timeout: float) -> None:
    Close(code, reason).serialize()  # a bad code or reason fails here, not in every task
    loop = asyncio.get_running_loop()
    waiters: list[Awaitable[None]] = []
    for conn in conns:
        if not isinstance(conn, ASGIConnection) or conn.closed:
            continue
        if conn.loop is loop:
            waiters.append(conn.aclose(code, reason))
        elif not conn.loop.is_closed():
            future = asyncio.run_coroutine_threadsafe(conn.aclose(code, reason), conn.loop)
            waiters.append(asyncio.wrap_future(future))
    if waiters:
        tasks = [asyncio.ensure_future(w) for w in waiters]
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task in tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                logger.debug("closing failed: %r", task.exception())


_APPS: weakref.WeakSet[WebSocketASGIApp] = weakref.WeakSet()


async def close_all(
    code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
) -> None:
    """Close every ws4web connection served on the running event loop; refuse new ones.

    Call it from a server's shutdown path so clients get ``code`` (1001 Going
    Away by default) rather than the server's own choice.
    """
    loop = asyncio.get_running_loop()
    conns: list[ASGIConnection] = []
    for app in list(_APPS):
        app._stopping.add(loop)
        conns.extend(
            h.connection
            for h in list(app.websockets)
            if isinstance(h.connection, ASGIConnection) and h.connection.loop is loop
        )
    await _close_connections(list(conns), code, reason, timeout)


def uvicorn_server(
    app: ASGIApp,
    *,
    shutdown_code: int = CloseCode.GOING_AWAY,
    shutdown_reason: str = "server shutting down",
    shutdown_timeout: float = 5.0,
    **config: Any,
) -> Any:
    """A ``uvicorn.Server`` for ``app`` that closes ws4web connections with 1001 on shutdown.

    ``config`` goes to ``uvicorn.Config``. Plain uvicorn closes open WebSockets
    with 1012 (Service Restart); this server first runs :func:`close_all`, then
    gives clients until ``shutdown_timeout`` to answer the close before uvicorn
    drops what is left.
    """
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + shutdown_timeout
            await close_all(shutdown_code, shutdown_reason, shutdown_timeout)
            # uvicorn reports the disconnect as soon as our close frame is out; the
            # client's answer arrives later, and uvicorn's own shutdown would cut it.
            ws_class = getattr(self.config, "ws_protocol_class", None)
            while ws_class is not None and loop.time() < deadline:
                if not any(isinstance(c, ws_class) for c in self.server_state.connections):
                    break
                await asyncio.sleep(0.02)
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, **config))


def hypercorn_shutdown_trigger(
    trigger: Callable[[], Awaitable[Any]],
    *,
    code: int = CloseCode.GOING_AWAY,
    reason: str = "server shutting down",
    timeout: float = 5.0,
) -> Callable[[], Awaitable[None]]:
    """Wrap hypercorn's ``shutdown_trigger`` so ws4web connections close with 1001 first.

    ``asyncio.run(hypercorn.asyncio.serve(app, config, shutdown_trigger=hypercorn_shutdown_trigger(event.wait)))``
    """

    async def shutdown_trigger() -> None:
        await trigger()
        await close_all(code, reason, timeout)

    return shutdown_trigger


def websocket_route(
    path: str, handler_cls: type[WebSocket], protocols: Sequence[str] = (), *, name: str | None = None, **options: Any
) -> Any:
    """A ``starlette.routing.WebSocketRoute`` running ``handler_cls`` (options as WebSocketASGIApp).

    The route's ``.app`` is the :class:`WebSocketASGIApp`.
    """
    from starlette.routing import WebSocketRoute

    return WebSocketRoute(path, WebSocketASGIApp(handler_cls, protocols, **options), name=name or handler_cls.__name__)


class WebSocketMiddleware:
    """ASGI middleware: WebSockets to the mounted paths run ws4web handlers, the rest reaches ``app``.

    ``WebSocketMiddleware(app, {"/ws": Chat, "/feed": Feed}, **options)`` wraps any
    ASGI application (Starlette, FastAPI, Django's ``get_asgi_application()``...).
    A ``websocket`` scope whose path is a key of ``routes`` runs that handler
    through a :class:`WebSocketASGIApp`; every other scope (``http``,
    ``lifespan``, WebSockets to other paths) is passed to ``app`` as it came,
    with the same ``receive`` and ``send``, so the wrapped app answers exactly as
    it would alone.

    A value of ``routes`` is a handler class, built into a WebSocketASGIApp with
    ``options`` (those of WebSocketASGIApp: ``protocols``, ``origins``,
    ``authenticate``, handler options...), or a WebSocketASGIApp of its own
    options. Paths match ``scope["path"]`` exactly (no query string, no
    trailing-slash redirect), relative to ``scope["root_path"]`` as Starlette
    matches its routes: under ``uvicorn --root-path /api`` the key ``"/ws"``
    serves ``/api/ws``.

    Works as a Starlette/FastAPI middleware class too:
    ``app.add_middleware(WebSocketMiddleware, routes={"/ws": Chat})``.
    """

    def __init__(
        self, app: ASGIApp, /, routes: Mapping[str, type[WebSocket] | WebSocketASGIApp], **options: Any
    ) -> None:
        # ``app`` is positional-only so that Starlette's ``Middleware(cls, **kwargs)``
        # type-checks; an ``app=`` keyword would land in ``options``: refuse it, as
        # HTTP to a mounted path is the wrapped app's business, never a second app's.
        if "app" in options:
            raise TypeError("WebSocketMiddleware: pass the wrapped app first, positionally (app= is not an option)")
        self.app = app
        #: mount path -> the WebSocketASGIApp serving it
        self.routes: dict[str, WebSocketASGIApp] = {}
        for path, target in routes.items():
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"WebSocketMiddleware: mount path {path!r} must be a str starting with '/'")
            if isinstance(target, WebSocketASGIApp):
                self.routes[path] = target
            elif isinstance(target, type) and issubclass(target, WebSocket):
                self.routes[path] = WebSocketASGIApp(target, **options)
            else:
                raise TypeError(
                    f"WebSocketMiddleware: {path!r} maps to {target!r}, not a WebSocket subclass or a WebSocketASGIApp"
                )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") == "websocket":
            target = self.routes.get(_route_path(scope))
            if target is not None:
                await target(scope, receive, send)
                return
        await self.app(scope, receive, send)

    @property
    def websockets(self) -> set[WebSocket]:
        """The handlers of the open connections, on every mounted path."""
        handlers: set[WebSocket] = set()
        for target in self.routes.values():
            handlers.update(target.websockets)
        return handlers

    async def shutdown(
        self, code: int = CloseCode.GOING_AWAY, reason: str = "server shutting down", timeout: float = 5.0
    ) -> None:
        """Refuse new ws4web connections on this loop and close the open ones (see WebSocketASGIApp.shutdown).

        Lifespan events belong to the wrapped app, so nothing calls this by
        itself; :func:`uvicorn_server` and :func:`hypercorn_shutdown_trigger`
        reach these connections through :func:`close_all` anyway.
        """
        loop = asyncio.get_running_loop()
        conns: list[Any] = []
        for target in self.routes.values():
            target._stopping.add(loop)
            conns.extend(h.connection for h in list(target.websockets))
        await _close_connections(conns, code, reason, timeout)


def _route_path(scope: Scope) -> str:
    """``scope["path"]`` relative to ``scope["root_path"]``, as Starlette's router sees it.

    Servers (uvicorn) and Starlette's ``Mount`` put the root path into ``path``
    itself; the mount keys are the application's own paths, so it comes off.
    """
    path = str(scope.get("path", ""))
    root = str(scope.get("root_path") or "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        return path[len(root) :] or "/"
    return path
