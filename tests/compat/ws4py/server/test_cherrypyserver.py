"""The CherryPy tool and plugin under ws4py's names: ws_handler in the page handler, ``manager``, ``version``.

CherryPy's engine is process-wide, so the program runs in a process of its own.
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
    import sys

    import cherrypy

    from ws4web.compat.ws4py.server.cherrypyserver import WebSocketPlugin, WebSocketTool
    from ws4web.compat.ws4py.websocket import WebSocket


    class Counter(WebSocket):
        page_saw_me = False

        def received_message(self, message):
            if str(message) == "count":
                self.send(str(len(plugin.manager)))
            elif str(message) == "all":
                plugin.manager.broadcast("from the manager")
            elif str(message) == "page":
                self.send(f"the page handler saw me: {self.page_saw_me}")


    class Root:
        @cherrypy.expose
        def ws(self):
            cherrypy.request.ws_handler.page_saw_me = True  # ws4py's name, the handler itself


    cherrypy.config.update(
        {"server.socket_host": "127.0.0.1", "server.socket_port": int(sys.argv[1]), "engine.autoreload.on": False}
    )
    plugin = WebSocketPlugin(cherrypy.engine)
    plugin.subscribe()
    cherrypy.tools.websocket = WebSocketTool()
    config = {"tools.websocket.on": True, "tools.websocket.handler_cls": Counter, "tools.websocket.version": 13}
    cherrypy.quickstart(Root(), "", config={"/ws": config})
    """
)


def test_plugin_manager_and_ws_handler(tmp_path: Path) -> None:
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    port = free_port()
    url = f"ws://127.0.0.1:{port}/ws"
    with server_process([sys.executable, str(program), str(port)], port, ready="ENGINE Bus STARTED") as server:
        with connect(url, timeout=TIMEOUT) as a, connect(url, timeout=TIMEOUT) as b:
            a.send("page")
            assert a.recv(TIMEOUT).text == "the page handler saw me: True"
            b.send("count")
            assert b.recv(TIMEOUT).text == "2"
            a.send("all")
            assert a.recv(TIMEOUT).text == b.recv(TIMEOUT).text == "from the manager"
            server.proc.send_signal(signal.SIGINT)
            for client in (a, b):
                with pytest.raises(ConnectionClosed) as closed:
                    client.recv(TIMEOUT)
                assert closed.value.code == 1001
        server.proc.wait(TIMEOUT)
    assert "Traceback" not in server.output, server.output
