"""Echo server: ws4web's ASGI adapter on uvicorn (conformance entry point).

    python examples/echo_asgi.py --port 9001 [--host 127.0.0.1]

Echoes every message back unchanged, on any path, with the same ``Echo`` handler
class as examples/echo_stdlib.py (its plain callback runs on the event loop
thread, under the adapter's watchdog); quiet except for errors. With
WS4WEB_ASGI_ASYNC=1 in the environment the handler is ``AsyncEcho`` instead,
whose ``async def`` callback is awaited on the loop (``compliance/run.py --env
WS4WEB_ASGI_ASYNC=1`` compares the two). uvicorn takes its message size bound
from the app (``ws_max_size``); on Ctrl-C / SIGTERM clients get 1001 (Going
Away) rather than uvicorn's own 1012.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ws4web import WebSocket
from ws4web.adapters.asgi import WebSocketASGIApp, uvicorn_server
from ws4web.messages import Message

MAX_SIZE = 16 * 2**20  # Autobahn's largest cases (section 9) send 16 MiB messages


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class AsyncEcho(WebSocket):
    # The ASGI adapter awaits async def callbacks; the base class declares them plain.
    async def received_message(self, message: Message) -> None:  # type: ignore[override]
        await self.asend(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    handler = AsyncEcho if os.environ.get("WS4WEB_ASGI_ASYNC") == "1" else Echo
    app = WebSocketASGIApp(handler, max_message_size=MAX_SIZE)
    server = uvicorn_server(app, host=args.host, port=args.port, log_level="warning")
    server.run()


if __name__ == "__main__":
    main()
