"""The chat demo as a Flask app, its /ws endpoint a Flask WebSocket route; runs on Werkzeug or gunicorn.

Werkzeug's development server (one thread per connection)::

    python examples/flask_chat_werkzeug.py [--port 8080] [--host 127.0.0.1]

gunicorn: see examples/flask_chat_gunicorn.py, which serves this same app.

Then open http://127.0.0.1:8080/ in two browser tabs. Flask serves the page
and routes /ws like any other URL: ``before_request`` functions and view
decorators run first, then ws4web upgrades the request and runs ChatHandler
(ws4web/demo/handler.py, unchanged) inside Flask's request context. On
Werkzeug, Ctrl-C or SIGTERM closes every chat with 1001 (Going Away) and exits
with status 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, ".."))

import flask

from ws4web.adapters.flask import WebSockets
from ws4web.adapters.middleware import werkzeug_request_handler
from ws4web.demo import page
from ws4web.demo.handler import ChatHandler

PAGE = page()

app = flask.Flask(__name__)
ws = WebSockets(app, max_message_size=2**16)
ws.route("/ws")(ChatHandler)  # or @ws.route("/ws") above a class defined here


@app.route("/")
def index() -> flask.Response:
    return flask.Response(PAGE, mimetype="text/html")


@app.route("/health")
def health() -> dict[str, int]:
    """A plain Flask route beside the chat: how many WebSockets are open."""
    return {"websockets": len(ws.websockets)}


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(description="ws4web chat demo (Flask on Werkzeug's development server)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    signal.signal(signal.SIGTERM, _interrupt)  # SIGTERM stops the server as Ctrl-C does
    try:
        # threaded: every WebSocket holds its connection's thread for its whole life.
        # request_handler: each request head must arrive within 10 s (Werkzeug's own has no bound).
        # On Ctrl-C Werkzeug's server stops listening and returns; the chats go on...
        app.run(
            host=args.host,
            port=args.port,
            threaded=True,
            debug=False,
            use_reloader=False,
            request_handler=werkzeug_request_handler(),
        )
    except KeyboardInterrupt:
        pass  # ... unless it came before the server was up
    finally:
        ws.shutdown(timeout=2.0)  # ... until this closes them with 1001 (Going Away)


if __name__ == "__main__":
    main()
