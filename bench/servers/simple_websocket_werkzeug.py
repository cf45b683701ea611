"""simple-websocket on Werkzeug's threaded server (how Flask-Sock runs it): two threads per connection."""

from __future__ import annotations

from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import simple_websocket  # type: ignore[import-untyped]  # noqa: F401
    import werkzeug.serving  # noqa: F401

    return (
        f"simple-websocket {version('simple-websocket')} (wsproto {version('wsproto')}) on Werkzeug "
        f"{version('werkzeug')} threaded server, permessage-deflate on (its default)"
    )


def serve(host: str, port: int) -> None:
    import simple_websocket
    from werkzeug.serving import run_simple

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket":
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"WebSocket only\n"]
        websocket = simple_websocket.Server.accept(environ, max_message_size=MAX_MESSAGE)
        try:
            while True:
                websocket.send(websocket.receive())
        except simple_websocket.ConnectionClosed:
            # receive() wakes up before simple-websocket's reader thread has written its
            # close reply; wait for that thread, or Werkzeug closes the socket under it.
            websocket.thread.join(5)
        # The socket belongs to simple-websocket now and is closed: tell Werkzeug the peer
        # is gone so it writes no HTTP response on it (Werkzeug treats this as a dropped
        # connection and stays quiet).
        raise ConnectionError

    run_simple(host, port, app, threaded=True)


if __name__ == "__main__":
    main(describe, serve)
