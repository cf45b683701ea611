"""What the fuzz harnesses share: the input layout (chunk sizes + body) and the atheris entry point.

Every harness reads its input the same way::

    byte 0      configuration bits (each harness documents its own)
    byte 1      K, the number of chunk sizes that follow
    2*K bytes   K big-endian 16-bit chunk sizes (0 feeds an empty chunk)
    the rest    the body: the bytes to feed (or a description of them)

so the fuzzer mutates the bytes and the way they are cut into ``recv()`` results
independently. A harness module is importable without atheris (``run.py
--replay`` uses that); it is instrumented only when run as a fuzzer.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

# The harnesses live in fuzzing/; ws4web is the package next to it.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

__all__ = ["ROOT", "FuzzInput", "fuzz_main", "instrumented", "split_input", "u16", "u64"]


class FuzzInput:
    """One decoded fuzz input: configuration byte, chunk sizes and body."""

    __slots__ = ("body", "config", "sizes")

    def __init__(self, config: int, sizes: list[int], body: bytes) -> None:
        self.config = config
        self.sizes = sizes
        self.body = body

    def chunks(self, data: bytes) -> list[bytes]:
        """``data`` cut by the chunk sizes; whatever is left is one last chunk."""
        pieces: list[bytes] = []
        pos = 0
        for size in self.sizes:
            pieces.append(data[pos : pos + size])
            pos += size
        if pos < len(data):
            pieces.append(data[pos:])
        return pieces

    @staticmethod
    def build(config: int, sizes: list[int], body: bytes) -> bytes:
        """The raw input for ``config``, ``sizes`` and ``body`` (to write seeds)."""
        assert len(sizes) < 256
        head = bytes([config, len(sizes)]) + b"".join(s.to_bytes(2, "big") for s in sizes)
        return head + body


def split_input(data: bytes) -> FuzzInput:
    """Decode the common layout; a short input reads as zeros, never fails."""
    config = data[0] if data else 0
    count = data[1] if len(data) > 1 else 0
    pos = 2
    sizes: list[int] = []
    for _ in range(count):
        if pos + 2 > len(data):
            break
        sizes.append(int.from_bytes(data[pos : pos + 2], "big"))
        pos += 2
    return FuzzInput(config, sizes, data[pos:])


def u16(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 2].ljust(2, b"\0"), "big")


def u64(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos : pos + 8].ljust(8, b"\0"), "big")


def _atheris() -> Any:
    """atheris, imported by name so that type checkers need no stubs for it."""
    return importlib.import_module("atheris")


@contextlib.contextmanager
def instrumented(enabled: bool) -> Iterator[None]:
    """Instrument the ws4web modules imported inside the block (when fuzzing).

    Coverage guidance needs atheris to rewrite ws4web's bytecode as it is
    imported; the harness's own code and the standard library stay plain.
    """
    if not enabled:
        yield
        return
    with _atheris().instrument_imports(include=["ws4web"]):
        yield


def fuzz_main(test_one_input: Callable[[bytes], None]) -> None:
    """Hand ``test_one_input`` to libFuzzer with this process's arguments."""
    atheris = _atheris()
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
