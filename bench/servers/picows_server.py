"""picows (Cython) on uvloop: a frame-level listener that echoes each data frame as it arrives."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.servers._common import MAX_MESSAGE, main, version


def describe() -> str:
    import picows  # noqa: F401

    try:
        import uvloop  # noqa: F401

        loop = f"uvloop {version('uvloop')}"
    except ImportError:
        loop = "stdlib asyncio loop (uvloop missing)"
    return f"picows {version('picows')} on {loop}, no permessage-deflate (unsupported)"


def serve(host: str, port: int) -> None:
    from picows import WSListener, WSMsgType, ws_create_server

    data_types = (WSMsgType.TEXT, WSMsgType.BINARY, WSMsgType.CONTINUATION)

    class Echo(WSListener):
        def on_ws_frame(self, transport: Any, frame: Any) -> None:
            if frame.msg_type in data_types:
                transport.send(frame.msg_type, frame.get_payload_as_memoryview(), frame.fin)
            elif frame.msg_type == WSMsgType.CLOSE:
                transport.send_close(frame.get_close_code())
                transport.disconnect()

    async def run() -> None:
        server = await ws_create_server(lambda request: Echo(), host, port, max_frame_size=MAX_MESSAGE, backlog=1024)
        await server.serve_forever()

    try:
        import uvloop

        uvloop.run(run())
    except ImportError:
        asyncio.run(run())


if __name__ == "__main__":
    main(describe, serve)
