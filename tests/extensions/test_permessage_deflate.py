"""permessage-deflate (RFC 7692): wire bytes, negotiation, round trips, limits and the zip bomb."""

from __future__ import annotations

import itertools
import json
import os
import random
import zlib
from collections.abc import Callable, Sequence

import pytest

from ws4web import ConnectionClosedError, WebSocket, WebSocketServer, connect
from ws4web.exceptions import NegotiationError, PayloadTooBig, ProtocolError
from ws4web.extensions.base import Extension
from ws4web.extensions.deflate_frame import ClientDeflateFrameFactory, DeflateFrame, ServerDeflateFrameFactory
from ws4web.extensions.permessage_deflate import (
    SERVER_COMPRESSION_LEVEL,
    SERVER_MEM_LEVEL,
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
    inflate_bounded,
)
from ws4web.frames import Close, Frame, Opcode
from ws4web.handshake import accept, accept_key, check_response, client_request, generate_key
from ws4web.http11 import Headers, Response
from ws4web.messages import Assembler, Message
from ws4web.protocol import CLIENT, SERVER, Protocol
from ws4web.streams import StreamReader
from ws4web.upgrade import wrap_socket

from . import rfc_server

# -- helpers ---------------------------------------------------------------------------------


def parse_wire(data: bytes, *, mask: bool) -> list[Frame]:
    """Split bytes written by a protocol back into frames (RSV bits preserved)."""
    reader = StreamReader(data)
    reader.feed_eof()
    frames = []
    while reader.buffer:
        parser = Frame.parse(reader, mask=mask, rsv_mask=0x70)
        try:
            while True:
                next(parser)
        except StopIteration as done:
            frames.append(done.value)
    return frames


class Link:
    """A client and a server Protocol wired back to back, in memory."""

    def __init__(
        self,
        client_extensions: Sequence[Extension],
        server_extensions: Sequence[Extension],
        max_message_size: int | None = 2**22,
    ) -> None:
        self.client = Protocol(CLIENT, extensions=client_extensions, max_message_size=max_message_size)
        self.server = Protocol(SERVER, extensions=server_extensions, max_message_size=max_message_size)
        self._assemblers = {id(self.client): Assembler(), id(self.server): Assembler()}

    def send(self, from_client: bool, action: Callable[[Protocol], None]) -> tuple[list[Frame], list[Message]]:
        """Run ``action`` on one side; return the frames it wrote and the messages the other got."""
        sender, receiver = (self.client, self.server) if from_client else (self.server, self.client)
        action(sender)
        wire = b"".join(sender.data_to_send())
        frames = parse_wire(wire, mask=from_client)
        receiver.receive_data(wire)
        assembler = self._assemblers[id(receiver)]
        messages = []
        for frame in receiver.events_received():
            if frame.opcode < 8:
                message = assembler.feed(frame)
                if message is not None:
                    messages.append(message)
        return frames, messages


def negotiate(
    client_factory: ClientPerMessageDeflateFactory, server_factory: ServerPerMessageDeflateFactory
) -> tuple[list[Extension], list[Extension], str | None]:
    """Run the real handshake functions; return both sides' extensions and the response header."""
    key = generate_key()
    request = client_request("example.com", "/", key, extensions=[client_factory])
    accepted = accept(request, extensions=[server_factory])
    _subprotocol, client_extensions = check_response(accepted.response, key, extensions=[client_factory])
    return client_extensions, accepted.extensions, accepted.response.headers.get("Sec-WebSocket-Extensions")


def server_answer(
    offer: str, factory: ServerPerMessageDeflateFactory | None = None
) -> tuple[str | None, list[Extension]]:
    """The Sec-WebSocket-Extensions a server answers to ``offer``, and what it enabled."""
    key = generate_key()
    request = client_request("example.com", "/", key, headers=[("Sec-WebSocket-Extensions", offer)])
    accepted = accept(request, extensions=[factory or rfc_server()])
    return accepted.response.headers.get("Sec-WebSocket-Extensions"), accepted.extensions


def client_accepts(response_header: str, factory: ClientPerMessageDeflateFactory | None = None) -> PerMessageDeflate:
    """What a client enables from a 101 response carrying ``response_header``."""
    key = generate_key()
    headers = Headers(
        [
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Accept", accept_key(key)),
            ("Sec-WebSocket-Extensions", response_header),
        ]
    )
    response = Response(101, "Switching Protocols", headers)
    _subprotocol, extensions = check_response(response, key, extensions=[factory or ClientPerMessageDeflateFactory()])
    assert len(extensions) == 1
    extension = extensions[0]
    assert isinstance(extension, PerMessageDeflate)
    return extension


def settings(extension: Extension) -> tuple[bool, bool, int, int]:
    assert isinstance(extension, PerMessageDeflate)
    return (
        extension.local_no_context_takeover,
        extension.remote_no_context_takeover,
        extension.local_max_window_bits,
        extension.remote_max_window_bits,
    )


def json_like(size: int, seed: int = 1) -> bytes:
    rng = random.Random(seed)
    items = []
    total = 0
    while total < size:
        item = {"id": rng.randrange(10**6), "name": rng.choice(["alpha", "beta", "gamma"]), "score": rng.random()}
        encoded = json.dumps(item)
        items.append(encoded)
        total += len(encoded) + 2
    return ("[" + ", ".join(items) + "]").encode()[:size]


def repeats_at(distance: int, blocks: int = 4, seed: int = 2) -> bytes:
    """Incompressible blocks of ``distance`` bytes, each repeated once right after itself."""
    rng = random.Random(seed)
    out = b""
    for _ in range(blocks):
        block = rng.randbytes(distance)
        out += block + block
    return out


def strict_inflate(decompressor: zlib._Decompress, data: bytes) -> bytes:
    """Inflate in 32-byte steps, so every back-reference past the output of one
    step must come from zlib's window: a distance beyond the window raises.

    (With one big output buffer zlib resolves far references from the buffer
    itself and never notices a window too small.)
    """
    out = []
    pending = data
    while True:
        piece = decompressor.decompress(pending, 32)
        out.append(piece)
        pending = decompressor.unconsumed_tail
        if not pending and len(piece) < 32:
            return b"".join(out)


def close_code_sent(protocol: Protocol) -> int | None:
    return protocol.close_sent.code if protocol.close_sent else None


def masked(*frames: Frame) -> bytes:
    return b"".join(b"".join(frame.serialize(mask=True)) for frame in frames)


def server_receiving(max_message_size: int | None = 2**20, **options: int | bool) -> Protocol:
    return Protocol(SERVER, extensions=[PerMessageDeflate(**options)], max_message_size=max_message_size)  # type: ignore[arg-type]


# -- RFC 7692 §7.2.3: the examples, byte for byte --------------------------------------------

HELLO = bytes.fromhex("c107f248cdc9c90700")  # §7.2.3.1
HELLO_AGAIN = bytes.fromhex("c105f200110000")  # §7.2.3.2: the second "Hello", window shared


def test_hello_compressed_is_the_rfc_example() -> None:
    server = Protocol(SERVER, extensions=[PerMessageDeflate()])
    server.send_text(b"Hello")
    assert b"".join(server.data_to_send()) == HELLO


def test_second_hello_shares_the_window() -> None:
    server = Protocol(SERVER, extensions=[PerMessageDeflate()])
    server.send_text(b"Hello")
    server.send_text(b"Hello")
    assert b"".join(server.data_to_send()) == HELLO + HELLO_AGAIN


def test_no_context_takeover_compresses_each_message_alone() -> None:
    server = Protocol(SERVER, extensions=[PerMessageDeflate(local_no_context_takeover=True)])
    server.send_text(b"Hello")
    server.send_text(b"Hello")
    assert b"".join(server.data_to_send()) == HELLO + HELLO


@pytest.mark.parametrize(
    ("wire", "texts"),
    [
        (HELLO, [b"Hello"]),
        (HELLO + HELLO_AGAIN, [b"Hello", b"Hello"]),
        # §7.2.3.1, fragmented: the compressed payload split over two frames.
        (bytes.fromhex("4103f248cd") + bytes.fromhex("8004c9c90700"), [b"Hello"]),
        # §7.2.3.3: a stored (uncompressed) DEFLATE block.
        (bytes.fromhex("c10b0005 00faff48656c6c6f00".replace(" ", "")), [b"Hello"]),
        # §7.2.3.4: a block with BFINAL set; the next message starts a new stream.
        (bytes.fromhex("c108f348cdc9c9070000") + HELLO, [b"Hello", b"Hello"]),
        # §7.2.3.5: two DEFLATE blocks in one message.
        (bytes.fromhex("c10df24805000000ffffcac9c90700"), [b"Hello"]),
        # An empty message is the single byte 0x00 once the trailer is stripped.
        (bytes.fromhex("c10100"), [b""]),
    ],
)
def test_rfc_examples_decode(wire: bytes, texts: list[bytes]) -> None:
    client = Protocol(CLIENT, extensions=[PerMessageDeflate()])
    client.receive_data(wire)
    assembler = Assembler()
    got = [assembler.feed(frame) for frame in client.events_received()]
    assert [m.data for m in got if m is not None] == texts
    assert all(m is None or m.is_text for m in got)
    assert client.close_sent is None


def test_empty_message_is_one_zero_byte() -> None:
    link = Link([PerMessageDeflate()], [PerMessageDeflate()])
    frames, messages = link.send(True, lambda p: p.send_binary(b""))
    assert [(f.rsv1, f.data) for f in frames] == [(True, b"\x00")]
    assert [m.data for m in messages] == [b""]


def test_frame_compressed_by_the_caller_goes_out_unchanged() -> None:
    server = Protocol(SERVER, extensions=[PerMessageDeflate()])
    server.send_frame(Frame(Opcode.TEXT, bytes.fromhex("f248cdc9c90700"), rsv1=True))
    assert b"".join(server.data_to_send()) == HELLO


# -- negotiation ---------------------------------------------------------------------------------

SERVER_ACCEPTS = [
    # (server factory options, offer, response, (local nct, remote nct, local bits, remote bits))
    ({}, "permessage-deflate", "permessage-deflate", (False, False, 15, 15)),
    ({}, "permessage-deflate; client_max_window_bits", "permessage-deflate", (False, False, 15, 15)),
    (
        {},
        "permessage-deflate; client_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=10",
        (False, False, 15, 10),
    ),
    (
        {},
        "permessage-deflate; server_max_window_bits=8",
        "permessage-deflate; server_max_window_bits=8",
        (False, False, 8, 15),
    ),
    (
        {},
        'permessage-deflate; server_max_window_bits="10"',
        "permessage-deflate; server_max_window_bits=10",
        (False, False, 10, 15),
    ),
    (
        {},
        "permessage-deflate; server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover",
        (True, False, 15, 15),
    ),
    (
        {},
        "permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_no_context_takeover",
        (False, True, 15, 15),
    ),
    (
        {},
        "permessage-deflate;client_max_window_bits=12;server_max_window_bits=9;"
        "client_no_context_takeover;server_no_context_takeover",
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
        "server_max_window_bits=9; client_max_window_bits=12",
        (True, True, 9, 12),
    ),
    # The server's own limits.
    (
        {"server_max_window_bits": 10},
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=10",
        (False, False, 10, 15),
    ),
    (
        {"server_max_window_bits": 10},
        "permessage-deflate; server_max_window_bits=12",
        "permessage-deflate; server_max_window_bits=10",
        (False, False, 10, 15),
    ),
    (
        {"server_max_window_bits": 10},
        "permessage-deflate; server_max_window_bits=9",
        "permessage-deflate; server_max_window_bits=9",
        (False, False, 9, 15),
    ),
    ({"server_max_window_bits": 15}, "permessage-deflate", "permessage-deflate", (False, False, 15, 15)),
    (
        {"client_max_window_bits": 10},
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10",
        (False, False, 15, 10),
    ),
    (
        {"client_max_window_bits": 10},
        "permessage-deflate; client_max_window_bits=12",
        "permessage-deflate; client_max_window_bits=10",
        (False, False, 15, 10),
    ),
    (
        {"client_max_window_bits": 10},
        "permessage-deflate; client_max_window_bits=9",
        "permessage-deflate; client_max_window_bits=9",
        (False, False, 15, 9),
    ),
    # §7.1.2.2: no client_max_window_bits in the offer, none in the response.
    ({"client_max_window_bits": 10}, "permessage-deflate", "permessage-deflate", (False, False, 15, 15)),
    (
        {"server_no_context_takeover": True},
        "permessage-deflate",
        "permessage-deflate; server_no_context_takeover",
        (True, False, 15, 15),
    ),
    (
        {"client_no_context_takeover": True},
        "permessage-deflate",
        "permessage-deflate; client_no_context_takeover",
        (False, True, 15, 15),
    ),
]


@pytest.mark.parametrize(("options", "offer", "response", "expected"), SERVER_ACCEPTS)
def test_server_accepts(
    options: dict[str, int | bool], offer: str, response: str, expected: tuple[bool, bool, int, int]
) -> None:
    answer, extensions = server_answer(offer, rfc_server(**options))
    assert answer == response
    assert [settings(e) for e in extensions] == [expected]


@pytest.mark.parametrize(
    ("offer", "response", "expected"),
    [
        # A browser's offer: both windows capped at 12 bits.
        (
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12",
            (False, False, 12, 12),
        ),
        # §7.1.2.2: a client that did not offer client_max_window_bits keeps its 15-bit window.
        ("permessage-deflate", "permessage-deflate; server_max_window_bits=12", (False, False, 12, 15)),
        # Smaller offered values win (§7.1.2.1, §7.1.2.2).
        (
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            "permessage-deflate; server_max_window_bits=10; client_max_window_bits=9",
            (False, False, 10, 9),
        ),
    ],
)
def test_server_defaults_suit_many_connections(
    offer: str, response: str, expected: tuple[bool, bool, int, int]
) -> None:
    answer, extensions = server_answer(offer, ServerPerMessageDeflateFactory())
    assert answer == response
    [extension] = extensions
    assert isinstance(extension, PerMessageDeflate)
    assert settings(extension) == expected
    assert (extension.compression_level, extension.mem_level) == (SERVER_COMPRESSION_LEVEL, SERVER_MEM_LEVEL) == (1, 5)


DECLINED_OFFERS = [
    "permessage-deflate; foo",
    "permessage-deflate; foo=1",
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=11",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=08",
    "permessage-deflate; server_max_window_bits=abc",
    "permessage-deflate; client_max_window_bits=7",
    "permessage-deflate; client_max_window_bits=16",
    'permessage-deflate; client_max_window_bits="+9"',
]


@pytest.mark.parametrize("offer", DECLINED_OFFERS)
def test_server_declines_invalid_offer(offer: str) -> None:
    # §7: declined, not failed: the handshake succeeds without compression.
    answer, extensions = server_answer(offer)
    assert answer is None
    assert extensions == []


@pytest.mark.parametrize("bad", DECLINED_OFFERS[:6])
def test_server_falls_back_to_the_next_offer(bad: str) -> None:
    answer, extensions = server_answer(f"{bad}, permessage-deflate; server_max_window_bits=10, permessage-deflate")
    assert answer == "permessage-deflate; server_max_window_bits=10"
    assert [settings(e) for e in extensions] == [(False, False, 10, 15)]


def test_server_takes_the_first_valid_offer_of_several() -> None:
    # Autobahn case 13.7's offers, in order of preference.
    answer, extensions = server_answer(
        "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; "
        "server_max_window_bits=9, permessage-deflate; client_no_context_takeover; client_max_window_bits, "
        "permessage-deflate"
    )
    assert answer == (
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9"
    )
    assert [settings(e) for e in extensions] == [(True, True, 9, 15)]


def test_server_declines_when_rsv1_is_taken() -> None:
    factory = ServerPerMessageDeflateFactory()
    assert factory.process_request_params([], [PerMessageDeflate()]) is None
    assert factory.process_request_params([], []) is not None


CLIENT_ACCEPTS = [
    # (client factory options, response, (local nct, remote nct, local bits, remote bits))
    ({}, "permessage-deflate", (False, False, 15, 15)),
    ({}, "permessage-deflate; client_max_window_bits=10", (False, False, 10, 15)),
    ({}, "permessage-deflate; client_max_window_bits=8", (False, False, 8, 15)),
    ({}, "permessage-deflate; server_max_window_bits=12", (False, False, 15, 12)),  # the server may limit itself
    ({}, "permessage-deflate; server_no_context_takeover", (False, True, 15, 15)),  # ... or drop its context
    ({}, "permessage-deflate; client_no_context_takeover", (True, False, 15, 15)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=10", (False, False, 15, 10)),
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=9", (False, False, 15, 9)),
    ({"client_max_window_bits": 10}, "permessage-deflate", (False, False, 10, 15)),  # the offer binds anyway
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=9", (False, False, 9, 15)),
    ({"client_no_context_takeover": True}, "permessage-deflate", (True, False, 15, 15)),
    ({"server_no_context_takeover": True}, "permessage-deflate; server_no_context_takeover", (False, True, 15, 15)),
]


@pytest.mark.parametrize(("options", "response", "expected"), CLIENT_ACCEPTS)
def test_client_accepts(options: dict[str, int | bool], response: str, expected: tuple[bool, bool, int, int]) -> None:
    extension = client_accepts(response, ClientPerMessageDeflateFactory(**options))  # type: ignore[arg-type]
    assert settings(extension) == expected


CLIENT_FAILS = [
    ({}, "permessage-deflate; foo"),
    ({}, "permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
    ({}, "permessage-deflate; server_no_context_takeover=1"),
    ({}, "permessage-deflate; client_no_context_takeover=1"),
    ({}, "permessage-deflate; client_max_window_bits"),  # needs a value in a response
    ({}, "permessage-deflate; client_max_window_bits=16"),
    ({}, "permessage-deflate; server_max_window_bits"),
    ({}, "permessage-deflate; server_max_window_bits=7"),
    ({}, "permessage-deflate; server_max_window_bits=010"),
    ({}, "permessage-deflate, permessage-deflate"),  # accepted twice
    ({"client_max_window_bits": None}, "permessage-deflate; client_max_window_bits=10"),  # not offered
    ({"client_max_window_bits": 10}, "permessage-deflate; client_max_window_bits=11"),
    ({"server_max_window_bits": 10}, "permessage-deflate"),  # request ignored
    ({"server_max_window_bits": 10}, "permessage-deflate; server_max_window_bits=11"),
    ({"server_no_context_takeover": True}, "permessage-deflate"),
]


@pytest.mark.parametrize(("options", "response"), CLIENT_FAILS)
def test_client_fails_on_invalid_response(options: dict[str, int | bool | None], response: str) -> None:
    with pytest.raises(NegotiationError):
        client_accepts(response, ClientPerMessageDeflateFactory(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "offer"),
    [
        ({}, [("client_max_window_bits", None)]),
        ({"client_max_window_bits": None}, []),
        ({"client_max_window_bits": False}, []),
        ({"client_max_window_bits": 9}, [("client_max_window_bits", "9")]),
        (
            {"server_no_context_takeover": True, "client_no_context_takeover": True, "server_max_window_bits": 8},
            [
                ("server_no_context_takeover", None),
                ("client_no_context_takeover", None),
                ("server_max_window_bits", "8"),
                ("client_max_window_bits", None),
            ],
        ),
    ],
)
def test_client_offer(options: dict[str, int | bool | None], offer: list[tuple[str, str | None]]) -> None:
    assert ClientPerMessageDeflateFactory(**options).get_request_params() == offer  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: PerMessageDeflate(local_max_window_bits=7),
        lambda: PerMessageDeflate(remote_max_window_bits=16),
        lambda: PerMessageDeflate(mem_level=0),
        lambda: PerMessageDeflate(mem_level=10),
        lambda: PerMessageDeflate(compression_level=10),
        lambda: PerMessageDeflate(min_size=-1),
        lambda: ServerPerMessageDeflateFactory(server_max_window_bits=16),
        lambda: ServerPerMessageDeflateFactory(client_max_window_bits=7),
        lambda: ClientPerMessageDeflateFactory(server_max_window_bits=7),
        lambda: ClientPerMessageDeflateFactory(client_max_window_bits=16),
    ],
)
def test_invalid_options_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        build()


# -- round trips in every negotiated combination -------------------------------------------------

SERVER_BITS = [None, 8, 9, 10, 11, 12, 13, 14, 15]
CLIENT_BITS: list[int | bool | None] = [None, True, 8, 9, 10, 11, 12, 13, 14, 15]
JSON_16K = json_like(16 * 1024)


def _sender(text: bool, payload: bytes) -> Callable[[Protocol], None]:
    def send(protocol: Protocol) -> None:
        if text:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)

    return send


def _check_window(frames_per_message: list[list[Frame]], bits: int, no_context_takeover: bool) -> None:
    """Inflate what was sent with plain zlib and a window of exactly ``bits``."""
    decompressor = zlib.decompressobj(wbits=-bits)
    for frames in frames_per_message:
        if no_context_takeover:
            decompressor = zlib.decompressobj(wbits=-bits)
        payload = b"".join(f.data for f in frames) + b"\x00\x00\xff\xff"
        strict_inflate(decompressor, payload)  # raises zlib.error on a distance past the window


@pytest.mark.parametrize(("server_bits", "client_bits"), list(itertools.product(SERVER_BITS, CLIENT_BITS)))
def test_round_trips(server_bits: int | None, client_bits: int | bool | None) -> None:
    noise = random.Random(3).randbytes(200)
    messages: list[tuple[bool, bytes]] = [
        (False, noise),
        (False, noise),  # the same again: with context takeover it is a back-reference
        (True, b"Hello"),
        (True, JSON_16K),
        (False, repeats_at(300)),  # matches at 300 bytes fit a 9-bit window...
        (False, repeats_at(3000)),  # ...these only a 12-bit one or larger
        (False, b""),
    ]
    for server_nct, client_nct in itertools.product([False, True], repeat=2):
        client_ext, server_ext, _header = negotiate(
            ClientPerMessageDeflateFactory(
                server_no_context_takeover=server_nct,
                client_no_context_takeover=client_nct,
                server_max_window_bits=server_bits,
                client_max_window_bits=client_bits,
            ),
            rfc_server(),
        )
        expected_server_bits = server_bits or 15
        expected_client_bits = client_bits if isinstance(client_bits, int) and client_bits is not True else 15
        assert [settings(e) for e in server_ext] == [
            (server_nct, client_nct, expected_server_bits, expected_client_bits)
        ]
        assert [settings(e) for e in client_ext] == [
            (client_nct, server_nct, expected_client_bits, expected_server_bits)
        ]
        link = Link(client_ext, server_ext)
        for from_client, nct, bits in (
            (True, client_nct, expected_client_bits),
            (False, server_nct, expected_server_bits),
        ):
            sent: list[list[Frame]] = []
            for text, payload in messages:
                frames, received = link.send(from_client, _sender(text, payload))
                assert [m.data for m in received] == [payload]
                assert received[0].is_text is text
                assert [f.rsv1 for f in frames] == [True]
                sent.append(frames)
            # Fragmented: RSV1 on the first frame only, the message whole on arrival.
            chunks = [JSON_16K[:5000], JSON_16K[5000:5001], JSON_16K[5001:]]

            def fragments(p: Protocol, chunks: list[bytes] = chunks) -> None:
                p.send_text(chunks[0], fin=False)
                p.send_continuation(chunks[1], fin=False)
                p.send_continuation(chunks[2], fin=True)

            frames, received = link.send(from_client, fragments)
            assert [f.rsv1 for f in frames] == [True, False, False]
            assert [m.data for m in received] == [JSON_16K]
            sent.append(frames)

            first, again = len(sent[0][0].data), len(sent[1][0].data)
            if nct:
                assert again == first
            else:
                assert again < first // 4
            _check_window(sent, bits, nct)
        assert link.client.close_sent is None
        assert link.server.close_sent is None


def test_window_bits_limit_the_compressor() -> None:
    data = repeats_at(3000)
    small = PerMessageDeflate(local_max_window_bits=9).encode(Frame(Opcode.BINARY, data)).data
    large = PerMessageDeflate(local_max_window_bits=15).encode(Frame(Opcode.BINARY, data)).data
    assert len(large) < len(data) * 0.6 < len(small)
    # The 15-bit output reaches 3000 bytes back: a 2 KiB window cannot inflate it.
    with pytest.raises(zlib.error):
        strict_inflate(zlib.decompressobj(wbits=-11), large + b"\x00\x00\xff\xff")
    assert strict_inflate(zlib.decompressobj(wbits=-9), small + b"\x00\x00\xff\xff") == data


def test_eight_bit_window_output_inflates_with_a_256_byte_window() -> None:
    # zlib cannot compress raw deflate with 8 bits; the 9-bit stand-in must
    # still never reach back more than 256 bytes.
    extension = PerMessageDeflate(local_max_window_bits=8)
    decompressor = zlib.decompressobj(wbits=-8)
    for distance in (200, 250, 256, 300, 511):
        data = repeats_at(distance, blocks=8, seed=distance)
        payload = extension.encode(Frame(Opcode.BINARY, data)).data
        assert strict_inflate(decompressor, payload + b"\x00\x00\xff\xff") == data


# -- sending options -------------------------------------------------------------------------


def test_min_size_sends_small_messages_uncompressed() -> None:
    client_ext, server_ext, _ = negotiate(ClientPerMessageDeflateFactory(), ServerPerMessageDeflateFactory(min_size=10))
    link = Link(client_ext, server_ext)
    frames, received = link.send(False, lambda p: p.send_text(b"123456789"))
    assert [(f.rsv1, f.data) for f in frames] == [(False, b"123456789")]
    assert [m.data for m in received] == [b"123456789"]
    frames, received = link.send(False, lambda p: p.send_text(b"1234567890"))
    assert [f.rsv1 for f in frames] == [True]
    assert [m.data for m in received] == [b"1234567890"]

    def small_fragments(p: Protocol) -> None:  # total size unknown at the first frame: compressed
        p.send_text(b"12", fin=False)
        p.send_continuation(b"34", fin=True)

    frames, received = link.send(False, small_fragments)
    assert [f.rsv1 for f in frames] == [True, False]
    assert [m.data for m in received] == [b"1234"]
    # The client compresses everything.
    frames, _ = link.send(True, lambda p: p.send_text(b"1"))
    assert [f.rsv1 for f in frames] == [True]


def test_skip_next_message_opts_one_message_out() -> None:
    server_ext = PerMessageDeflate()
    link = Link([PerMessageDeflate()], [server_ext])
    payload = JSON_16K

    def skipped(p: Protocol) -> None:
        server_ext.skip_next_message()
        p.send_ping(b"ping")  # control frames do not consume the opt-out
        p.send_binary(payload)

    frames, received = link.send(False, skipped)
    assert [(f.opcode, f.rsv1, len(f.data)) for f in frames] == [
        (Opcode.PING, False, 4),
        (Opcode.BINARY, False, len(payload)),
    ]
    assert [m.data for m in received] == [payload]
    frames, received = link.send(False, lambda p: p.send_binary(payload))
    assert [f.rsv1 for f in frames] == [True]
    assert len(frames[0].data) < len(payload) // 2
    assert [m.data for m in received] == [payload]


def test_uncompressed_messages_pass_through_decode() -> None:
    client = Protocol(CLIENT, extensions=[PerMessageDeflate()])
    client.receive_data(
        b"".join(
            b"".join(f.serialize(mask=False))
            for f in (
                Frame(Opcode.TEXT, b"plain"),
                Frame(Opcode.BINARY, b"ab", fin=False),
                Frame(Opcode.CONTINUATION, b"cd"),
                Frame(Opcode.PING, b"x"),
            )
        )
    )
    assert [(f.opcode, f.data) for f in client.events_received()] == [
        (Opcode.TEXT, b"plain"),
        (Opcode.BINARY, b"ab"),
        (Opcode.CONTINUATION, b"cd"),
        (Opcode.PING, b"x"),
    ]
    assert client.close_sent is None


# -- receiving errors ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([Frame(Opcode.PING, b"x", rsv1=True)], 1002),  # §6.1: never on control frames
        ([Frame(Opcode.PONG, b"", rsv1=True)], 1002),
        ([Frame(Opcode.CLOSE, b"\x03\xe8", rsv1=True)], 1002),
        # §6.1: never on continuation frames, compressed message or not.
        (
            [
                Frame(Opcode.TEXT, bytes.fromhex("f248cd"), fin=False, rsv1=True),
                Frame(Opcode.CONTINUATION, b"", rsv1=True),
            ],
            1002,
        ),
        ([Frame(Opcode.BINARY, b"ab", fin=False), Frame(Opcode.CONTINUATION, b"cd", rsv1=True)], 1002),
        ([Frame(Opcode.BINARY, b"\xff\xff\xff\xff", rsv1=True)], 1002),  # reserved block type: corrupt
        ([Frame(Opcode.BINARY, bytes.fromhex("f248cdc9c90700") + b"\xff" * 8, rsv1=True)], 1002),
        # Inflated text is still checked as UTF-8 (RFC 6455 §8.1).
        ([Frame(Opcode.TEXT, PerMessageDeflate().encode(Frame(Opcode.TEXT, b"\xff\xfe")).data, rsv1=True)], 1007),
    ],
)
def test_receiving_errors_fail_the_connection(frames: list[Frame], code: int) -> None:
    server = server_receiving()
    server.receive_data(masked(*frames))
    assert close_code_sent(server) == code
    written = parse_wire(b"".join(server.data_to_send()), mask=False)
    assert Close.parse(written[-1].data).code == code


def test_inflate_bounded_raises_protocol_error_on_corrupt_data() -> None:
    with pytest.raises(ProtocolError):
        inflate_bounded(zlib.decompressobj(wbits=-15), b"\xff\x00", 100)


# -- limits and the zip bomb -----------------------------------------------------------------


def _zeros_deflated(size: int, chunk: int = 2**20) -> bytes:
    """Raw deflate of ``size`` zero bytes, compressed with zlib.compressobj(wbits=-15) in chunks.

    After a full flush a chunk's output stands alone (no reference back and a
    byte boundary at its end), so the identical output of each further
    identical chunk is reused instead of compressing a gibibyte.
    """
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    piece = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    again = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert again == piece
    assert zlib.decompressobj(wbits=-15).decompress(piece * 2) == bytes(2 * chunk)
    return piece * (size // chunk)


def _status(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise LookupError(field)


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_zip_bomb_is_refused_with_1009_in_bounded_memory() -> None:
    bomb = _zeros_deflated(2**30)  # 1 GiB of zeros in about 1 MiB: deflate tops out near 1:1032
    assert len(bomb) < 2**21
    wire = masked(Frame(Opcode.BINARY, bomb, rsv1=True))
    server = server_receiving(max_message_size=4 * 2**20)
    try:  # reset the peak RSS so VmHWM measures this test alone
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        peak_field = "VmHWM"
    except OSError:
        peak_field = "VmRSS"
    baseline = _status("VmRSS")
    for start in range(0, len(wire), 65536):  # as a socket would deliver it
        server.receive_data(wire[start : start + 65536])
    peak = _status(peak_field)
    assert close_code_sent(server) == 1009
    assert server.events_received() == []
    assert peak - baseline < 100 * 2**20, f"inflating used {(peak - baseline) >> 20} MiB"


def test_bomb_spread_over_fragments_is_refused() -> None:
    compressor = zlib.compressobj(wbits=-15)
    half = bytes(2**19)
    parts = [compressor.compress(half) + compressor.flush(zlib.Z_SYNC_FLUSH) for _ in range(3)]
    parts[-1] = parts[-1][:-4]
    frames = [
        Frame(Opcode.BINARY, parts[0], fin=False, rsv1=True),
        Frame(Opcode.CONTINUATION, parts[1], fin=False),
        Frame(Opcode.CONTINUATION, parts[2], fin=True),
    ]
    server = server_receiving(max_message_size=2**20)
    server.receive_data(masked(*frames[:2]))  # exactly 1 MiB so far: still allowed
    assert close_code_sent(server) is None
    assert sum(len(f.data) for f in server.events_received()) == 2**20
    server.receive_data(masked(frames[2]))
    assert close_code_sent(server) == 1009


@pytest.mark.parametrize(("size", "code"), [(2**16, None), (2**16 + 1, 1009)])
def test_limit_is_exact(size: int, code: int | None) -> None:
    payload = PerMessageDeflate().encode(Frame(Opcode.BINARY, bytes(size))).data
    server = server_receiving(max_message_size=2**16)
    server.receive_data(masked(Frame(Opcode.BINARY, payload, rsv1=True)))
    assert close_code_sent(server) == code
    if code is None:
        assert [len(f.data) for f in server.events_received()] == [size]


def test_inflate_bounded_stops_early() -> None:
    bomb = _zeros_deflated(2**23)
    with pytest.raises(PayloadTooBig):
        inflate_bounded(zlib.decompressobj(wbits=-15), bomb, 2**20 - 1, trailer=True)
    assert inflate_bounded(zlib.decompressobj(wbits=-15), bomb, None, trailer=True) == bytes(2**23)


def test_bomb_over_the_network_closes_with_1009() -> None:
    class Echo(WebSocket):
        def received_message(self, message: Message) -> None:
            self.send(message)

    server = WebSocketServer(
        Echo, "127.0.0.1", 0, extensions=[ServerPerMessageDeflateFactory()], max_message_size=4 * 2**20
    )
    server.start()
    try:
        ws = connect(f"ws://127.0.0.1:{server.port}/", extensions=[ClientPerMessageDeflateFactory()], timeout=5)
        try:
            ws.send(b"warm up")
            assert ws.recv(timeout=5).data == b"warm up"
            ws.send_frame(Frame(Opcode.BINARY, _zeros_deflated(2**30), rsv1=True))
            with pytest.raises(ConnectionClosedError) as caught:
                ws.recv(timeout=10)
            assert caught.value.code == 1009
        finally:
            ws.terminate()
    finally:
        server.shutdown(timeout=5)


def test_parse_wire_sees_the_rsv_bits() -> None:
    assert parse_wire(HELLO, mask=False) == [Frame(Opcode.TEXT, bytes.fromhex("f248cdc9c90700"), rsv1=True)]


# -- deflate-frame, the older per-frame draft (an example of the extension API) ---------------


def _negotiate_deflate_frame(
    client: ClientDeflateFrameFactory, server: ServerDeflateFrameFactory
) -> tuple[list[Extension], list[Extension], str | None]:
    key = generate_key()
    request = client_request("example.com", "/", key, extensions=[client])
    accepted = accept(request, extensions=[server])
    _subprotocol, client_extensions = check_response(accepted.response, key, extensions=[client])
    return client_extensions, accepted.extensions, accepted.response.headers.get("Sec-WebSocket-Extensions")


@pytest.mark.parametrize("name", ["deflate-frame", "x-webkit-deflate-frame"])
@pytest.mark.parametrize("no_context_takeover", [False, True])
def test_deflate_frame_round_trip(name: str, no_context_takeover: bool) -> None:
    client_ext, server_ext, header = _negotiate_deflate_frame(
        ClientDeflateFrameFactory(name, no_context_takeover=no_context_takeover, max_window_bits=10),
        ServerDeflateFrameFactory(name, no_context_takeover=no_context_takeover, max_window_bits=9),
    )
    expected_header = f"{name}; max_window_bits=9" + ("; no_context_takeover" if no_context_takeover else "")
    assert header == expected_header
    assert [type(e) for e in client_ext + server_ext] == [DeflateFrame, DeflateFrame]
    link = Link(client_ext, server_ext)
    noise = random.Random(4).randbytes(200)
    for from_client in (True, False):

        def fragments(p: Protocol) -> None:
            p.send_text(JSON_16K[:8000], fin=False)
            p.send_continuation(JSON_16K[8000:], fin=True)

        frames, received = link.send(from_client, fragments)
        assert [f.rsv1 for f in frames] == [True, True]  # every frame compressed on its own
        assert [m.data for m in received] == [JSON_16K]
        sizes = []
        for _ in range(2):
            frames, received = link.send(from_client, lambda p: p.send_binary(noise))
            assert [m.data for m in received] == [noise]
            sizes.append(len(frames[0].data))
        if no_context_takeover:
            assert sizes[0] == sizes[1]
        else:  # the second copy is one back-reference into the window
            assert sizes[1] < sizes[0] // 4


def test_deflate_frame_declines_and_fails_like_the_draft_says() -> None:
    key = generate_key()
    request = client_request(
        "example.com",
        "/",
        key,
        headers=[("Sec-WebSocket-Extensions", "deflate-frame; max_window_bits=16, deflate-frame; no_context_takeover")],
    )
    accepted = accept(request, extensions=[ServerDeflateFrameFactory()])
    answer, extensions = accepted.response.headers.get("Sec-WebSocket-Extensions"), accepted.extensions
    assert answer == "deflate-frame"
    assert [e.local_no_context_takeover for e in extensions if isinstance(e, DeflateFrame)] == [True]
    with pytest.raises(NegotiationError):
        ClientDeflateFrameFactory().process_response_params([("max_window_bits", "7")], [])
    with pytest.raises(NegotiationError):
        ClientDeflateFrameFactory().process_response_params([], [PerMessageDeflate()])


def test_deflate_frame_inflation_is_bounded() -> None:
    server = Protocol(SERVER, extensions=[DeflateFrame()], max_message_size=2**16)
    compressor = zlib.compressobj(wbits=-15)
    bomb = compressor.compress(bytes(2**20)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    server.receive_data(masked(Frame(Opcode.BINARY, bomb[:-4], rsv1=True)))
    assert close_code_sent(server) == 1009


@pytest.mark.parametrize("mem_level", [1, 5, 8])
def test_incompressible_message_within_the_limit_is_accepted(mem_level: int) -> None:
    # zlib expands incompressible data by up to 4% (memLevel 1); the protocol's
    # frame limit must leave room for that, and the decoded size is what counts.
    payload = random.Random(5).randbytes(2**20 - 1000)
    compressed = PerMessageDeflate(mem_level=mem_level).encode(Frame(Opcode.BINARY, payload)).data
    assert len(compressed) > len(payload)  # stored blocks: deflate can only add
    server = server_receiving(max_message_size=2**20)
    server.receive_data(masked(Frame(Opcode.BINARY, compressed, rsv1=True)))
    assert close_code_sent(server) is None
    assert [len(f.data) for f in server.events_received()] == [len(payload)]


# -- per-message opt-out through the handler API, and client fallback offers ---------------


def test_send_compress_false_goes_out_uncompressed_and_the_next_message_compresses() -> None:
    import socket as socket_module

    left, right = socket_module.socketpair()
    try:
        extension = client_accepts("permessage-deflate")
        ws = wrap_socket(left, extensions=[extension], side=CLIENT)
        raw = json_like(4096)
        ws.send(raw, compress=False)
        ws.send(raw)
        ws.send(iter([raw[:100], raw[100:]]), compress=False)
        right.settimeout(5)
        wire = b""
        frames: list[Frame] = []
        while len(frames) < 4:
            wire += right.recv(65536)
            reader = StreamReader(wire)
            frames = []
            while True:
                frame = Frame.parse_buffered(reader, mask=True, rsv_mask=0x40)
                if frame is None:
                    break
                frames.append(frame)
        assert [f.rsv1 for f in frames] == [False, True, False, False]
        assert frames[0].data == raw and len(frames[1].data) < len(raw) // 2
        assert frames[2].data + frames[3].data == raw
    finally:
        left.close()
        right.close()


def test_client_fallback_offers_accept_a_response_to_the_second_offer() -> None:
    strict = ClientPerMessageDeflateFactory(server_max_window_bits=10)
    plain = ClientPerMessageDeflateFactory()
    key = generate_key()
    request = client_request("h", "/", key, extensions=[strict, plain])
    offered = request.headers.get("Sec-WebSocket-Extensions")
    assert offered is not None and offered.count("permessage-deflate") == 2
    # The server picked the second (plain) offer: no server_max_window_bits in its answer.
    response = Response(
        101,
        "Switching Protocols",
        Headers(
            [
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Accept", accept_key(key)),
                ("Sec-WebSocket-Extensions", "permessage-deflate; client_max_window_bits=15"),
            ]
        ),
    )
    _, accepted = check_response(response, key, extensions=[strict, plain])
    assert len(accepted) == 1 and isinstance(accepted[0], PerMessageDeflate)
