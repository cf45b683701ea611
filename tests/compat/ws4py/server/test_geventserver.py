"""ws4py's gevent WSGIServer: stop() closes the WebSockets of the applications it served with 1001.

The server runs in a process of its own, stopped by SIGTERM, which the program turns
into ``server.stop()``; ``WebSocketWSGIApplication`` takes ws4py's argument order.
"""

from __future__ import annotations

import signal
import sys
import textwrap
from pathlib import Path

import pytest

from ws4web import ConnectionClosed, connect

from ...conftest import TIMEOUT, free_port, server_process

pytestmark = pytest.mark.timeout(90)

PROGRAM = textwrap.dedent(
    """
    import signal
    import sys

    import gevent

    from ws4web.compat.ws4py.server.geventserver import WebSocketWSGIApplication, WSGIServer
    from ws4web.compat.ws4py.websocket import EchoWebSocket

    app = WebSocketWSGIApplication(["chat"], None, EchoWebSocket)  # protocols, extensions, handler_cls
    server = WSGIServer(("127.0.0.1", int(sys.argv[1])), app, log=None)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    server.serve_forever()
    print("stopped", flush=True)
    """
)


def test_stop_closes_with_1001(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/"
    with server_process([sys.executable, str(program), str(port)], port) as server:
        with connect(url, protocols=["chat"], timeout=TIMEOUT) as a, connect(url, timeout=TIMEOUT) as b:
            assert a.subprotocol == "chat" and b.subprotocol is None
            a.send("echo")
            assert a.recv(TIMEOUT).text == "echo"
            server.proc.send_signal(signal.SIGTERM)
            for client in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    client.recv(TIMEOUT)
                assert closed.value.code == 1001
        assert server.proc.wait(TIMEOUT) == 0
    assert server.output.strip() == "stopped", server.output
