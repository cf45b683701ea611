"""Reference echo server: a bare Starlette WebSocket endpoint on uvicorn, no ws4web.

    python examples/echo_starlette_bare.py --port 9001 [--host 127.0.0.1]

The same uvicorn and settings as examples/echo_asgi.py, so the Autobahn runner
can tell what the ASGI adapter adds or loses: whatever the server itself does
(framing, pings, UTF-8 checks, close codes) shows up in both reports alike.
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

MAX_SIZE = 16 * 2**20


async def echo(websocket: WebSocket) -> None:
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message.get("bytes") or b"")
    except WebSocketDisconnect:
        pass


# "/{path:path}" matches every path, "/" included.
app = Starlette(routes=[WebSocketRoute("/{path:path}", echo)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", ws_max_size=MAX_SIZE)


if __name__ == "__main__":
    main()
