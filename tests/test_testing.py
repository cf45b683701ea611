"""ws4web.testing: every handler feature through both doors, over a socketpair, no port."""

from __future__ import annotations

from typing import Any

import pytest

from ws4web import WebSocket
from ws4web.auth import basic_auth
from ws4web.exceptions import ConnectionClosed, ConnectionClosedError, ConnectionClosedOK, InvalidStatus
from ws4web.frames import Frame, Opcode
from ws4web.http11 import Headers, Request, Response
from ws4web.messages import Message, PongControlMessage
from ws4web.testing import connect

pytest_plugins = ["ws4web.testing"]

pytestmark = [pytest.mark.usefixtures("no_leaks"), pytest.mark.timeout(60)]

DOORS = ["server", "blocking"]


class Echo(WebSocket):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[str] = []
        self.pongs: list[bytes] = []
        self.ended: tuple[int, str | None] | None = None

    def received_message(self, message: Message) -> None:
        self.seen.append(message.text if message.is_text else message.data.hex())
        self.send(message)

    def ponged(self, message: PongControlMessage) -> None:
        self.pongs.append(message.data)

    def closed(self, code: int, reason: str | None = None) -> None:
        self.ended = (code, reason)


class PullEcho(WebSocket):
    def opened(self) -> None:
        with self:
            for message in self:
                self.send(message)


class Framer(WebSocket):
    """Low level: reads raw frames and answers each with its opcode and fin bit."""

    def opened(self) -> None:
        while True:
            try:
                frame = self.recv_frame()
            except ConnectionClosed:
                return
            self.send_frame(Frame(Opcode.TEXT, f"{frame.opcode.name}:{int(frame.fin)}".encode()))


class Streamer(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(chunk for chunk in ("a", "b", "c"))  # one message, three frames


class Pinger(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send("pong arrived" if self.ping(b"hi").wait(5) else "no pong")


class Boom(WebSocket):
    def received_message(self, message: Message) -> None:
        raise RuntimeError("handler bug on purpose")


class Goodbye(WebSocket):
    def opened(self) -> None:
        self.close(4001, "done here")


@pytest.mark.parametrize("door", DOORS)
def test_callbacks_echo_and_the_handler_state_is_visible(door: str) -> None:
    with connect(Echo, "/chat", door=door) as ws:
        ws.send("text")
        ws.send(b"\x00\x01")
        assert ws.recv().text == "text"
        assert ws.recv().data == b"\x00\x01"
        handler = ws.handler
        assert isinstance(handler, Echo)
        assert handler.seen == ["text", "0001"]
        assert handler.request is not None and handler.request.path == "/chat"
    assert ws.close_code == 1000
    assert handler.ended == (1000, "")


@pytest.mark.parametrize("door", DOORS)
def test_pull_style_with_and_iteration(door: str) -> None:
    with connect(PullEcho, door=door) as ws:
        for i in range(5):
            ws.send(str(i))
            assert ws.recv().text == str(i)
    assert ws.close_code == 1000


@pytest.mark.parametrize("door", DOORS)
def test_raw_frames_both_ways(door: str) -> None:
    with connect(Framer, door=door) as ws:
        ws.send_frame(Frame(Opcode.TEXT, b"a", fin=False))
        ws.send_frame(Frame(Opcode.CONTINUATION, b"b", fin=True))
        assert ws.recv().text == "TEXT:0"
        assert ws.recv().text == "CONTINUATION:1"


@pytest.mark.parametrize("door", DOORS)
def test_a_generator_is_sent_as_one_fragmented_message(door: str) -> None:
    with connect(Streamer, door=door) as ws:
        ws.send("go")
        assert ws.recv().text == "abc"


@pytest.mark.parametrize("door", DOORS)
def test_pings_both_ways(door: str) -> None:
    with connect(Pinger, door=door) as ws:
        ws.send("go")
        assert ws.recv().text == "pong arrived"  # the client answered the handler's ping
        assert ws.ping(b"p").wait(5)  # and the door answers the client's
    with connect(Echo, door=door) as ws:
        ws.client.pong(b"unsolicited")
        ws.send("after")
        assert ws.recv().text == "after"
        assert ws.handler.pongs == [b"unsolicited"]  # type: ignore[attr-defined]


@pytest.mark.parametrize("door", DOORS)
def test_keepalive_pings_reach_the_client(door: str) -> None:
    with connect(Echo, door=door, ping_interval=0.05, ping_timeout=5) as ws:
        frames = []
        while len(frames) < 2:
            frames.append(ws.client.recv_frame(5))
        assert all(frame.opcode is Opcode.PING for frame in frames)


@pytest.mark.parametrize("door", DOORS)
def test_a_raising_handler_closes_with_1011(door: str) -> None:
    with connect(Boom, door=door) as ws:
        ws.send("x")
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
        assert closed.value.code == 1011


@pytest.mark.parametrize("door", DOORS)
def test_the_handler_closes_first(door: str) -> None:
    with connect(Goodbye, door=door) as ws:
        with pytest.raises(ConnectionClosed):
            ws.recv()
        assert ws.wait_closed() == (4001, "done here")


@pytest.mark.parametrize("door", DOORS)
def test_refusals_carry_the_status(door: str) -> None:
    with pytest.raises(InvalidStatus) as refused:
        connect(Echo, door=door, authenticate=basic_auth({"ann": "secret"}))
    assert refused.value.status == 401
    with pytest.raises(InvalidStatus) as refused:
        connect(Echo, door=door, origins=["https://chat.example"], origin="https://evil.example")
    assert refused.value.status == 403

    def health(request: Request) -> Response | None:
        return Response(200, "OK", Headers([("Content-Length", "2")]), b"ok") if request.path == "/health" else None

    with pytest.raises(InvalidStatus) as refused:
        connect(Echo, "/health", door=door, process_request=health)
    assert refused.value.status == 200 and refused.value.body == b"ok"


@pytest.mark.parametrize("door", DOORS)
def test_credentials_and_subprotocols(door: str) -> None:
    import base64

    token = base64.b64encode(b"ann:secret").decode()
    with connect(
        Echo,
        door=door,
        authenticate=basic_auth({"ann": "secret"}),
        headers=[("Authorization", f"Basic {token}")],
        subprotocols=["chat.v2", "chat.v1"],
        **{"protocols": ["chat.v1"]},
    ) as ws:
        assert ws.client.subprotocol == "chat.v1"
        assert ws.handler.subprotocol == "chat.v1"


@pytest.mark.parametrize("door", DOORS)
def test_limits_apply(door: str) -> None:
    with connect(Echo, door=door, max_message_size=10) as ws:
        ws.send("x" * 11)
        with pytest.raises(ConnectionClosedError) as closed:
            ws.recv()
        assert closed.value.code == 1009


def test_an_unknown_option_fails_before_anything_runs() -> None:
    with pytest.raises(TypeError, match="max_workers"):
        connect(WebSocket, max_workers=4)


def test_an_option_a_kwargs_constructor_refuses_is_a_500() -> None:
    # Echo takes **kwargs, so the option is only refused when it is built: 500, before any 101.
    with pytest.raises(InvalidStatus) as refused:
        connect(Echo, max_workers=4)
    assert refused.value.status == 500


def test_the_fixture_releases_every_connection(ws4web_connect: Any) -> None:
    ws = ws4web_connect(Echo)
    ws.send("kept open on purpose")
    assert ws.recv().text == "kept open on purpose"
    # left open: the fixture shuts it down after the test (no_leaks checks the threads)


class Three(WebSocket):
    def opened(self) -> None:
        for word in ("one", "two", "three"):
            self.send(word)
        self.close()


@pytest.mark.parametrize("door", DOORS)
def test_iteration_ends_at_a_normal_close_after_every_message(door: str) -> None:
    with connect(Three, door=door) as ws:
        assert [m.text for m in ws] == ["one", "two", "three"]
        with pytest.raises(ConnectionClosedOK):
            ws.recv()
