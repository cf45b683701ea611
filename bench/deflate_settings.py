"""What permessage-deflate's zlib settings cost a server: CPU per message, bytes on the wire, memory per connection.

    python -m bench.deflate_settings                 # the grid below, 16 KiB JSON-like text
    python -m bench.deflate_settings --size 1024 --messages 2000

In-process, no sockets: one server-side ``PerMessageDeflate`` per setting inflates
what a client sent (compressed without context takeover, as the ``deflate16k``
scenario of ``python -m bench`` sends it) and compresses the same text back, as
an echo server does. Two message shapes, because context takeover makes them
differ by an order of magnitude:

* ``same``: one text repeated. With a window larger than the message, deflate
  finds the whole previous message in its window and emits a few long matches:
  cheap and tiny, and flattering for large windows.
* ``varied``: a cycle of distinct texts of the same kind (different records);
  only the structure repeats, which is what most applications send.

Also printed: the same work on bare zlib objects (the cost of the extension's
Python around zlib) and the memory one connection keeps between messages
(tracemalloc over many instances, each after one message in both directions).
The results and the chosen defaults are discussed in docs/compression.md.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.loadgen import json_text  # noqa: E402
from ws4web.extensions.permessage_deflate import TRAILER, PerMessageDeflate  # noqa: E402
from ws4web.frames import Frame, Opcode  # noqa: E402

# (window bits both ways, memLevel, level): zlib's defaults (ws4web's before 2026-12),
# aiohttp's (level 1), websockets' server defaults (12 / 5 / 6), and smaller settings.
SETTINGS = [
    (15, 8, 6),
    (15, 8, 1),
    (15, 5, 1),
    (13, 5, 1),
    (12, 5, 6),
    (12, 5, 1),
    (10, 4, 1),
]


def client_frames(texts: list[bytes], bits: int) -> list[bytes]:
    """Each text compressed on its own (no context takeover), trailer stripped (§7.2.1)."""
    out = []
    for text in texts:
        compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -bits)
        body = compressor.compress(text) + compressor.flush(zlib.Z_SYNC_FLUSH)
        out.append(body[:-4])
    return out


def run_extension(bits: int, mem: int, level: int, bodies: list[bytes], count: int) -> tuple[float, int]:
    """Server CPU µs per message (inflate + deflate back) and mean bytes sent, through PerMessageDeflate."""
    ext = PerMessageDeflate(
        local_max_window_bits=bits, remote_max_window_bits=bits, compression_level=level, mem_level=mem
    )
    frames = [Frame(Opcode.TEXT, body, True, True) for body in bodies]
    sent = 0
    n = len(frames)
    start = time.process_time()
    for i in range(count):
        message = ext.decode(frames[i % n], max_size=1 << 20)
        sent += len(ext.encode(Frame(Opcode.TEXT, message.data)).data)
    cpu = time.process_time() - start
    return cpu / count * 1e6, sent // count


def run_zlib(bits: int, mem: int, level: int, bodies: list[bytes], count: int) -> float:
    """The same work on bare zlib objects: the floor under the extension."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, -bits, mem)
    n = len(bodies)
    start = time.process_time()
    for i in range(count):
        decompressor = zlib.decompressobj(-bits)
        text = decompressor.decompress(bodies[i % n] + TRAILER)
        compressor.compress(text)
        compressor.flush(zlib.Z_SYNC_FLUSH)
    return (time.process_time() - start) / count * 1e6


def memory(bits: int, mem: int, level: int, text: bytes, body: bytes, count: int = 200) -> float:
    """KiB one connection keeps between messages (context takeover both ways)."""
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    keep = []
    for _ in range(count):
        ext = PerMessageDeflate(
            local_max_window_bits=bits, remote_max_window_bits=bits, compression_level=level, mem_level=mem
        )
        ext.decode(Frame(Opcode.TEXT, body, True, True), max_size=1 << 20)
        ext.encode(Frame(Opcode.TEXT, text))
        keep.append(ext)
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    del keep
    return used / count / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16 * 1024, help="message size in bytes")
    parser.add_argument("--messages", type=int, default=600, help="messages per measurement")
    parser.add_argument("--varied", type=int, default=32, help="distinct texts in the varied cycle")
    args = parser.parse_args(argv)

    same = [json_text(args.size, seed=7)]
    varied = [json_text(args.size, seed=100 + i) for i in range(args.varied)]

    print(f"{args.size} B JSON-like text, {args.messages} messages per measurement; CPU µs per echoed message")
    print(
        "| window / memLevel / level | same: µs (bare zlib) | same: bytes sent"
        " | varied: µs (bare zlib) | varied: bytes sent | KiB per connection |"
    )
    print("|---|--:|--:|--:|--:|--:|")
    for bits, mem, level in SETTINGS:
        cells = []
        for texts in (same, varied):
            bodies = client_frames(texts, bits)
            run_extension(bits, mem, level, bodies, max(20, args.messages // 10))  # warm up
            us, size = run_extension(bits, mem, level, bodies, args.messages)
            floor = run_zlib(bits, mem, level, bodies, args.messages)
            cells += [f"{us:.0f} ({floor:.0f})", f"{size:,}"]
        kib = memory(bits, mem, level, same[0], client_frames(same, bits)[0])
        print(f"| {bits} / {mem} / {level} | {' | '.join(cells)} | {kib:.0f} |")


if __name__ == "__main__":
    main()
