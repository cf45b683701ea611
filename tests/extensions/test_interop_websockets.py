"""permessage-deflate interop with the `websockets` library, both ways, over loopback.

A websockets server with compression talks to a ws4web client, and a ws4web
WebSocketServer to a websockets client, in every combination of the four
RFC 7692 parameters the offering side can ask for, and with limits imposed by
the answering side. Each connection echoes text and binary messages of three
sizes; both ends must agree on what was negotiated.
"""

from __future__ import annotations

import itertools
import json
import queue
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("websockets")

from websockets.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory as WSClientFactory,
)
from websockets.extensions.permessage_deflate import (
    PerMessageDeflate as WSPerMessageDeflate,
)
from websockets.extensions.permessage_deflate import (
    ServerPerMessageDeflateFactory as WSServerFactory,
)
from websockets.sync.client import connect as ws_connect
from websockets.sync.server import serve as ws_serve

from ws4web import WebSocket, WebSocketServer, connect
from ws4web.extensions.permessage_deflate import (
    SERVER_WINDOW_BITS,
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)
from ws4web.messages import Message

from . import rfc_server

TIMEOUT = 10.0
MAX_SIZE = 2**21


def _json_like(size: int) -> str:
    rng = random.Random(7)
    parts: list[str] = []
    total = 0
    while total < size:
        part = json.dumps({"user": rng.randrange(10**5), "tags": rng.sample(["a", "bb", "ccc", "dd", "e"], 3)})
        parts.append(part)
        total += len(part) + 1
    return ("[" + ",".join(parts) + "]")[:size]


_TEXT_16K = _json_like(16 * 1024)
_TEXT_1M = _json_like(2**20)
_BINARY_1M = random.Random(8).randbytes(2**18) + _TEXT_1M[: 3 * 2**18].encode()  # a quarter noise
SMALL_MESSAGES: list[str | bytes] = ["héllo ✓", b"\x00\x01\x02\xff", _TEXT_16K, _TEXT_16K.encode()]
BIG_MESSAGES: list[str | bytes] = [_TEXT_1M, _BINARY_1M]
SIZES = {"small": SMALL_MESSAGES, "big": BIG_MESSAGES}

# Every combination of what the offering side can ask for exchanges the small
# messages; the 1 MiB ones (a tenth of a second each to deflate) go through
# every context-takeover combination with the default and the smallest windows.
NCT = list(itertools.product([False, True], repeat=2))


def _ws4web_settings(extension: Any) -> tuple[bool, bool, int, int]:
    assert isinstance(extension, PerMessageDeflate)
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def _websockets_settings(extension: Any) -> tuple[bool, bool, int, int]:
    assert isinstance(extension, WSPerMessageDeflate)
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def _mirror(settings: tuple[bool, bool, int, int]) -> tuple[bool, bool, int, int]:
    local_nct, remote_nct, local_bits, remote_bits = settings
    return remote_nct, local_nct, remote_bits, local_bits


# -- a websockets server, a ws4web client ---------------------------------------------------------


class WebsocketsServer:
    """A websockets echo server in a thread; it reports each connection's negotiated extensions."""

    def __init__(self, factory: WSServerFactory) -> None:
        self.negotiated: queue.Queue[list[Any]] = queue.Queue()
        self.server = ws_serve(
            self._handler, "127.0.0.1", 0, compression=None, extensions=[factory], max_size=MAX_SIZE, ping_interval=None
        )
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _handler(self, connection: Any) -> None:
        self.negotiated.put(list(connection.protocol.extensions))
        for message in connection:
            connection.send(message)

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(TIMEOUT)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def websockets_server() -> Iterator[WebsocketsServer]:
    server = WebsocketsServer(WSServerFactory())
    try:
        yield server
    finally:
        server.stop()


def _echo_with_ws4web_client(
    port: int, factory: ClientPerMessageDeflateFactory, server: WebsocketsServer, messages: list[str | bytes]
) -> tuple[tuple[bool, bool, int, int], tuple[bool, bool, int, int]]:
    ws = connect(f"ws://127.0.0.1:{port}/", extensions=[factory], max_message_size=MAX_SIZE, timeout=TIMEOUT)
    try:
        theirs = server.negotiated.get(timeout=TIMEOUT)
        assert len(ws.extensions) == 1 and len(theirs) == 1, "compression was not negotiated"
        for payload in messages:
            ws.send(payload)
            echoed = ws.recv(timeout=TIMEOUT)
            assert echoed.is_text is isinstance(payload, str)
            assert echoed.data == (payload.encode() if isinstance(payload, str) else payload)
    finally:
        ws.close()
    assert ws.close_code == 1000
    return _ws4web_settings(ws.extensions[0]), _websockets_settings(theirs[0])


# websockets refuses server_max_window_bits=8 (its zlib cannot compress with it),
# so an offer asking for it is declined there; 8 is covered the other way round.
@pytest.mark.parametrize(
    ("server_nct", "client_nct", "server_bits", "client_bits", "size"),
    [
        (*nct, server_bits, client_bits, "small")
        for nct in NCT
        for server_bits in [None, 9, 12, 15]
        for client_bits in [None, True, 8, 9, 15]
    ]
    + [(*nct, None, True, "big") for nct in NCT]
    + [(*nct, 9, 8, "big") for nct in NCT],
)
def test_ws4web_client_with_websockets_server(
    websockets_server: WebsocketsServer,
    server_nct: bool,
    client_nct: bool,
    server_bits: int | None,
    client_bits: int | bool | None,
    size: str,
) -> None:
    factory = ClientPerMessageDeflateFactory(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    ours, theirs = _echo_with_ws4web_client(websockets_server.port, factory, websockets_server, SIZES[size])
    expected_client_bits = client_bits if client_bits is not True and client_bits is not None else 15
    assert ours == (client_nct, server_nct, expected_client_bits, server_bits or 15)
    assert theirs == _mirror(ours)


@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        # What the websockets server imposes on a default ws4web offer ("client_max_window_bits").
        ({"server_no_context_takeover": True}, (False, True, 15, 15)),
        ({"client_no_context_takeover": True}, (True, False, 15, 15)),
        ({"server_max_window_bits": 10}, (False, False, 15, 10)),
        ({"client_max_window_bits": 11}, (False, False, 11, 15)),
        (
            {
                "server_no_context_takeover": True,
                "client_no_context_takeover": True,
                "server_max_window_bits": 9,
                "client_max_window_bits": 8,
            },
            (True, True, 8, 9),
        ),
    ],
)
def test_ws4web_client_with_a_limiting_websockets_server(
    server_options: dict[str, Any], expected: tuple[bool, bool, int, int]
) -> None:
    server = WebsocketsServer(WSServerFactory(**server_options))
    try:
        ours, theirs = _echo_with_ws4web_client(
            server.port, ClientPerMessageDeflateFactory(), server, SMALL_MESSAGES + BIG_MESSAGES
        )
    finally:
        server.stop()
    assert ours == expected
    assert theirs == _mirror(ours)


# -- a ws4web server, a websockets client ---------------------------------------------------------


class Echo(WebSocket):
    negotiated: queue.Queue[list[Any]]

    def opened(self) -> None:
        self.negotiated.put(list(self.extensions))

    def received_message(self, message: Message) -> None:
        self.send(message)


class Ws4webServer:
    def __init__(self, factory: ServerPerMessageDeflateFactory) -> None:
        self.negotiated: queue.Queue[list[Any]] = queue.Queue()
        handler: type[Echo] = type("Echo", (Echo,), {"negotiated": self.negotiated})
        self.server = WebSocketServer(
            handler, "127.0.0.1", 0, extensions=[factory], max_message_size=MAX_SIZE, close_timeout=TIMEOUT
        )
        self.port = self.server.port
        self.server.start()

    def stop(self) -> None:
        self.server.shutdown(timeout=TIMEOUT)


@pytest.fixture(scope="module")
def ws4web_server() -> Iterator[Ws4webServer]:
    server = Ws4webServer(ServerPerMessageDeflateFactory())
    try:
        yield server
    finally:
        server.stop()


def _echo_with_websockets_client(
    port: int, factory: WSClientFactory, server: Ws4webServer, messages: list[str | bytes]
) -> tuple[tuple[bool, bool, int, int], tuple[bool, bool, int, int]]:
    with ws_connect(
        f"ws://127.0.0.1:{port}/",
        compression=None,
        extensions=[factory],
        max_size=MAX_SIZE,
        open_timeout=TIMEOUT,
        close_timeout=TIMEOUT,
    ) as client:
        ours = server.negotiated.get(timeout=TIMEOUT)
        theirs = list(client.protocol.extensions)
        assert len(ours) == 1 and len(theirs) == 1, "compression was not negotiated"
        for payload in messages:
            client.send(payload)
            echoed = client.recv(timeout=TIMEOUT)
            assert type(echoed) is type(payload)
            assert echoed == payload
    return _ws4web_settings(ours[0]), _websockets_settings(theirs[0])


# The websockets client cannot offer client_max_window_bits=8 (the same zlib
# limit); server_max_window_bits=8 makes the ws4web server compress with its
# 9-bit stand-in, which the websockets client inflates with a 256-byte window.
@pytest.mark.parametrize(
    ("server_nct", "client_nct", "server_bits", "client_bits", "size"),
    [
        (*nct, server_bits, client_bits, "small")
        for nct in NCT
        for server_bits in [None, 8, 9, 15]
        for client_bits in [None, True, 9, 12, 15]
    ]
    + [(*nct, None, True, "big") for nct in NCT]
    + [(*nct, 8, 9, "big") for nct in NCT],
)
def test_websockets_client_with_ws4web_server(
    ws4web_server: Ws4webServer,
    server_nct: bool,
    client_nct: bool,
    server_bits: int | None,
    client_bits: int | bool | None,
    size: str,
) -> None:
    factory = WSClientFactory(
        server_no_context_takeover=server_nct,
        client_no_context_takeover=client_nct,
        server_max_window_bits=server_bits,
        client_max_window_bits=client_bits,
    )
    ours, theirs = _echo_with_websockets_client(ws4web_server.port, factory, ws4web_server, SIZES[size])
    # The server's defaults cap both windows at SERVER_WINDOW_BITS; the client's
    # window can only be capped when its offer names client_max_window_bits.
    cap = SERVER_WINDOW_BITS
    expected_server_bits = min(server_bits or 15, cap)
    expected_client_bits = 15 if client_bits is None else cap if client_bits is True else min(client_bits, cap)
    assert ours == (server_nct, client_nct, expected_server_bits, expected_client_bits)
    assert theirs == _mirror(ours)


@pytest.mark.parametrize(
    ("server_options", "expected"),
    [
        # What the ws4web server imposes on the default websockets offer ("client_max_window_bits").
        ({"server_no_context_takeover": True}, (True, False, 15, 15)),
        ({"client_no_context_takeover": True}, (False, True, 15, 15)),
        ({"server_max_window_bits": 8}, (False, False, 8, 15)),
        ({"client_max_window_bits": 10}, (False, False, 15, 10)),
        (
            {
                "server_no_context_takeover": True,
                "client_no_context_takeover": True,
                "server_max_window_bits": 9,
                "client_max_window_bits": 9,
                "compression_level": 1,
                "mem_level": 1,
            },
            (True, True, 9, 9),
        ),
    ],
)
def test_websockets_client_with_a_limiting_ws4web_server(
    server_options: dict[str, Any], expected: tuple[bool, bool, int, int]
) -> None:
    server = Ws4webServer(rfc_server(**server_options))
    try:
        ours, theirs = _echo_with_websockets_client(
            server.port, WSClientFactory(), server, SMALL_MESSAGES + BIG_MESSAGES
        )
    finally:
        server.stop()
    assert ours == expected
    assert theirs == _mirror(ours)
