import pytest
from ws4web import WebSocket
from ws4web.testing import connect
from ws4web.auth import basic_auth
from ws4web.exceptions import InvalidStatus, ConnectionClosedOK

class Echo(WebSocket):
    def opened(self):
        self.seen = []
    def received_message(self, m):
        self.seen.append(m.text)
        self.send(m)

class Pull(WebSocket):
    def opened(self):
        for m in self:
            self.send(m)

@pytest.mark.parametrize("door", ["server", "blocking"])
@pytest.mark.parametrize("cls", [Echo, Pull])
def test_echo(door, cls):
    with connect(cls, "/chat", door=door) as ws:
        ws.send("hi")
        assert ws.recv().text == "hi"
        assert ws.ping().wait(2)
    assert ws.close_code == 1000

def test_refused():
    with pytest.raises(InvalidStatus) as exc:
        connect(Echo, authenticate=basic_auth({"a": "b"}))
    assert exc.value.status == 401

def test_handler_state():
    with connect(Echo) as ws:
        ws.send("x"); ws.recv()
        assert ws.handler.seen == ["x"]
