"""A bare Starlette WebSocket endpoint on uvicorn: the baseline for ws4web's ASGI adapter on the same server."""

from __future__ import annotations

from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import starlette  # noqa: F401
    from uvicorn.config import Config

    config = Config(app=None)  # type: ignore[arg-type]
    return (
        f"Starlette {version('starlette')} WebSocketRoute on uvicorn {version('uvicorn')} "
        f"(ws={config.ws}, http={config.http}, loop={config.loop}; websockets {version('websockets')}), "
        "permessage-deflate on (uvicorn default)"
    )


def serve(host: str, port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute

    async def echo(websocket: Any) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if message.get("bytes") is not None:
                await websocket.send_bytes(message["bytes"])
            else:
                await websocket.send_text(message["text"])

    app = Starlette(routes=[WebSocketRoute("/", echo)])
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False, ws_max_size=MAX_MESSAGE, backlog=1024)


if __name__ == "__main__":
    main(describe, serve)
