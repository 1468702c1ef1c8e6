"""Length framing for ISO 8583 messages on a byte stream (TCP or TLS).

Owns the length header in front of each message: its three wire forms
(:data:`BINARY2`, :data:`ASCII4`, :data:`BCD2`), the per-connection size limit,
an incremental sans-I/O :class:`FrameDecoder`, and the asyncio helpers
:func:`read_frame` / :func:`write_frame`. It never looks inside a payload.

Zero-length frames are a protocol error in both directions. Error text is built
from fixed wording and integers only: it never contains payload bytes, header
bytes or the length a bad header announced (on a misaligned stream those can be
card digits).
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ASCII4",
    "BCD2",
    "BINARY2",
    "FrameDecoder",
    "Framing",
    "FramingError",
    "IncompleteFrame",
    "frame",
    "read_frame",
    "write_frame",
]

FramingName = Literal["binary2", "ascii4", "bcd2"]
BytesLike = bytes | bytearray | memoryview

#: name -> (header length in bytes, largest length the header can express)
_KINDS: dict[str, tuple[int, int]] = {
    "binary2": (2, 0xFFFF),
    "ascii4": (4, 9999),
    "bcd2": (2, 9999),
}
_DEFAULT_MAX_FRAME = 8192


class FramingError(ValueError):
    """The byte stream violates the framing, or a payload cannot be framed.

    ``msg`` is a fixed description; ``offset`` is the byte offset in the stream
    where the offending frame starts, or None when unknown (best effort).
    """

    def __init__(self, msg: str, offset: int | None = None) -> None:
        super().__init__(msg if offset is None else f"{msg} (offset {offset})")
        self.msg = msg
        self.offset = offset

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.msg, self.offset))


class IncompleteFrame(FramingError):
    """The stream ended inside a frame.

    ``expected`` is the frame's size as far as known (``header_len`` while the
    header is incomplete, ``header_len + body length`` once it was read) and
    ``received`` how many bytes of that frame arrived.
    """

    def __init__(self, expected: int, received: int, offset: int | None = None) -> None:
        super().__init__(f"stream ended mid-frame: received {received} of {expected} bytes", offset)
        self.expected = expected
        self.received = received

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.expected, self.received, self.offset))


@dataclass(frozen=True, slots=True)
class Framing:
    """A length-header kind and the largest payload (``max_frame`` bytes) accepted.

    ``max_frame`` counts payload bytes only, never the header, and must be
    between 1 and what the header can express (:attr:`header_limit`).
    """

    name: FramingName
    header_len: int
    max_frame: int

    def __post_init__(self) -> None:
        kind = _KINDS.get(self.name)
        if kind is None:
            raise ValueError(f"unknown framing {self.name!r}")
        if self.header_len != kind[0]:
            raise ValueError(f"framing {self.name} has a {kind[0]}-byte header")
        if not 1 <= self.max_frame <= kind[1]:
            raise ValueError(f"max_frame for {self.name} must be in 1..{kind[1]}")

    @property
    def header_limit(self) -> int:
        """The largest length this header kind can express."""
        return _KINDS[self.name][1]

    def with_max(self, max_frame: int) -> Framing:
        """Return the same header kind with another payload limit."""
        return dataclasses.replace(self, max_frame=max_frame)

    def encode_header(self, length: int) -> bytes:
        """Return the header announcing a payload of ``length`` bytes."""
        self._check(length, None)
        if self.name == "binary2":
            return length.to_bytes(2, "big")
        digits = b"%04d" % length
        return digits if self.name == "ascii4" else bytes.fromhex(digits.decode("ascii"))

    def parse_header(self, header: BytesLike, *, offset: int | None = None) -> int:
        """Return the payload length announced by ``header`` (exactly ``header_len`` bytes).

        ``offset`` (the header's position in the stream) only goes into errors.
        """
        raw = bytes(header)
        if len(raw) != self.header_len:
            raise FramingError(f"{self.name} header must be {self.header_len} bytes", offset)
        if self.name == "binary2":
            length = int.from_bytes(raw, "big")
        elif self.name == "ascii4":
            if not raw.isdigit():  # bytes.isdigit: ASCII 0-9 only; no sign, space or "_"
                raise FramingError("ascii4 header is not 4 decimal digits", offset)
            length = int(raw)
        else:
            nibbles = raw.hex()
            if not nibbles.isdigit():
                raise FramingError("bcd2 header has a non-decimal nibble", offset)
            length = int(nibbles)
        self._check(length, offset)
        return length

    def _check(self, length: int, offset: int | None) -> None:
        if length <= 0:
            raise FramingError("zero-length frame", offset)
        if length > self.max_frame:
            raise FramingError(f"frame longer than max_frame {self.max_frame}", offset)


BINARY2 = Framing("binary2", 2, _DEFAULT_MAX_FRAME)
"""2-byte big-endian binary length; the default (the card network simulator's)."""
ASCII4 = Framing("ascii4", 4, _DEFAULT_MAX_FRAME)
"""4-byte ASCII decimal length, e.g. ``b"0123"``."""
BCD2 = Framing("bcd2", 2, _DEFAULT_MAX_FRAME)
"""2-byte packed BCD length, e.g. ``b"\\x01\\x23"`` for 123."""


def frame(payload: BytesLike, framing: Framing = BINARY2) -> bytes:
    """Return ``payload`` with its length header in front.

    Raises FramingError if the payload is empty or longer than ``framing.max_frame``.
    """
    data = bytes(payload)
    return framing.encode_header(len(data)) + data


class FrameDecoder:
    """Incremental, sans-I/O frame decoder: feed it bytes as they arrive.

    Complete frames are returned as soon as their last byte is fed; between
    calls at most one partial frame is buffered (fewer than ``header_len +
    max_frame`` bytes). A bad header raises FramingError as soon as its last
    byte arrives, before any of the body is buffered. After any error the
    decoder is poisoned: its buffer is dropped and every later call raises.
    Frames completed earlier in the call that raises are not returned; the
    connection must be dropped anyway.

    Whole frames inside a chunk are sliced out of the chunk directly; only a
    trailing partial frame is copied into the buffer, so the work is linear in
    the bytes fed however they are chunked.
    """

    def __init__(self, framing: Framing = BINARY2) -> None:
        self.framing = framing
        self._buf = bytearray()  # the partial frame (header first), if any
        self._body_len: int | None = None  # its parsed body length, once known
        self._offset = 0  # stream offset where the buffered frame starts
        self._error: FramingError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of the current partial frame held in the buffer."""
        return len(self._buf)

    @property
    def poisoned(self) -> bool:
        """Whether an earlier error made this decoder unusable."""
        return self._error is not None

    def feed(self, data: BytesLike) -> list[bytes]:
        """Consume ``data`` and return every frame it completes, in order."""
        self._check_alive()
        try:
            with memoryview(data) as raw, raw.cast("B") as view:
                return self._feed(view)
        except FramingError as exc:
            self._poison(exc)
            raise

    def feed_eof(self) -> None:
        """Signal the end of the stream; raise IncompleteFrame if it ended mid-frame."""
        self._check_alive()
        if self._buf:
            expected = self.framing.header_len + (self._body_len or 0)
            exc = IncompleteFrame(expected, len(self._buf), self._offset)
            self._poison(exc)
            raise exc

    def _feed(self, view: memoryview) -> list[bytes]:
        frames: list[bytes] = []
        hl, end = self.framing.header_len, len(view)
        pos = self._fill(view, frames) if self._buf else 0
        while end - pos >= hl:
            body_len = self.framing.parse_header(view[pos : pos + hl], offset=self._offset)
            stop = pos + hl + body_len
            if stop > end:
                self._body_len = body_len
                break
            frames.append(view[pos + hl : stop].tobytes())
            self._offset += hl + body_len
            pos = stop
        if pos < end:
            self._buf += view[pos:]
        return frames

    def _fill(self, view: memoryview, frames: list[bytes]) -> int:
        """Complete the buffered partial frame from ``view``; return bytes used."""
        hl, buf = self.framing.header_len, self._buf
        pos = 0
        if self._body_len is None:  # header still incomplete
            pos = min(hl - len(buf), len(view))
            buf += view[:pos]
            if len(buf) < hl:
                return pos
            self._body_len = self.framing.parse_header(buf, offset=self._offset)
        total = hl + self._body_len
        take = min(total - len(buf), len(view) - pos)
        buf += view[pos : pos + take]
        pos += take
        if len(buf) == total:
            frames.append(bytes(buf[hl:]))
            buf.clear()
            self._body_len = None
            self._offset += total
        return pos

    def _check_alive(self) -> None:
        if self._error is not None:
            raise FramingError(
                "decoder unusable after an earlier framing error", self._error.offset
            ) from self._error

    def _poison(self, exc: FramingError) -> None:
        self._error = exc
        self._buf = bytearray()  # drop any buffered card data
        self._body_len = None


async def read_frame(reader: asyncio.StreamReader, framing: Framing = BINARY2) -> bytes | None:
    """Read one frame's payload from ``reader``; return None on a clean EOF.

    A clean EOF is the stream ending before the first header byte, i.e. the peer
    closed between frames, so a loop reads
    ``while (payload := await read_frame(reader)) is not None: ...``.
    The header is read and validated before the body, so at most
    ``framing.max_frame`` body bytes are ever requested; a bad header raises
    FramingError with the body left unread. EOF inside a frame raises
    IncompleteFrame. ``offset`` in these errors is None (the stream position
    is not tracked here).
    """
    hl = framing.header_len
    header, got = await _read_exactly(reader, hl)
    if got < hl:
        if got == 0:
            return None
        raise IncompleteFrame(hl, got)
    body_len = framing.parse_header(header)
    body, got = await _read_exactly(reader, body_len)
    if got < body_len:
        raise IncompleteFrame(hl + body_len, hl + got)
    return body


async def _read_exactly(reader: asyncio.StreamReader, n: int) -> tuple[bytes, int]:
    """Return ``(data, n)``, or ``(b"", bytes received)`` if the stream ended first.

    The partial data (card data) is dropped here, outside any ``except`` block
    of the caller, so no later exception's ``__context__`` keeps it alive.
    """
    try:
        return await reader.readexactly(n), n
    except asyncio.IncompleteReadError as exc:
        got = len(exc.partial)
    return b"", got


async def write_frame(
    writer: asyncio.StreamWriter, payload: BytesLike, framing: Framing = BINARY2
) -> None:
    """Frame ``payload``, write it and wait for the transport to drain.

    Raises FramingError (writing nothing) if the payload cannot be framed.
    """
    writer.write(frame(payload, framing))
    await writer.drain()
