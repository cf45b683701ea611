"""The WebSocket state machine, shared by both sides and every driver.

It never touches a socket. A driver feeds it what it read and writes what it
returns::

    protocol.receive_data(chunk)      # or receive_eof() when recv() returned b""
    while events := protocol.events_received():   # max_pending frames at a time
        for frame in events: ...
    for data in protocol.data_to_send():
        if data == SEND_EOF: sock.shutdown(SHUT_WR)   # our side of TCP is done
        else: sock.sendall(data)
    if protocol.close_expected(): ...  # bound the next read by the close timeout

It starts in OPEN: the HTTP upgrade happened before (see :mod:`ws4web.handshake`),
and any bytes read past the handshake are passed as ``data``. Errors never leave
``receive_data``: a broken rule fails the connection with the close code that
:meth:`Protocol.fail` maps it to, the only place where that mapping happens.
What a peer can make one connection hold is bounded: see :class:`Protocol` and
docs/security.md.
"""

from __future__ import annotations

import codecs
import enum
import logging
import sys
from collections.abc import Generator, Sequence
from typing import Any

from .exceptions import ConnectionClosed, InvalidPayload, PayloadTooBig, ProtocolError, closed_exception
from .extensions.base import Extension
from .frames import Close, CloseCode, Frame, Opcode, fast_parse_frames, frame_wire, is_valid_close_code
from .streams import StreamReader

__all__ = ["CLIENT", "SEND_EOF", "SERVER", "Protocol", "Side", "State"]

logger = logging.getLogger("ws4web.protocol")

#: Returned by :meth:`Protocol.data_to_send` when the driver must end its side of TCP.
SEND_EOF = b""

_utf8_decoder = codecs.getincrementaldecoder("utf-8")

# What the compiled fast path (frames.fast_parse_frames) returns besides "buffer empty"
# and "max_pending reached": see ws4web/_speedups.c.
_PARTIAL = 1
_LEFT_TO_PYTHON = 2
_NO_BOUND = sys.maxsize


class Side(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


#: Shorthand for :attr:`Side.SERVER`.
SERVER = Side.SERVER
#: Shorthand for :attr:`Side.CLIENT`.
CLIENT = Side.CLIENT


class State(enum.IntEnum):
    CONNECTING = 0
    OPEN = 1
    CLOSING = 2  # a close frame was sent or received; TCP not closed yet
    CLOSED = 3  # TCP is closed (EOF received)


class Protocol:
    """Sans-I/O RFC 6455 connection.

    ``max_message_size`` bounds a whole message, ``max_frame_size`` one frame;
    ``None`` lifts a limit. Both are checked on the frame header, before the
    payload is read, and answered with 1009 (RFC 6455 §10.4). Every fragment but
    the last counts at least 1 byte against ``max_message_size``, so a message
    made of empty fragments is refused after ``max_message_size`` of them.

    Parsing is bounded in frames, not per read: it stops once ``max_pending``
    frames (64; ``None``: no bound) are parsed and not yet taken by
    :meth:`events_received`; what follows stays raw bytes in the buffer
    (:attr:`unparsed_bytes`), not objects. Each :meth:`events_received` call
    returns one batch and parses the next, so a driver loops until it gets
    ``[]``, and may stop between batches to push back on its peer. Up to the
    bound parsing is eager (a read of many frames is parsed in one go), so
    :meth:`events_pending` says whether a batch is waiting, and the pongs and
    close answers of a batch are in :meth:`data_to_send` once it is parsed.
    EOF takes effect after the frames received before it.

    Every ping received while open is answered at once, in order with what this
    side sends (§5.5.2). A peer that floods pings and never reads the pongs is
    bounded by the driver, which stops reading it once its answers pile up.
    """

    def __init__(
        self,
        side: Side,
        *,
        data: bytes = b"",
        max_message_size: int | None = 2**20,
        max_frame_size: int | None = None,
        max_pending: int | None = 64,
        extensions: Sequence[Extension] = (),
    ) -> None:
        if max_pending is not None and max_pending < 1:
            raise ValueError("max_pending must be at least 1, or None")
        self.side = side
        #: drivers replace this with a per-connection adapter (ws4web.logs)
        self.logger: Any = logger  # a logging.Logger, or anything with its methods
        self.state = State.OPEN
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_pending = max_pending
        self.extensions = list(extensions)
        self.close_rcvd: Close | None = None
        self.close_sent: Close | None = None
        self.eof_sent = False
        #: Why this side failed the connection, if it did.
        self.failure: ProtocolError | None = None

        self._reader = StreamReader()
        self._events: list[Frame] = []
        self._held = False  # the parser waits for _events to be taken (max_pending)
        self._writes: list[bytes] = []
        # Incoming message in progress: its opcode, decoded size, UTF-8 decoder.
        self._in_opcode: Opcode | None = None
        self._in_size = 0
        self._in_utf8: codecs.IncrementalDecoder | None = None
        # Outgoing fragmented message in progress.
        self._out_opcode: Opcode | None = None

        self._mask_out = side is Side.CLIENT  # RFC 6455 §5.3: clients mask
        self._plain = not extensions  # no extension transforms frames: messages may be framed directly
        self._rsv_mask = 0
        for extension in self.extensions:
            if extension.rsv_mask & self._rsv_mask:
                raise ValueError(f"extensions share RSV bits: {extension.name}")
            self._rsv_mask |= extension.rsv_mask

        self._parser = self._parse()
        next(self._parser, None)
        if data:
            self.receive_data(data)

    # -- the contract ---------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes read from the transport."""
        reader = self._reader
        if reader.eof:
            return  # nothing is read after EOF; a late write from the peer is moot
        reader.buffer += data  # StreamReader.feed_data, without a call per read
        next(self._parser, None)

    def receive_eof(self) -> None:
        """Record that the transport reached EOF."""
        if self._reader.eof:
            return
        self._reader.feed_eof()
        next(self._parser, None)

    def events_received(self) -> list[Frame]:
        """The next frames received, at most ``max_pending``, extensions decoded.

        Taking them lets parsing go on, so call again until it returns ``[]``:
        received bytes are not all parsed before then (nor EOF applied).
        """
        events, self._events = self._events, []
        if self._held:
            next(self._parser, None)  # parse the next batch: its pongs and close answers too
        return events

    def events_pending(self) -> bool:
        """Whether :meth:`events_received` has frames now, without more bytes."""
        return bool(self._events)

    @property
    def unparsed_bytes(self) -> int:
        """Bytes received and not parsed yet: frames waiting behind ``max_pending``, or a partial frame."""
        return len(self._reader.buffer)

    def data_to_send(self) -> list[bytes]:
        """The bytes to write since the last call; :data:`SEND_EOF` ends our side."""
        writes, self._writes = self._writes, []
        return writes

    def close_expected(self) -> bool:
        """Whether the peer should close TCP soon (bound the next read by a timeout)."""
        return self.state is State.CLOSING

    # -- what the connection ended with ------------------------------------------

    @property
    def close_code(self) -> int:
        """The code the peer closed with; 1006 if no close frame arrived (§7.1.5).

        When this side failed the connection (§7.1.7), the peer's answer is not
        read, so this is the code we failed with (1002, 1007, 1009, 1011).
        """
        if self.close_rcvd is not None:
            return self.close_rcvd.code
        if self.failure is not None and self.close_sent is not None:
            return self.close_sent.code
        return CloseCode.ABNORMAL_CLOSURE

    @property
    def close_reason(self) -> str:
        if self.close_rcvd is not None:
            return self.close_rcvd.reason
        if self.failure is not None and self.close_sent is not None:
            return self.close_sent.reason
        return ""

    def close_exc(self) -> ConnectionClosed:
        """The exception that tells a caller the connection is closed."""
        sent = self.close_sent.code if self.close_sent else None
        return closed_exception(self.close_code, self.close_reason, sent)

    # -- sending ---------------------------------------------------------------

    def send_text(self, data: bytes, fin: bool = True) -> None:
        """Send a text frame; ``data`` is already UTF-8. ``fin=False`` starts a fragmented message."""
        if fin and self._plain and self.state is State.OPEN and self._out_opcode is None:
            self._writes += frame_wire(0x81, data, self._mask_out)  # the common case, in one call
            return
        self._send_data(Opcode.TEXT, data, fin)

    def send_binary(self, data: bytes, fin: bool = True) -> None:
        if fin and self._plain and self.state is State.OPEN and self._out_opcode is None:
            self._writes += frame_wire(0x82, data, self._mask_out)
            return
        self._send_data(Opcode.BINARY, data, fin)

    def send_continuation(self, data: bytes, fin: bool) -> None:
        """Continue the fragmented message started by send_text/send_binary(fin=False)."""
        if self._out_opcode is None:
            raise ValueError("no fragmented message to continue")
        self._send_data(Opcode.CONTINUATION, data, fin)

    def send_ping(self, data: bytes = b"") -> None:
        self._check_open()
        self._send(Frame(Opcode.PING, data))

    def send_pong(self, data: bytes = b"") -> None:
        self._check_open()
        self._send(Frame(Opcode.PONG, data))

    def send_close(self, code: int | None = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (RFC 6455 §7.1.2); ``code=None`` sends no code."""
        self._check_open()
        close = Close(CloseCode.NO_STATUS_RCVD if code is None else code, reason)
        payload = close.serialize()  # raises ValueError for codes that cannot be sent
        self.close_sent = close
        self.state = State.CLOSING
        self._send(Frame(Opcode.CLOSE, payload))

    def can_send_prepared(self) -> bool:
        """Whether :meth:`send_prepared` applies: a server with no frame-transforming
        extension (their state, e.g. a compression context, is per connection)."""
        return self.side is Side.SERVER and not self.extensions

    def send_prepared(self, message: Frame, wire: bytes) -> None:
        """Send ``wire``, the serialized (unmasked) bytes of ``message``, as they are.

        A broadcast frames a message once and writes the same bytes to every
        recipient. Falls back to serializing ``message`` where that is not valid.
        """
        self._check_open()
        if self._out_opcode is not None:
            raise ValueError("a fragmented message is in progress; finish it first")
        if self.can_send_prepared():
            self._writes.append(wire)
        else:
            self._send(message)

    def send_frame(self, frame: Frame) -> None:
        """Send any frame as it is (low-level access): no sequencing checks."""
        self._check_open()
        self._send(frame)

    def fail(self, code: int, reason: str = "") -> None:
        """Fail the connection (RFC 6455 §7.1.7): send a close frame, stop reading.

        This is where every error becomes a close code: ProtocolError 1002,
        InvalidPayload 1007, PayloadTooBig 1009, anything unexpected 1011.
        """
        if self.failure is None:
            self.failure = ProtocolError(reason or f"failed with {code}")
        if self.state is State.OPEN:
            if not is_valid_close_code(code):
                code = CloseCode.PROTOCOL_ERROR
            close = Close(code, reason[:120])
            try:
                payload = close.serialize()
            except ValueError:  # the reason does not fit in a control frame
                close = Close(code)
                payload = close.serialize()
            self.close_sent = close
            self.state = State.CLOSING
            self._send(Frame(Opcode.CLOSE, payload))
        # §7.1.1: the server closes TCP first; a failing client does so too
        # (§7.1.7), there is nothing left to wait for.
        self._send_eof()
        # Stop parsing, whether this was called by the parser or from outside:
        # nothing received after failing is processed (§7.1.7).
        self._held = False
        self._parser = self._discard()
        next(self._parser, None)

    # -- internals -------------------------------------------------------------

    def _check_open(self) -> None:
        if self.state is not State.OPEN:
            raise self.close_exc()

    def _send_data(self, opcode: Opcode, data: bytes, fin: bool) -> None:
        self._check_open()
        if opcode is Opcode.CONTINUATION:
            pass
        elif self._out_opcode is not None:
            raise ValueError("a fragmented message is in progress; finish it first")
        else:
            self._out_opcode = opcode
        if fin:
            self._out_opcode = None
        self._send(Frame(opcode, data, fin))

    def _send(self, frame: Frame) -> None:
        for extension in self.extensions:
            frame = extension.encode(frame)
        self._writes += frame.serialize(mask=self._mask_out)

    def _send_eof(self) -> None:
        if not self.eof_sent:
            self.eof_sent = True
            self._writes.append(SEND_EOF)

    def _parse(self) -> Generator[None, None, None]:
        reader = self._reader
        buffer = reader.buffer
        mask_in = self.side is Side.SERVER  # §5.1: servers receive masked frames
        rsv_mask = self._rsv_mask
        has_extensions = bool(self.extensions)
        parse_buffered = Frame.parse_buffered
        # The compiled fast path takes whole unfragmented messages, pongs and (on the
        # server) pings, many per call; it stops at any other frame, which the Python
        # code below parses and judges (extensions: always the Python code).
        fast = None if has_extensions else fast_parse_frames
        answers_pings = not self._mask_out  # the client masks its pongs: the Python code does
        yield
        try:
            while True:
                # Backpressure, per frame: the rest waits as bytes until the batch is taken.
                while self.max_pending is not None and len(self._events) >= self.max_pending:
                    self._held = True
                    yield
                    self._held = False
                while not buffer:  # between frames: EOF here is still abnormal (1006)
                    if reader.eof:
                        raise EOFError
                    yield
                limit = self.max_frame_size
                if self.max_message_size is not None:
                    left = self.max_message_size - self._in_size
                    if has_extensions:
                        # A compressed payload may be larger than what it inflates to:
                        # incompressible data grows by up to ~4% at zlib memLevel 1.
                        # This only bounds buffering; extensions check the decoded size.
                        left += (left >> 4) + 1024
                    limit = left if limit is None else min(limit, left)
                if fast is not None and self._in_opcode is None:
                    events = self._events
                    status = fast(
                        buffer,
                        events,
                        _NO_BOUND if self.max_pending is None else self.max_pending - len(events),
                        mask_in,
                        limit,
                        self._writes if answers_pings and self.state is State.OPEN else None,
                    )
                    if status == _PARTIAL:  # a frame has begun: wait for the rest of it
                        if reader.eof:
                            raise EOFError("stream ended within a frame")
                        yield
                        continue
                    if status != _LEFT_TO_PYTHON:  # buffer empty, or max_pending reached
                        continue
                # Fast path: a whole frame is buffered (many per recv); else wait.
                frame = parse_buffered(reader, mask=mask_in, max_size=limit, rsv_mask=rsv_mask)
                if frame is None:
                    frame = yield from Frame.parse(reader, mask=mask_in, max_size=limit, rsv_mask=rsv_mask)
                if self._handle(frame):
                    break
        except ProtocolError as exc:
            self.logger.debug("failing the connection: %s", exc)
            self.failure = exc
            self.fail(exc.code, str(exc))  # replaces this parser with _discard()
            return
        except EOFError:
            pass
        except Exception as exc:  # a bug here must not take the I/O loop down
            self.logger.exception("unexpected error while parsing")
            self.failure = ProtocolError(str(exc))
            self.fail(CloseCode.INTERNAL_ERROR, "internal error")
            return
        yield from self._discard()

    def _discard(self) -> Generator[None, None, None]:
        """After a close frame or a failure nothing is data (§5.5.1): drop bytes until EOF."""
        reader = self._reader
        while not reader.eof:
            reader.discard()
            yield
        reader.discard()
        self.state = State.CLOSED
        self._send_eof()

    def _handle(self, frame: Frame) -> bool:
        """Apply one received frame; True once a close frame ends the parsing."""
        if self.extensions:
            left = None if self.max_message_size is None else self.max_message_size - self._in_size
            for extension in reversed(self.extensions):
                frame = extension.decode(frame, max_size=left)
        opcode = frame.opcode
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if self._in_opcode is not None:  # §5.4
                raise ProtocolError("new data frame inside a fragmented message")
            if frame.fin:
                # A whole message: the frame parser already held its payload to
                # max_message_size; what an extension decoded is checked here.
                if self.extensions:
                    self._check_size(len(frame.data))
                if opcode is Opcode.TEXT and not frame.data.isascii():
                    self._validate_utf8(frame.data, final=True)
                self._events.append(frame)
                return False
            # §10.4: a fragment that is not the last counts at least 1 byte, so a
            # message of empty fragments is bounded by max_message_size too.
            size = len(frame.data) or 1
            self._check_size(size)
            self._in_opcode = opcode  # a fragmented message starts
            self._in_size = size
            if opcode is Opcode.TEXT:
                self._in_utf8 = _utf8_decoder()
                self._validate_utf8(frame.data, final=False)
            self._events.append(frame)
        elif opcode is Opcode.CONTINUATION:
            if self._in_opcode is None:  # §5.4
                raise ProtocolError("continuation frame without a message to continue")
            size = self._in_size + (len(frame.data) or (0 if frame.fin else 1))
            self._check_size(size)
            self._in_size = size
            if self._in_utf8 is not None:
                self._validate_utf8(frame.data, final=frame.fin)
            if frame.fin:
                self._in_opcode = None
                self._in_utf8 = None
                self._in_size = 0
            self._events.append(frame)
        elif opcode is Opcode.PING:
            if self.state is State.OPEN:  # §5.5.2: answer with the same payload
                self._send(Frame(Opcode.PONG, frame.data))
            self._events.append(frame)
        elif opcode is Opcode.PONG:
            self._events.append(frame)
        else:  # Opcode.CLOSE
            self.close_rcvd = Close.parse(frame.data)
            if self.state is State.OPEN:
                # §5.5.1: answer with a close frame, echoing the status code.
                self.send_close(None if self.close_rcvd.code == CloseCode.NO_STATUS_RCVD else self.close_rcvd.code)
            self.state = State.CLOSING
            if self.side is Side.SERVER:  # §7.1.1: the server closes TCP first
                self._send_eof()
            self._events.append(frame)
            return True
        return False

    def _check_size(self, size: int) -> None:
        if self.max_message_size is not None and size > self.max_message_size:
            raise PayloadTooBig(f"message of over {self.max_message_size} bytes")

    def _validate_utf8(self, data: bytes, final: bool) -> None:
        # §8.1: fail as soon as the bytes so far cannot start valid UTF-8, even
        # before the rest of a fragmented message arrives.
        try:
            if self._in_utf8 is not None:
                self._in_utf8.decode(data, final)
            else:
                data.decode()
        except UnicodeDecodeError as exc:
            raise InvalidPayload("invalid UTF-8 in a text message") from exc
