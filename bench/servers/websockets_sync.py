"""websockets' threaded server (websockets.sync.server), a thread per connection."""

from __future__ import annotations

from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import websockets.sync.server  # noqa: F401

    return f"websockets {version('websockets')} sync (threaded) server, permessage-deflate on (its default)"


def serve(host: str, port: int) -> None:
    from websockets.sync.server import serve as ws_serve

    def echo(websocket: Any) -> None:
        for message in websocket:
            websocket.send(message)

    with ws_serve(echo, host, port, max_size=MAX_MESSAGE) as server:
        server.serve_forever()


if __name__ == "__main__":
    main(describe, serve)
