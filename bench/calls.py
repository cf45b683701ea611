"""Python-level calls the server's loop thread makes per 64-byte echo round trip, and where.

    python -m bench.calls                      # 2,000 round trips, C accelerator as installed
    WS4WEB_NO_SPEEDUPS=1 python -m bench.calls  # pure Python
    python -m bench.calls --stream 64          # 64 messages per write: calls per message

A ``WebSocketServer`` with an echo handler (``send(message)`` in ``received_message``)
runs in this process; a raw-socket client in the main thread sends one masked 64-byte
binary frame (or ``--stream`` of them in one write) and reads the echoes. A profile
function counts, on the server's loop thread only, every ``call`` (a Python function)
and ``c_call`` (a builtin or C method) event; the counts are divided by the number of
messages. Nothing is timed: this counts work, which on a shared machine holds still
where CPU time does not. Measurements go in docs/performance.md.
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import Endpoint, client_frame, connect, server_frame  # noqa: E402
from ws4web import WebSocket, WebSocketServer  # noqa: E402
from ws4web.messages import Message  # noqa: E402

PAYLOAD = bytes(range(64))


class Echo(WebSocket):
    def received_message(self, message: Message) -> None:
        self.send(message)


class Counter:
    """A profile function counting events per function, for threads marked as the loop's."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.loop_threads: set[int] = set()
        self.on = False

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.on or event not in ("call", "c_call") or threading.get_ident() not in self.loop_threads:
            return
        if event == "call":
            code = frame.f_code
            name = f"{Path(code.co_filename).parent.name}/{Path(code.co_filename).name}:{code.co_name}"
        else:
            name = f"[C] {getattr(arg, '__qualname__', repr(arg))}"
        self.counts[name] += 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--stream", type=int, default=1, help="messages per client write")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args(argv)

    counter = Counter()
    threading.setprofile(counter)  # every thread started from now on

    server = WebSocketServer(Echo, "127.0.0.1", 0)
    with server:
        server.start()
        # The loop thread(s): every thread the server started, known before counting begins.
        sock, _ = connect(Endpoint("127.0.0.1", server.port, 0))
        counter.loop_threads = {t.ident for t in threading.enumerate() if t is not threading.main_thread() and t.ident}
        frame = client_frame(0x2, PAYLOAD) * args.stream
        echo = server_frame(0x2, PAYLOAD) * args.stream
        buf = bytearray(len(echo))

        def batch() -> None:
            sock.sendall(frame)
            view = memoryview(buf)
            got = 0
            while got < len(echo):
                n = sock.recv_into(view[got:])
                if not n:
                    raise SystemExit("the server closed the connection")
                got += n
            if buf != echo:
                raise SystemExit("unexpected echo")

        for _ in range(200):  # warm up: caches, lazily built state
            batch()
        batches = max(1, args.messages // args.stream)
        counter.on = True
        for _ in range(batches):
            batch()
        counter.on = False
        sock.close()
    threading.setprofile(None)

    messages = batches * args.stream
    total = sum(counter.counts.values())
    python = sum(n for name, n in counter.counts.items() if not name.startswith("[C]"))
    unit = "round trip" if args.stream == 1 else f"message ({args.stream} per write)"
    print(f"{messages} messages; loop-thread calls per {unit}: {total / messages:.1f} ")
    print(f"({python / messages:.1f} Python functions + {(total - python) / messages:.1f} builtins/C methods)\n")
    print("| calls per message | function |\n|--:|---|")
    for name, n in counter.counts.most_common(args.top):
        print(f"| {n / messages:.2f} | `{name}` |")


if __name__ == "__main__":
    main()
