"""Test WebSocket handlers in-process, without a port: a socketpair between a real door and a real client.

::

    from ws4web.testing import connect

    def test_echo():
        with connect(Echo, "/chat") as ws:
            ws.send("hello")
            assert ws.recv().text == "hello"

The handler runs behind the standard-library server's front door and driver
(``door="server"``, the default) or the blocking driver that gevent, wsgiref and
the WSGI middleware use (``door="blocking"``), with every door option the real
server takes. docs/testing.md is the manual; ``pytest_plugins = ["ws4web.testing"]``
adds the ``ws4web_connect`` fixture.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .drivers import PingWaiter
from .exceptions import ConnectionClosed, InvalidHandshake
from .extensions.base import ClientExtensionFactory
from .frames import CloseCode, Frame
from .messages import Data, Message
from .server import WebSocketServer
from .upgrade import accept_socket, connect_socket
from .websocket import WebSocket

__all__ = ["TestConnection", "connect", "ws4web_connect"]

_DOORS = ("server", "blocking")


class TestConnection:
    """The test's end of one connection, and a look at the handler on the other end.

    ``send`` / ``recv`` / ``ping`` / ``close`` act as a client; ``handler`` is the
    server-side handler instance (its attributes are the state to assert on);
    ``close_code`` / ``close_reason`` are what the server closed with.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, client: WebSocket, handler: WebSocket, server: WebSocketServer | None, runner: threading.Thread | None
    ) -> None:
        self.client = client
        self.handler = handler
        self._server = server
        self._runner = runner

    def send(self, data: Data, binary: bool | None = None) -> None:
        self.client.send(data, binary)

    def send_frame(self, frame: Frame) -> None:
        """Send one frame exactly as built (fragments, reserved bits, bad payloads)."""
        self.client.send_frame(frame)

    def recv(self, timeout: float | None = 5.0) -> Message:
        """The next message from the handler; ConnectionClosed once it closed."""
        return self.client.recv(timeout)

    def ping(self, data: bytes | None = None) -> PingWaiter:
        return self.client.ping(data)

    def close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "", timeout: float = 5.0) -> None:
        """Close from the client side and wait until the handler's closed() has run."""
        try:
            self.client.close(code, reason)
        except ConnectionClosed:
            pass
        self.wait_closed(timeout)

    def wait_closed(self, timeout: float = 5.0) -> tuple[int, str]:
        """Wait until the handler side has ended (its closed() returned); the code and
        reason the server closed with, as the client saw them."""
        self.client.connection.wait_closed(timeout)
        if not self.handler.connection.wait_closed(timeout):
            raise TimeoutError("the handler's connection did not end in time")
        if self._runner is not None:
            self._runner.join(timeout)
        return self.close_code, self.close_reason

    @property
    def close_code(self) -> int:
        return self.client.close_code

    @property
    def close_reason(self) -> str:
        return self.client.close_reason

    @property
    def closed(self) -> bool:
        return self.client.terminated

    def shutdown(self) -> None:
        """Release everything (a server door shuts down with 1001 first)."""
        if self._server is not None:
            self._server.shutdown(timeout=2.0)
        self.client.terminate()
        if self._runner is not None:
            self._runner.join(5.0)

    def __enter__(self) -> TestConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if not self.client.terminated:
            self.close()
        self.shutdown()

    def __iter__(self) -> Iterator[Message]:
        return iter(self.client)


def connect(
    handler_cls: type[WebSocket],
    path: str = "/",
    *,
    headers: Sequence[tuple[str, str]] = (),
    origin: str | None = None,
    subprotocols: Sequence[str] = (),
    extensions: Sequence[ClientExtensionFactory] = (),
    door: str = "server",
    timeout: float = 5.0,
    **options: Any,
) -> TestConnection:
    """Open a connection to ``handler_cls`` over a socketpair and return the client end.

    ``options`` are the door's (the same as :class:`~ws4web.server.WebSocketServer`
    takes: ``origins``, ``authenticate``, ``process_request``, ``subprotocols`` ...,
    limits, handler keywords). A refused handshake raises
    :class:`~ws4web.exceptions.InvalidStatus` with the status, headers and body
    the server answered.
    """
    if door not in _DOORS:
        raise ValueError(f"door must be one of {_DOORS}, not {door!r}")
    server_end, client_end = socket.socketpair()
    request_headers = list(headers)
    if origin is not None:
        request_headers.append(("Origin", origin))
    server: WebSocketServer | None = None
    runner: threading.Thread | None = None
    accepted: list[WebSocket] = []
    try:
        if door == "server":
            server = WebSocketServer(handler_cls, None, **options)
            server.serve_socket(server_end, ("testclient", 50000))
        else:
            failed: list[BaseException] = []

            def serve() -> None:
                try:
                    handler = accept_socket(server_end, handler_cls, **options)
                except (InvalidHandshake, OSError) as exc:
                    failed.append(exc)
                    server_end.close()
                    return
                accepted.append(handler)
                handler.run()

            runner = threading.Thread(target=serve, name="ws4web-testing", daemon=True)
            runner.start()
        client: WebSocket = connect_socket(
            client_end,
            "testserver",
            path,
            subprotocols=subprotocols,
            extensions=extensions,
            headers=request_headers,
            timeout=timeout,
        )
    except BaseException:
        client_end.close()
        if server is not None:
            server.shutdown(timeout=1.0)
        if runner is not None:
            runner.join(timeout)
        raise
    handler = _server_handler(server, accepted, timeout)
    return TestConnection(client, handler, server, runner)


def _server_handler(server: WebSocketServer | None, accepted: list[WebSocket], timeout: float) -> WebSocket:
    """The handler the door built (it exists once the 101 reached the client)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server is not None:
            handlers = list(server.registry)
            if handlers:
                return handlers[0]
        elif accepted:
            return accepted[0]
        time.sleep(0.002)
    raise TimeoutError("the door accepted the connection but no handler appeared")


try:  # the pytest fixture, for ``pytest_plugins = ["ws4web.testing"]``
    import pytest
except ImportError:  # pragma: no cover - pytest is a test dependency only
    pass
else:

    @pytest.fixture
    def ws4web_connect() -> Iterator[Any]:
        """``ws4web_connect(Handler, "/path", **options)``: connections released at teardown."""
        opened: list[TestConnection] = []

        def open_one(handler_cls: type[WebSocket], path: str = "/", **options: Any) -> TestConnection:
            connection = connect(handler_cls, path, **options)
            opened.append(connection)
            return connection

        yield open_one
        for connection in opened:
            connection.shutdown()
