"""Echo server on CherryPy with the ws4web tool and plugin (conformance entry point).

    python examples/echo_cherrypy.py --port 9002 [--host 127.0.0.1]

Echoes every message back unchanged, on any path (the root's ``default``
handler takes them all); quiet except for errors. Ctrl-C or SIGTERM stops the
engine, which closes every WebSocket with 1001 (Going Away); the exit status is 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import cherrypy

from ws4web import WebSocket
from ws4web.adapters.cherrypy import install
from ws4web.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from ws4web.messages import Message


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class Root:
    @cherrypy.expose  # type: ignore[untyped-decorator]  # cherrypy is untyped
    def default(self, *args: str, **kwargs: str) -> str:
        return ""  # the tool has answered 101 (or refused) by now; a 101 has no body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002)
    parser.add_argument("--max-message-size", type=int, default=16 * 2**20)
    parser.add_argument("--no-deflate", action="store_true", help="do not offer permessage-deflate")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    for handler in logging.getLogger().handlers:
        # CherryPy sets its own loggers to INFO; filter at the handler, so only errors show.
        handler.setLevel(logging.ERROR)
    install()
    cherrypy.config.update(
        {
            "server.socket_host": args.host,
            "server.socket_port": args.port,
            "server.socket_queue_size": 128,
            "engine.autoreload.on": False,
            "checker.on": False,
            "log.screen": False,
            "log.access_file": "",
            "log.error_file": "",
        }
    )
    config = {
        "/": {
            "tools.websocket.on": True,
            "tools.websocket.handler_cls": Echo,
            "tools.websocket.max_message_size": args.max_message_size,
            "tools.websocket.extensions": [] if args.no_deflate else [ServerPerMessageDeflateFactory()],
        }
    }
    cherrypy.tree.mount(Root(), "/", config)
    if hasattr(cherrypy.engine, "signal_handler"):
        cherrypy.engine.signal_handler.subscribe()  # SIGTERM stops the engine cleanly; block() handles Ctrl-C
    run_engine()


def run_engine() -> None:
    """Start CherryPy's engine and block until Ctrl-C or SIGTERM stops it (1001 to every WebSocket).

    The engine listens before it has finished starting, and a signal in between
    aborts the start (exit status 70, or a traceback): the signals wait until it has started.
    """
    stops = {signal.SIGINT, signal.SIGTERM}
    mask = getattr(signal, "pthread_sigmask", None)  # POSIX only
    try:
        if mask is not None:
            mask(signal.SIG_BLOCK, stops)  # the engine's threads inherit the mask
        try:
            cherrypy.engine.start()
        finally:
            if mask is not None:
                mask(signal.SIG_UNBLOCK, stops)  # a signal held back is handled here
        cherrypy.engine.block()  # handles Ctrl-C itself
    except KeyboardInterrupt:  # a Ctrl-C held back during the start
        cherrypy.engine.exit()


if __name__ == "__main__":
    main()
