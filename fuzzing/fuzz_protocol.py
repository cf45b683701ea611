"""Fuzz harness for the frame parser and the sans-I/O Protocol, server and client side.

Input layout (see common.py): ``[config][K][K x u16 chunk sizes][body]``.

config bits::

    0x01  side: 0 = server (reads masked frames), 1 = client
    0x06  max_message_size: None, 0, 125, 70000
    0x18  max_frame_size:   None, 0, 10, 70000
    0x20  body is a frame list the harness encodes (else raw wire bytes)
    0x40  permessage-deflate negotiated (RSV1 belongs to it)
    0x80  the transport reaches EOF after the last chunk

A chunk size with its top bit set (0x8000 | n) is not a chunk but a local action
between two reads: send a close frame (with or without a code), a ping, a pong,
a text message, or fail the connection with 1008 (see ``steps``).

Frame list (structured mode), one entry per frame::

    [b0: FIN, RSV1-3, opcode as on the wire]
    [b1: 0x80 = mask the wrong way; low 7 bits: 0-125 payload length,
         126 = u16 length follows, 127 = u64 declared length follows]
    [payload: the length, or what is left of the input]

The wire is cut into chunks by the sizes and fed to ``receive_data``. The checks:

* nothing escapes ``receive_data`` / ``receive_eof`` (an exception is a crash);
* once the protocol failed, or emitted SEND_EOF, it emits nothing more;
* a failure closes with 1002, 1007 or 1009 (1011 would mean an unexpected
  exception inside the parser), and ``close_code`` is a documented code;
* the reader buffer never exceeds the configured limit plus a frame header
  once ``events_received`` returned ``[]`` after a read (until then it also
  holds frames parsed ``max_pending`` at a time);
* what the protocol writes is well-formed frames, masked iff client: a pong
  for every ping, in order (§5.5.2), then one close frame, then SEND_EOF last;
* without extensions, an independent model of RFC 6455 (written here from the
  RFC, not from ws4web) predicts exactly which frames are delivered and the
  close code: the protocol accepts only valid frames and rejects invalid ones
  with the right code, whatever the chunking;
* with permessage-deflate, every delivered message is within the limit and
  text is valid UTF-8;
* where the C accelerator is built, the compiled fast path (ws4web/_speedups.c)
  and the Python parser deliver the same frames, write the same frames and end
  the same way, step by step (``check_fast_path``).
"""

from __future__ import annotations

import codecs
import struct
import sys
import zlib
from typing import NamedTuple

from common import FuzzInput, fuzz_main, instrumented, split_input, u16, u64

with instrumented(__name__ == "__main__"):
    from ws4web import protocol as protocol_module
    from ws4web.exceptions import ConnectionClosed
    from ws4web.extensions.permessage_deflate import PerMessageDeflate
    from ws4web.frames import Frame
    from ws4web.protocol import CLIENT, SEND_EOF, SERVER, Protocol, State

MESSAGE_LIMITS: tuple[int | None, ...] = (None, 0, 125, 70000)
FRAME_LIMITS: tuple[int | None, ...] = (None, 0, 10, 70000)
MASK_KEY = b"\x37\xfa\x21\x3d"
MAX_HEADER = 14  # 2 bytes, 8 of extended length, 4 of mask key (RFC 6455 §5.2)

# RFC 6455 §5.2 / §11.8 opcodes, and the close codes §7.4 allows on the wire.
VALID_OPCODES = frozenset((0x0, 0x1, 0x2, 0x8, 0x9, 0xA))
WIRE_CLOSE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) | frozenset(range(3000, 5000))
FAILURE_CODES = frozenset((1002, 1007, 1009))


class Config(NamedTuple):
    client: bool
    message_limit: int | None
    frame_limit: int | None
    structured: bool
    deflate: bool
    eof: bool


def decode_config(byte: int) -> Config:
    return Config(
        client=bool(byte & 0x01),
        message_limit=MESSAGE_LIMITS[(byte >> 1) & 3],
        frame_limit=FRAME_LIMITS[(byte >> 3) & 3],
        structured=bool(byte & 0x20),
        deflate=bool(byte & 0x40),
        eof=bool(byte & 0x80),
    )


def encode_config(config: Config) -> int:
    return (
        int(config.client)
        | MESSAGE_LIMITS.index(config.message_limit) << 1
        | FRAME_LIMITS.index(config.frame_limit) << 3
        | int(config.structured) << 5
        | int(config.deflate) << 6
        | int(config.eof) << 7
    )


# -- building the wire (structured mode) -------------------------------------------------


def xor(data: bytes, key: bytes) -> bytes:
    if not data:
        return b""
    repeated = (key * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(data), "big")


def deflate(payload: bytes, fin: bool) -> bytes:
    """RFC 7692 §7.2.1: raw deflate, sync flush, trailer removed on the last frame."""
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if fin else data


def build_wire(body: bytes, masked: bool, compress: bool) -> bytes:
    """Encode the frame list in ``body``; frames are masked iff ``masked`` (unless flipped)."""
    out = bytearray()
    pos = 0
    while pos + 2 <= len(body):
        b0, b1 = body[pos], body[pos + 1]
        pos += 2
        mask = masked != bool(b1 & 0x80)
        selector = b1 & 0x7F
        declared: int | None = None
        if selector == 126:
            size = u16(body, pos)
            pos += 2
        elif selector == 127:
            declared = u64(body, pos)
            pos += 8
            size = min(declared, len(body) - pos)
        else:
            size = selector
        payload = body[pos : pos + size]
        pos += size
        if compress and b0 & 0x40 and (b0 & 0x0F) in (0x1, 0x2):
            payload = deflate(payload, bool(b0 & 0x80))
        length = declared if declared is not None else len(payload)
        if selector == 127 or length > 0xFFFF:
            header = struct.pack("!BBQ", b0, 0x80 * mask | 127, length)
        elif length > 125 or selector == 126:
            header = struct.pack("!BBH", b0, 0x80 * mask | 126, length)
        else:
            header = struct.pack("!BB", b0, 0x80 * mask | length)
        if mask:
            out += header + MASK_KEY + xor(payload, MASK_KEY)
        else:
            out += header + payload
    return bytes(out)


# -- an independent model of what a receiver must do ---------------------------------------


class Received(NamedTuple):
    fin: bool
    opcode: int
    data: bytes


class Expected:
    """RFC 6455 applied to the whole wire at once: frames delivered, pongs, close.

    The rules and their order follow the RFC's structure: header rules first
    (§5.2 opcodes and RSV, §5.1 masking, §5.5 control frames, §5.2 length top bit),
    then the size limit on the header (§10.4, 1009), then per-frame semantics
    (§5.4 fragmentation, §8.1 UTF-8 with fail-fast, §5.5.1 close payloads).
    """

    def __init__(self, wire: bytes, *, server: bool, message_limit: int | None, frame_limit: int | None) -> None:
        self.frames: list[Received] = []
        self.pings: list[bytes] = []
        self.failure: int | None = None
        self.close: tuple[int, str] | None = None
        self._run(wire, server, message_limit, frame_limit)

    def _run(self, wire: bytes, server: bool, message_limit: int | None, frame_limit: int | None) -> None:
        pos = 0
        fragment: int | None = None  # opcode of the fragmented message in progress
        size = 0  # its size so far
        decoder: codecs.IncrementalDecoder | None = None
        end = len(wire)
        while end - pos >= 2:
            b0, b1 = wire[pos], wire[pos + 1]
            fin, opcode, masked, length = bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), b1 & 0x7F
            if opcode not in VALID_OPCODES or b0 & 0x70 or masked != server:
                self.failure = 1002
                return
            if opcode >= 8 and (not fin or length > 125):
                self.failure = 1002
                return
            header = 2 + {126: 2, 127: 8}.get(length, 0)
            if end - pos < header:  # the length is checked once known, before the mask key
                return
            if length == 126:
                length = u16(wire, pos + 2)
            elif length == 127:
                length = u64(wire, pos + 2)
                if length >> 63:
                    self.failure = 1002
                    return
            if opcode < 8:
                limit = frame_limit
                if message_limit is not None:
                    left = message_limit - size
                    limit = left if limit is None else min(limit, left)
                if limit is not None and length > limit:
                    self.failure = 1009
                    return
            header += 4 * masked
            if end - pos - header < length:
                return
            payload = wire[pos + header : pos + header + length]
            if masked:
                payload = xor(payload, wire[pos + header - 4 : pos + header])
            pos += header + length
            if opcode in (0x1, 0x2):
                if fragment is not None:
                    self.failure = 1002
                    return
                if not fin:
                    # Every fragment but the last counts at least 1 byte (ws4web's rule).
                    fragment, size = opcode, len(payload) or 1
                    if message_limit is not None and size > message_limit:
                        self.failure = 1009
                        return
                    decoder = codecs.getincrementaldecoder("utf-8")() if opcode == 0x1 else None
                if opcode == 0x1 and not self._utf8_ok(decoder, payload, fin):
                    self.failure = 1007
                    return
            elif opcode == 0x0:
                if fragment is None:
                    self.failure = 1002
                    return
                size += len(payload) or (0 if fin else 1)
                if message_limit is not None and size > message_limit:
                    self.failure = 1009
                    return
                if decoder is not None and not self._utf8_ok(decoder, payload, fin):
                    self.failure = 1007
                    return
                if fin:
                    fragment, size, decoder = None, 0, None
            elif opcode == 0x9:
                self.pings.append(payload)
            elif opcode == 0x8:
                if len(payload) == 1:
                    self.failure = 1002
                    return
                code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                if payload and code not in WIRE_CLOSE_CODES:
                    self.failure = 1002
                    return
                try:
                    reason = payload[2:].decode("utf-8")
                except UnicodeDecodeError:
                    self.failure = 1007
                    return
                self.frames.append(Received(fin, opcode, payload))
                self.close = (code, reason)
                return  # §5.5.1: nothing after a close frame is data
            self.frames.append(Received(fin, opcode, payload))

    @staticmethod
    def _utf8_ok(decoder: codecs.IncrementalDecoder | None, payload: bytes, fin: bool) -> bool:
        try:
            if decoder is None:
                payload.decode("utf-8")
            else:
                decoder.decode(payload, fin)
        except UnicodeDecodeError:
            return False
        return True


# -- reading what the protocol wrote --------------------------------------------------------


def parse_output(data: bytes, masked: bool, rsv1: bool = False) -> list[Received]:
    """Split our own output into frames, checking the framing on the way."""
    frames: list[Received] = []
    pos = 0
    while pos < len(data):
        assert len(data) - pos >= 2, "truncated frame header in the output"
        b0, b1 = data[pos], data[pos + 1]
        assert b0 & (0x30 if rsv1 else 0x70) == 0, "RSV bits set in an output frame without extensions"
        assert bool(b1 & 0x80) == masked, "output masking is wrong for this side (RFC 6455 §5.3)"
        length = b1 & 0x7F
        header = 2 + {126: 2, 127: 8}.get(length, 0) + 4 * masked
        if length == 126:
            length = u16(data, pos + 2)
            assert length >= 126, "non-minimal length encoding in the output (RFC 6455 §5.2)"
        elif length == 127:
            length = u64(data, pos + 2)
            assert length >= 65536, "non-minimal length encoding in the output (RFC 6455 §5.2)"
        payload = data[pos + header : pos + header + length]
        assert len(payload) == length, "truncated frame payload in the output"
        if masked:
            payload = xor(payload, data[pos + header - 4 : pos + header])
        frames.append(Received(bool(b0 & 0x80), b0 & 0x0F, payload))
        pos += header + length
    return frames


# -- the harness -------------------------------------------------------------------------------


ACTIONS = ("send_close", "send_close_empty", "send_ping", "send_pong", "send_text", "fail")


def steps(sizes: list[int], wire: bytes) -> list[bytes | str]:
    """The chunks of ``wire`` and, where a size has its top bit set, a local action.

    A size of 0x8000 | n is no chunk but ``ACTIONS[n % 6]``: the application
    sending or failing between two reads, so the closing handshake this side
    starts, and sends after a close, are fuzzed too.
    """
    result: list[bytes | str] = []
    pos = 0
    for size in sizes:
        if size & 0x8000:
            result.append(ACTIONS[(size & 0x7FFF) % len(ACTIONS)])
        else:
            result.append(wire[pos : pos + size])
            pos += size
    if pos < len(wire):
        result.append(wire[pos:])
    return result


def local_action(protocol: Protocol, action: str) -> None:
    if action == "send_close":
        protocol.send_close(1000, "bye")
    elif action == "send_close_empty":
        protocol.send_close(None)
    elif action == "send_ping":
        protocol.send_ping(b"local ping")
    elif action == "send_pong":
        protocol.send_pong(b"unsolicited")
    else:
        protocol.send_text(b"local text")


def check(data: bytes) -> None:
    """Run one input; raise AssertionError when ws4web breaks an invariant."""
    fuzz: FuzzInput = split_input(data)
    config = decode_config(fuzz.config)
    server = not config.client
    # A server reads masked frames: encode them so (§5.1), unless the entry flips it.
    wire = build_wire(fuzz.body, masked=server, compress=config.deflate) if config.structured else fuzz.body
    extensions = [PerMessageDeflate()] if config.deflate else []
    protocol = Protocol(
        SERVER if server else CLIENT,
        max_message_size=config.message_limit,
        max_frame_size=config.frame_limit,
        extensions=extensions,
    )

    limits = [n for n in (config.message_limit, config.frame_limit) if n is not None]
    bound: int | None = None
    if limits:
        bound = min(limits)
        if config.deflate and config.message_limit is not None:
            # ws4web lets a compressed frame run a little over the decoded limit
            # (incompressible data grows by up to ~4% at zlib memLevel 1): protocol.py, _parse.
            bound = max(bound, config.message_limit + (config.message_limit >> 4) + 1024)
        bound = max(bound, 125) + MAX_HEADER

    writes: list[bytes] = []
    events: list[Frame] = []
    finished = False  # failed or SEND_EOF emitted: nothing may follow

    def collect(step: str) -> None:
        nonlocal finished
        new_writes = protocol.data_to_send()
        new_events: list[Frame] = []
        while batch := protocol.events_received():  # max_pending frames at a time
            new_events += batch
        new_writes += protocol.data_to_send()
        if finished:
            assert not new_writes, f"bytes written after the connection ended ({step}): {new_writes!r}"
            assert not new_events, f"frames delivered after the connection ended ({step}): {new_events!r}"
        assert all(isinstance(w, bytes) for w in new_writes)
        if SEND_EOF in new_writes:
            assert new_writes.index(SEND_EOF) == len(new_writes) - 1, "bytes written after SEND_EOF"
            finished = True
        if protocol.failure is not None:
            assert finished, "the protocol failed without ending its side of TCP (RFC 6455 §7.1.7)"
        writes.extend(new_writes)
        events.extend(new_events)

    # Whether the peer's bytes made the protocol fail while it was open: then the
    # close frame it sent carries the failure's code.
    peer_failed_open = False
    actions = 0
    for step in steps(fuzz.sizes, wire):
        was_open = protocol.state is State.OPEN
        had_failed = protocol.failure is not None
        if isinstance(step, bytes):
            protocol.receive_data(step)
            collect("receive_data")
            if bound is not None:
                held = protocol.unparsed_bytes  # the memory one connection holds
                assert held <= bound, f"reader buffer holds {held} bytes, limit {bound}"
            peer_failed_open |= was_open and not had_failed and protocol.failure is not None
            continue
        actions += 1
        if step == "fail":
            protocol.fail(1008, "policy")  # never raises, whatever the state
        else:
            try:
                local_action(protocol, step)
            except ConnectionClosed:
                assert not was_open, f"{step} refused on an open connection"
            else:
                assert was_open, f"{step} accepted in state {protocol.state.name}"
        collect(step)
    if config.eof:
        protocol.receive_eof()
        collect("receive_eof")
        assert protocol.state is State.CLOSED
        assert writes and writes[-1] == SEND_EOF, "EOF received but our side of TCP was not ended"

    # What the protocol wrote: well-formed frames, pongs then at most one close.
    output = parse_output(b"".join(w for w in writes if w), masked=not server, rsv1=config.deflate)
    closes = [f for f in output if f.opcode == 0x8]
    assert len(closes) <= 1, "more than one close frame sent"
    allowed = (0x8, 0xA) if not actions else (0x1, 0x8, 0x9, 0xA)
    assert all(f.opcode in allowed and f.fin for f in output), f"unexpected output frames {output!r}"
    if closes:
        assert output[-1].opcode == 0x8, "a frame was sent after the close frame"
        payload = closes[0].data
        assert len(payload) != 1
        if payload:
            assert struct.unpack("!H", payload[:2])[0] in WIRE_CLOSE_CODES, f"invalid close code sent: {payload!r}"
            payload[2:].decode("utf-8")
    if peer_failed_open:
        assert protocol.close_sent is not None
        assert protocol.close_sent.code in FAILURE_CODES, (
            f"failed with {protocol.close_sent.code} ({protocol.failure}): 1011 means an unexpected exception"
        )
        assert protocol.close_code == protocol.close_sent.code
    assert protocol.close_code in WIRE_CLOSE_CODES | {1005, 1006}, f"undocumented close code {protocol.close_code}"

    if config.deflate or actions:
        check_messages(events, config.message_limit)
        return

    # No extension: compare with the independent model.
    expected = Expected(wire, server=server, message_limit=config.message_limit, frame_limit=config.frame_limit)
    got = [Received(f.fin, int(f.opcode), f.data) for f in events]
    assert all(not (f.rsv1 or f.rsv2 or f.rsv3) for f in events), "RSV bits delivered without an extension"
    assert got == expected.frames, f"delivered {got!r}\nexpected {expected.frames!r}"
    failure = protocol.close_sent.code if protocol.failure is not None and protocol.close_sent else None
    assert failure == expected.failure, f"failure {failure} ({protocol.failure}), expected {expected.failure}"
    pongs = [f.data for f in output if f.opcode == 0xA]
    assert pongs == expected.pings, f"pongs {pongs!r} do not answer the pings {expected.pings!r}"
    if expected.close is not None:
        code, _reason = expected.close
        assert protocol.close_code == code
        # §5.5.1: answer a close frame with one, echoing its code.
        assert closes and closes[0].data == (b"" if code == 1005 else struct.pack("!H", code))
        if server:  # §7.1.1: the server ends TCP right after the closing handshake
            assert finished
    elif expected.failure is None:
        assert not closes, "a close frame was sent without a reason"
        if not config.eof:
            assert protocol.state is State.OPEN
        else:
            assert protocol.close_code == 1006


def check_messages(events: list[Frame], limit: int | None) -> None:
    """Delivered frames form valid messages: sequencing, size and UTF-8 (decoded by the extension)."""
    current: bytearray | None = None
    opcode = 0
    for index, frame in enumerate(events):
        assert not frame.rsv1, "RSV1 delivered: the extension did not decode the frame"
        if frame.opcode == 0x8:
            assert index == len(events) - 1, "frames delivered after a close frame"
            continue
        if frame.opcode >= 8:
            assert len(frame.data) <= 125
            continue
        if frame.opcode == 0:
            assert current is not None, "continuation delivered without a message"
            current += frame.data
        else:
            assert current is None, "new message delivered inside a fragmented one"
            current, opcode = bytearray(frame.data), frame.opcode
        if limit is not None:
            assert len(current) <= limit, f"message of {len(current)} bytes delivered, limit {limit}"
        if frame.fin:
            if opcode == 0x1:
                bytes(current).decode("utf-8")
            current = None


def transcript(data: bytes, *, fast: bool) -> list[object]:
    """What a protocol does with one input, step by step: frames delivered, frames
    written (unmasked), refusals, and how it ended; ``fast=False`` turns the compiled
    fast path off for this protocol (ws4web/_speedups.c), to compare the two."""
    fuzz: FuzzInput = split_input(data)
    config = decode_config(fuzz.config)
    server = not config.client
    wire = build_wire(fuzz.body, masked=server, compress=config.deflate) if config.structured else fuzz.body
    saved = protocol_module.fast_parse_frames
    if not fast:
        protocol_module.fast_parse_frames = None  # read once, when a Protocol is made
    try:
        protocol = Protocol(
            SERVER if server else CLIENT,
            max_message_size=config.message_limit,
            max_frame_size=config.frame_limit,
            extensions=[PerMessageDeflate()] if config.deflate else [],
        )
    finally:
        protocol_module.fast_parse_frames = saved
    result: list[object] = []

    def collect() -> None:
        delivered = []
        while batch := protocol.events_received():
            delivered += [(int(f.opcode), f.data, f.fin, f.rsv1, f.rsv2, f.rsv3) for f in batch]
        writes = protocol.data_to_send()
        sent = parse_output(b"".join(w for w in writes if w), masked=not server, rsv1=config.deflate)
        result.append((delivered, sent, SEND_EOF in writes, protocol.unparsed_bytes))

    for step in steps(fuzz.sizes, wire):
        if isinstance(step, bytes):
            protocol.receive_data(step)
        elif step == "fail":
            protocol.fail(1008, "policy")
        else:
            try:
                local_action(protocol, step)
            except ConnectionClosed:
                result.append(("refused", step))
        collect()
    if config.eof:
        protocol.receive_eof()
        collect()
    result.append((protocol.state, protocol.close_code, protocol.close_reason, str(protocol.failure)))
    return result


def check_fast_path(data: bytes) -> None:
    """The compiled fast path and the Python parser do the same with every input."""
    if protocol_module.fast_parse_frames is None:
        return
    compiled, python = transcript(data, fast=True), transcript(data, fast=False)
    assert compiled == python, f"the compiled parser differs:\n{compiled!r}\nthe Python parser:\n{python!r}"


def test_one_input(data: bytes) -> None:
    check(data)
    check_fast_path(data)


# -- seeds: one input per interesting shape, so the fuzzer starts deep ---------------------------


def entry(b0: int, payload: bytes = b"", *, flip: bool = False, declared: int | None = None) -> bytes:
    """One structured frame entry (see the module docstring)."""
    flag = 0x80 if flip else 0
    if declared is not None:
        return bytes([b0, flag | 127]) + declared.to_bytes(8, "big") + payload
    if len(payload) > 125:
        return bytes([b0, flag | 126]) + len(payload).to_bytes(2, "big") + payload
    return bytes([b0, flag | len(payload)]) + payload


def seeds() -> dict[str, bytes]:
    def cfg(**changes: object) -> int:
        base = Config(
            client=False, message_limit=70000, frame_limit=None, structured=True, deflate=False, eof=True
        )
        return encode_config(base._replace(**changes))  # type: ignore[arg-type]

    fin, text, binary, cont, close, ping, pong = 0x80, 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
    euro = "€uro ünïcødé".encode()
    conversation = (
        entry(fin | text, b"hello")
        + entry(fin | ping, b"p1")
        + entry(text, euro[:1])
        + entry(fin | pong, b"")
        + entry(cont, euro[1:5])
        + entry(fin | cont, euro[5:])
        + entry(fin | binary, bytes(range(200)))
        + entry(fin | close, struct.pack("!H", 1000) + b"bye")
    )
    raw_client_frame = b"\x81\x85" + MASK_KEY + xor(b"hello", MASK_KEY)
    return {
        "seed-conversation": FuzzInput.build(cfg(), [], conversation),
        "seed-conversation-bytewise": FuzzInput.build(cfg(), [1] * 40, conversation),
        "seed-client-side": FuzzInput.build(cfg(client=True), [3, 0, 7], conversation),
        "seed-bad-utf8-fragments": FuzzInput.build(
            cfg(), [], entry(text, b"\xce") + entry(fin | cont, b"\xff") + entry(fin | close)
        ),
        "seed-close-codes": FuzzInput.build(
            cfg(eof=False), [], entry(fin | close, struct.pack("!H", 1005)) + entry(fin | close, b"\x03")
        ),
        "seed-huge-declared": FuzzInput.build(cfg(frame_limit=10), [], entry(fin | binary, b"x", declared=1 << 40)),
        "seed-top-bit": FuzzInput.build(cfg(), [], entry(fin | binary, b"", declared=1 << 63)),
        "seed-protocol-errors": FuzzInput.build(
            cfg(),
            [2, 2],
            entry(fin | 0x3)
            + entry(fin | 0x40 | text)
            + entry(ping)
            + entry(cont, b"x")
            + entry(text, b"a", flip=True),
        ),
        "seed-deflate": FuzzInput.build(
            cfg(deflate=True),
            [],
            entry(fin | 0x40 | text, b"compressed " * 20)
            + entry(0x40 | binary, b"\0" * 300)
            + entry(fin | cont, b"\0" * 300)
            + entry(fin | 0x40 | ping, b"bad"),
        ),
        "seed-local-close": FuzzInput.build(
            cfg(client=True), [7, 0x8000, 2, 0x8002, 0x8004, 4, 0x8005], conversation
        ),
        "seed-local-fail": FuzzInput.build(cfg(), [7, 0x8005, 0x8000, 9], conversation),
        "seed-raw": FuzzInput.build(encode_config(Config(False, 125, 10, False, False, True)), [4], raw_client_frame),
    }


if __name__ == "__main__":
    sys.setrecursionlimit(10000)
    fuzz_main(test_one_input)
