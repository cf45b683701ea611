"""ws4web handlers on FastAPI routes, with FastAPI's dependencies deciding who gets in.

    python examples/fastapi_app.py [--port 8000] [--host 127.0.0.1]

``/chat/{room}?token=...`` runs the ``Room`` handler for the user a FastAPI
dependency found from the token (``t-ann`` or ``t-bob`` here; a real application
checks a session cookie or a signed token the same way). Without a known token
the dependency raises ``WebSocketException`` and the client gets 403 instead of
the 101. ``/echo`` is open to anyone; ``GET /`` is an ordinary FastAPI route.
Ctrl-C or SIGTERM closes open connections with 1001 (Going Away).

To put ws4web routes around a FastAPI app without touching it (no dependencies
then), wrap it: ``app = WebSocketMiddleware(app, {"/echo": Echo})`` from
``ws4web.adapters.asgi``. docs/fastapi.md is the manual.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from fastapi import Depends, FastAPI, WebSocketException, status

from ws4web import WebSocket
from ws4web.adapters.asgi import uvicorn_server
from ws4web.adapters.fastapi import add_websocket_route
from ws4web.messages import Message

TOKENS = {"t-ann": "ann", "t-bob": "bob"}


def current_user(token: str = "") -> str:
    """The user the ``token`` query parameter names; refuses the upgrade otherwise."""
    user = TOKENS.get(token)
    if user is None:
        raise WebSocketException(status.WS_1008_POLICY_VIOLATION, "unknown token")
    return user


class Room(WebSocket):
    """Greets the user in the room of the path, then echoes with the user's name in front."""

    user: str  # set from the dependency before opened()

    def opened(self) -> None:
        self.send(f"{self.user} joined {self.view_args['room']}")

    def received_message(self, message: Message) -> None:
        self.send(f"{self.user}: {message}")


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


app = FastAPI()
add_websocket_route(app, "/chat/{room}", Room, depends={"user": Depends(current_user)}, max_message_size=2**16)
add_websocket_route(app, "/echo", Echo, max_message_size=2**16)


@app.get("/")
def home() -> dict[str, str]:
    return {"chat": "/chat/{room}?token=t-ann", "echo": "/echo"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"http://{args.host}:{args.port}/  ws://{args.host}:{args.port}/chat/lobby?token=t-ann", flush=True)
    # uvicorn stops gracefully on Ctrl-C and SIGTERM, then raises the signal again
    # (so that the process ends "by" it): end quietly instead.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        uvicorn_server(app, host=args.host, port=args.port, log_level="warning").run()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
