"""Tests for codec.framing: length headers, the incremental decoder, asyncio helpers."""

from __future__ import annotations

import asyncio
import itertools
import pickle
from collections.abc import Awaitable, Callable
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from codec.framing import (
    ASCII4,
    BCD2,
    BINARY2,
    FrameDecoder,
    Framing,
    FramingError,
    IncompleteFrame,
    frame,
    read_frame,
    write_frame,
)

KINDS = [BINARY2, ASCII4, BCD2]
KIND_IDS = [k.name for k in KINDS]
PAN = b"4111111111111111"
PAN_TEXT = PAN.decode()

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
Client = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


# --- headers -----------------------------------------------------------------


def test_known_header_encodings() -> None:
    """Each kind encodes 123 in its documented wire form."""
    assert BINARY2.encode_header(123) == b"\x00\x7b"
    assert ASCII4.encode_header(123) == b"0123"
    assert BCD2.encode_header(123) == b"\x01\x23"


def test_header_extremes_of_each_kind() -> None:
    """The largest length each header can express encodes and parses back."""
    assert BINARY2.with_max(65535).encode_header(65535) == b"\xff\xff"
    assert ASCII4.with_max(9999).encode_header(9999) == b"9999"
    assert BCD2.with_max(9999).encode_header(9999) == b"\x99\x99"
    assert BINARY2.with_max(65535).parse_header(b"\xff\xff") == 65535
    assert ASCII4.with_max(9999).parse_header(b"9999") == 9999
    assert BCD2.with_max(9999).parse_header(b"\x99\x99") == 9999


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_header_boundaries(kind: Framing) -> None:
    """Lengths 1 and max_frame are accepted both ways; 0 and max_frame + 1 are rejected."""
    small = kind.with_max(300)
    for n in (1, 300):
        assert small.parse_header(small.encode_header(n)) == n
    for n in (0, -1, 301):
        with pytest.raises(FramingError):
            small.encode_header(n)
    for n in (0, 301):
        with pytest.raises(FramingError):
            small.parse_header(_raw_header(small, n))


def _raw_header(kind: Framing, n: int) -> bytes:
    """Build a header by hand, bypassing encode_header's checks."""
    if kind.name == "binary2":
        return n.to_bytes(2, "big")
    digits = b"%04d" % n
    return digits if kind.name == "ascii4" else bytes.fromhex(digits.decode())


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
@given(data=st.data())
def test_header_round_trip(kind: Framing, data: st.DataObject) -> None:
    """Every length in 1..max_frame survives encode_header then parse_header."""
    n = data.draw(st.integers(1, kind.max_frame))
    header = kind.encode_header(n)
    assert len(header) == kind.header_len
    assert kind.parse_header(header) == n


@pytest.mark.parametrize("header", [b"01a3", b" 123", b"+123", b"-123", b"1_23", b"12\x003"])
def test_ascii4_rejects_non_digits(header: bytes) -> None:
    """An ASCII header with anything but the digits 0-9 is rejected."""
    with pytest.raises(FramingError, match="decimal digits"):
        ASCII4.parse_header(header)


@pytest.mark.parametrize("header", [b"\x0a\x00", b"\x00\x0f", b"\xa0\x01", b"\x01\x2b"])
def test_bcd2_rejects_non_decimal_nibble(header: bytes) -> None:
    """A BCD header with a nibble above 9 is rejected."""
    with pytest.raises(FramingError, match="nibble"):
        BCD2.parse_header(header)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_header_of_wrong_size_rejected(kind: Framing) -> None:
    """parse_header insists on exactly header_len bytes."""
    for size in (0, kind.header_len - 1, kind.header_len + 1):
        with pytest.raises(FramingError):
            kind.parse_header(b"\x00" * size)


def test_framing_limits_are_validated() -> None:
    """Defaults fit their header; with_max refuses 0 and anything the header cannot express."""
    for kind in KINDS:
        assert 1 <= kind.max_frame <= kind.header_limit
        assert kind.with_max(4096).max_frame == 4096
        assert kind.with_max(4096).name == kind.name
        with pytest.raises(ValueError, match="max_frame"):
            kind.with_max(0)
        with pytest.raises(ValueError, match="max_frame"):
            kind.with_max(kind.header_limit + 1)
    assert (BINARY2.header_limit, ASCII4.header_limit, BCD2.header_limit) == (65535, 9999, 9999)


def test_frame_prefixes_header_and_rejects_bad_sizes() -> None:
    """frame() puts the header in front and refuses empty or oversized payloads."""
    assert frame(b"abc") == b"\x00\x03abc"
    assert frame(b"abc", ASCII4) == b"0003abc"
    assert frame(bytearray(b"ab"), BCD2) == b"\x00\x02ab"
    with pytest.raises(FramingError, match="zero-length"):
        frame(b"")
    with pytest.raises(FramingError, match="max_frame"):
        frame(b"x" * 17, BINARY2.with_max(16))


# --- FrameDecoder ------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_decoder_many_frames_in_one_chunk(kind: Framing) -> None:
    """A chunk holding many whole frames yields all of them, in order, leaving nothing buffered."""
    payloads = [bytes([i % 256]) * (1 + i % 50) for i in range(2000)]
    dec = FrameDecoder(kind)
    assert dec.feed(b"".join(frame(p, kind) for p in payloads)) == payloads
    assert dec.buffered == 0


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_decoder_one_frame_byte_by_byte(kind: Framing) -> None:
    """A frame fed one byte at a time comes out exactly once, on its last byte."""
    payload = bytes(range(256)) * 4
    wire = frame(payload, kind)
    dec = FrameDecoder(kind)
    for i in range(len(wire) - 1):
        assert dec.feed(wire[i : i + 1]) == []
        assert dec.buffered == i + 1
    assert dec.feed(wire[-1:]) == [payload]
    assert dec.buffered == 0


@given(
    kind=st.sampled_from(KINDS),
    payloads=st.lists(st.binary(min_size=1, max_size=300), max_size=20),
    cuts=st.lists(st.integers(0, 10_000), max_size=40),
)
def test_decoder_random_chunking(kind: Framing, payloads: list[bytes], cuts: list[int]) -> None:
    """However the stream is split into chunks, the decoder returns exactly the frames sent."""
    kind = kind.with_max(300)
    wire = b"".join(frame(p, kind) for p in payloads)
    points = sorted({0, len(wire), *(c % (len(wire) + 1) for c in cuts)})
    dec = FrameDecoder(kind)
    out: list[bytes] = []
    for a, b in itertools.pairwise(points):
        out += dec.feed(memoryview(wire)[a:b])
        assert dec.buffered < kind.header_len + kind.max_frame
    dec.feed_eof()
    assert out == payloads
    assert all(type(p) is bytes for p in out)


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_decoder_rejects_oversize_header_before_body(kind: Framing) -> None:
    """A header announcing max_frame + 1 raises on its last byte, with no body fed or buffered."""
    dec = FrameDecoder(kind.with_max(100))
    header = kind.with_max(101).encode_header(101)
    assert dec.feed(header[:1]) == []
    with pytest.raises(FramingError, match="max_frame 100"):
        dec.feed(header[1:])
    assert dec.buffered == 0


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_decoder_buffer_stays_bounded(kind: Framing) -> None:
    """While a max-size frame trickles in, the buffer never exceeds header_len + max_frame."""
    small = kind.with_max(64)
    wire = frame(b"z" * 64, small) * 3
    dec = FrameDecoder(small)
    got: list[bytes] = []
    for i in range(0, len(wire), 7):
        got += dec.feed(wire[i : i + 7])
        assert dec.buffered < small.header_len + small.max_frame
    assert got == [b"z" * 64] * 3


def test_decoder_rejects_zero_length_and_bad_digits_with_offset() -> None:
    """Zero-length and non-digit headers raise, with the offset of the offending frame."""
    good = frame(b"hello", ASCII4) + frame(b"x", ASCII4)
    for bad in (b"0000", b"00x1"):
        dec = FrameDecoder(ASCII4)
        with pytest.raises(FramingError) as info:
            dec.feed(good + bad + b"rest")
        assert info.value.offset == len(good)
    dec = FrameDecoder(BINARY2)
    assert dec.feed(frame(b"abc")) == [b"abc"]
    with pytest.raises(FramingError, match="zero-length") as info:
        dec.feed(b"\x00\x00")
    assert info.value.offset == 5


def test_decoder_poisoned_after_error() -> None:
    """After a framing error every later feed or feed_eof raises, even with valid input."""
    dec = FrameDecoder(BINARY2.with_max(10))
    with pytest.raises(FramingError):
        dec.feed(b"\x00\x0b")
    assert dec.poisoned
    for action in (lambda: dec.feed(frame(b"ok")), lambda: dec.feed(b""), dec.feed_eof):
        with pytest.raises(FramingError, match="earlier framing error"):
            action()


def test_decoder_eof_mid_frame() -> None:
    """feed_eof inside a frame raises IncompleteFrame saying what was expected and received."""
    dec = FrameDecoder(BINARY2)
    dec.feed(frame(b"first") + b"\x00\x0a" + PAN[:4])
    with pytest.raises(IncompleteFrame) as info:
        dec.feed_eof()
    assert (info.value.expected, info.value.received, info.value.offset) == (12, 6, 7)
    assert dec.poisoned and dec.buffered == 0
    clean = FrameDecoder(ASCII4)
    clean.feed(b"00")
    with pytest.raises(IncompleteFrame) as info:
        clean.feed_eof()
    assert (info.value.expected, info.value.received) == (4, 2)
    FrameDecoder().feed_eof()  # nothing fed: a clean end


# --- errors --------------------------------------------------------------------


def test_errors_pickle() -> None:
    """FramingError and IncompleteFrame survive pickling with their type, fields and text."""
    for err in (FramingError("bad header", 42), FramingError("no offset"), IncompleteFrame(9, 4)):
        back = pickle.loads(pickle.dumps(err))
        assert type(back) is type(err)
        assert (back.msg, back.offset, str(back)) == (err.msg, err.offset, str(err))
    inc = pickle.loads(pickle.dumps(IncompleteFrame(12, 6, offset=7)))
    assert (inc.expected, inc.received, inc.offset) == (12, 6, 7)


def test_error_text_carries_no_payload() -> None:
    """No error text or repr holds payload bytes, even when a misaligned header is card digits."""
    errors: list[FramingError] = []
    with pytest.raises(FramingError) as info:
        frame(PAN, BINARY2.with_max(8))
    errors.append(info.value)
    dec = FrameDecoder(ASCII4.with_max(4096))  # misaligned: "4111" read as a length
    with pytest.raises(FramingError) as info:
        dec.feed(PAN)
    errors.append(info.value)
    dec = FrameDecoder(BINARY2)
    dec.feed(b"\x00\x20" + PAN)
    with pytest.raises(IncompleteFrame) as info:
        dec.feed_eof()
    errors.append(info.value)
    for err in errors:
        for text in (str(err), repr(err), str(pickle.loads(pickle.dumps(err)))):
            assert "4111" not in text and "1111" not in text


# --- asyncio over loopback TCP -----------------------------------------------


async def _serve(handler: Handler, client: Client) -> None:
    """Run ``client`` against ``handler`` over a real 127.0.0.1 TCP connection.

    Waits for the handler to finish and re-raises anything it raised, so
    assertions on the server side count. The 30 s limits only turn a broken
    implementation's hang into a failure; nothing asserts on timing.
    """
    done = asyncio.Event()
    failures: list[BaseException] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except BaseException as exc:
            failures.append(exc)
            raise
        finally:
            done.set()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            await asyncio.wait_for(client(reader, writer), 30)  # hang guard only
        finally:
            writer.close()
            await writer.wait_closed()
        await asyncio.wait_for(done.wait(), 30)  # hang guard only
    finally:
        server.close()
        await server.wait_closed()
    if failures:
        raise failures[0]


async def _send_and_close(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("kind", KINDS, ids=KIND_IDS)
def test_tcp_round_trip_both_ways(kind: Framing) -> None:
    """Frames written by each side arrive intact on the other; the server then sees clean EOF."""
    payloads = [b"0100" + bytes([i]) * (i * 37 + 1) for i in range(8)] + [b"m" * kind.max_frame]
    server_saw: list[bytes | None] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (payload := await read_frame(reader, kind)) is not None:
            server_saw.append(payload)
            await write_frame(writer, payload[::-1], kind)
        server_saw.append(None)
        writer.close()
        await writer.wait_closed()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for p in payloads:
            await write_frame(writer, p, kind)
        replies = [await read_frame(reader, kind) for _ in payloads]
        assert replies == [p[::-1] for p in payloads]
        writer.write_eof()
        assert await read_frame(reader, kind) is None

    asyncio.run(_serve(handler, client))
    assert server_saw == [*payloads, None]


def test_tcp_clean_eof_returns_none() -> None:
    """A peer closing between frames makes read_frame return None, after any whole frames."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_and_close(writer, frame(b"last"))

    async def client(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        assert await read_frame(reader) == b"last"
        assert await read_frame(reader) is None
        assert await read_frame(reader) is None

    asyncio.run(_serve(handler, client))


def test_tcp_eof_mid_body_raises_incomplete_frame() -> None:
    """EOF inside a body raises IncompleteFrame with counts and no link to the partial data."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_and_close(writer, b"\x00\x20" + PAN)

    async def client(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(IncompleteFrame) as info:
            await read_frame(reader)
        err = info.value
        assert (err.expected, err.received) == (34, 18)
        assert err.__context__ is None and err.__cause__ is None
        assert PAN_TEXT not in str(err)

    asyncio.run(_serve(handler, client))


def test_tcp_eof_mid_header_raises_incomplete_frame() -> None:
    """EOF after part of a header raises IncompleteFrame, not a clean end."""

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_and_close(writer, b"01")

    async def client(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(IncompleteFrame) as info:
            await read_frame(reader, ASCII4)
        assert (info.value.expected, info.value.received) == (4, 2)

    asyncio.run(_serve(handler, client))


def test_tcp_oversize_header_leaves_body_unread() -> None:
    """An oversize header raises FramingError before any body byte is consumed from the reader."""
    body = b"B" * 17

    async def handler(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _send_and_close(writer, b"\x00\x11" + body)

    async def client(reader: asyncio.StreamReader, _: asyncio.StreamWriter) -> None:
        with pytest.raises(FramingError, match="max_frame 16") as info:
            await read_frame(reader, BINARY2.with_max(16))
        assert not isinstance(info.value, IncompleteFrame)
        assert await reader.readexactly(len(body)) == body
        assert await reader.read() == b""

    asyncio.run(_serve(handler, client))


def test_tcp_write_frame_rejects_bad_payload_without_writing() -> None:
    """write_frame refuses empty or oversize payloads and puts nothing on the wire."""
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read())
        writer.close()
        await writer.wait_closed()

    async def client(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with pytest.raises(FramingError):
            await write_frame(writer, b"")
        with pytest.raises(FramingError):
            await write_frame(writer, b"x" * 5, BINARY2.with_max(4))
        await write_frame(writer, b"ok")
        writer.write_eof()

    asyncio.run(_serve(handler, client))
    assert received == [b"\x00\x02ok"]


def test_write_frame_drains_after_writing() -> None:
    """write_frame hands the whole frame to the writer in one write, then awaits drain()."""
    calls: list[tuple[str, bytes]] = []

    class RecordingWriter:
        def write(self, data: bytes) -> None:
            calls.append(("write", data))

        async def drain(self) -> None:
            calls.append(("drain", b""))

    writer = cast(asyncio.StreamWriter, RecordingWriter())
    asyncio.run(write_frame(writer, b"0800", ASCII4))
    assert calls == [("write", b"00040800"), ("drain", b"")]
