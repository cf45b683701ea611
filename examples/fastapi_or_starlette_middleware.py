"""ws4web handlers next to an existing Starlette or FastAPI app, with WebSocketMiddleware.

    python examples/fastapi_or_starlette_middleware.py [--port 8000] [--host 127.0.0.1]

The app's own routes answer exactly as before (``GET /`` here, and its 404s);
WebSocket upgrades to ``/echo`` and ``/clock`` run ws4web handlers, the same
classes the standard-library server runs. With FastAPI (a Starlette app) it is the same
line, either way round::

    app = FastAPI()
    app.add_middleware(WebSocketMiddleware, routes={"/echo": Echo, "/clock": Clock})
    # or: app = WebSocketMiddleware(app, {"/echo": Echo, "/clock": Clock})

Django: ``application = WebSocketMiddleware(get_asgi_application(), {...})``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from ws4web import WebSocket
from ws4web.adapters.asgi import WebSocketMiddleware
from ws4web.messages import Message


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class Clock(WebSocket):
    """Sends the server's time every second until the client leaves (pull style, in its own thread)."""

    def opened(self) -> None:
        for tick in itertools.count():
            try:
                self.recv(timeout=1.0)  # what the client says is ignored; ConnectionClosed ends the loop
            except TimeoutError:
                self.send(f"tick {tick}: {time.strftime('%H:%M:%S')}")


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse("an ordinary Starlette route; WebSockets at /echo and /clock\n")


site = Starlette(routes=[Route("/", home)])  # the existing app, untouched
app = WebSocketMiddleware(site, {"/echo": Echo, "/clock": Clock}, max_message_size=2**16)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    print(f"http://{args.host}:{args.port}/  ws://{args.host}:{args.port}/echo  ws://{args.host}:{args.port}/clock")
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
