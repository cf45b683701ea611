"""websockets' asyncio server on the standard asyncio event loop."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import websockets.asyncio.server  # noqa: F401

    return f"websockets {version('websockets')} asyncio server (stdlib asyncio loop), permessage-deflate on (default)"


def serve(host: str, port: int) -> None:
    from websockets.asyncio.server import serve as ws_serve

    async def echo(websocket: Any) -> None:
        async for message in websocket:
            await websocket.send(message)

    async def run() -> None:
        async with ws_serve(echo, host, port, max_size=MAX_MESSAGE, backlog=1024) as server:
            await server.serve_forever()

    asyncio.run(run())


if __name__ == "__main__":
    main(describe, serve)
