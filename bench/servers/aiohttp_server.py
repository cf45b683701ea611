"""aiohttp's web server with a WebSocketResponse handler, on the standard asyncio loop."""

from __future__ import annotations

from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import aiohttp.web  # noqa: F401

    return f"aiohttp {version('aiohttp')} web.WebSocketResponse (stdlib asyncio loop), permessage-deflate on (default)"


def serve(host: str, port: int) -> None:
    from aiohttp import WSMsgType, web

    async def echo(request: Any) -> Any:
        websocket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE)
        await websocket.prepare(request)
        async for message in websocket:
            if message.type == WSMsgType.TEXT:
                await websocket.send_str(message.data)
            elif message.type == WSMsgType.BINARY:
                await websocket.send_bytes(message.data)
        return websocket

    app = web.Application()
    app.router.add_get("/", echo)
    web.run_app(app, host=host, port=port, print=None, access_log=None, backlog=1024)


if __name__ == "__main__":
    main(describe, serve)
