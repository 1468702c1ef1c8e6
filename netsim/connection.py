"""netsim's connections: one :class:`Connection` (an :class:`asyncio.Protocol`) per
accepted, TLS-established client connection.

A connection splits what it reads into frames (``codec.framing.BINARY2``) and hands
their payloads to its :class:`Owner` (the server) in bursts of at most ``_BURST``
per loop iteration: the answers to a burst are committed and sent while the next
one is worked on, so that the peer is kept busy too. Outgoing frames queued in one
loop iteration leave in one write. Reading pauses while ``_MAX_IN_FLIGHT``
requests wait (for the ledger or a timer), while more than ``_MAX_BUFFERED`` bytes
were read and not handed on, and while the peer does not read its answers.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast

import structlog

from codec.framing import BINARY2, FramingError

__all__ = ["Connection", "Owner"]

_FRAMING = BINARY2
_MAX_IN_FLIGHT = 4096        # per connection
_MAX_BUFFERED = 1 << 18      # bytes
_BURST = 32                  # frames
_CLOSE_TIMEOUT = 2.0         # seconds a graceful close may take before an abort


class Owner(Protocol):
    """What a :class:`Connection` reports to."""

    def _opened(self, conn: Connection) -> None:
        """``conn`` completed its TLS handshake (it may abort it: refused)."""

    def _received(self, conn: Connection, payloads: list[bytes]) -> None:
        """A burst of frames' payloads read from ``conn``, in order."""

    def _closed(self, conn: Connection) -> None:
        """``conn`` is gone."""


class Connection(asyncio.Protocol):
    """One accepted client connection (see the module's documentation), with its
    sign-on state; ``number`` names it in logs (0 until its owner accepts it)."""

    def __init__(self, owner: Owner, log: structlog.typing.FilteringBoundLogger) -> None:
        self.owner = owner
        self.log = log
        self.number = 0  # 0 until accepted
        self.signed_on = False
        self.transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self._buffer = b""  # read, not handed on yet: frames, maybe a partial one last
        self._consuming = False  # a _consume is scheduled
        self._ended = False  # no more data will come
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._waiting = 0  # requests waiting for the ledger or a timer
        self._writing_paused = False
        self._reading = True
        self._closer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's TLS transport is one without subclassing
        # asyncio.Transport, so no isinstance check here).
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.owner._opened(self)

    def data_received(self, data: bytes) -> None:
        if self._ended:
            return
        self._buffer = self._buffer + data if self._buffer else data
        if not self._consuming:
            self._consume()

    def eof_received(self) -> bool | None:
        self._ended = True
        if not self._consuming:
            self._end()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._out.clear()
        if self._closer is not None:
            self._closer.cancel()
        if exc is not None:
            self.log.info("connection.lost", conn=self.number, error=type(exc).__name__)
        self._ended = True
        if not self._consuming:
            self._end()
        self.owner._closed(self)

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._control_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._control_reading()

    # ------------------------------------------------------------ for the owner

    @property
    def closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def hold(self) -> None:
        """A request starts waiting (for the ledger or a timer)."""
        self._waiting += 1
        if self._waiting >= _MAX_IN_FLIGHT:
            self._control_reading()

    def release(self) -> None:
        """A request stopped waiting."""
        self._waiting -= 1
        if not self._reading:
            self._control_reading()

    def send(self, data: bytes) -> None:
        """Queue one frame; frames queued in the same loop iteration go out together."""
        self._out.append(data)
        self.flush_soon()

    def flush_soon(self) -> None:
        """Have the queued frames written in one go by a callback scheduled now (unless
        one is scheduled already): it runs after the callbacks scheduled before it."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def abort(self) -> None:
        self._out.clear()
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Close gracefully (TLS close_notify), aborting if that does not finish soon."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
            self._closer = self._loop.call_later(_CLOSE_TIMEOUT, self.abort)

    # ------------------------------------------------------------ internals

    def _flush(self) -> None:
        self._flush_scheduled = False
        data = b"".join(self._out)
        self._out.clear()
        if data and not self.closing:
            assert self.transport is not None
            self.transport.write(data)

    def _consume(self) -> None:
        """Hand up to ``_BURST`` complete frames of the buffer to the owner; the next
        ones in the next loop iteration, after the first ones were committed (and
        their answers sent): the peer works on those while netsim works on the rest."""
        self._consuming = False
        buf = self._buffer
        pos, end, limit = 0, len(buf), _FRAMING.max_frame
        payloads: list[bytes] = []
        bad_header = None
        for _ in range(_BURST):
            if end - pos < 2:
                break
            length = buf[pos] << 8 | buf[pos + 1]
            if not 0 < length <= limit:
                bad_header = buf[pos:pos + 2]
                break
            stop = pos + 2 + length
            if stop > end:
                break
            payloads.append(buf[pos + 2:stop])
            pos = stop
        self._buffer = buf[pos:]
        if payloads:
            self.owner._received(self, payloads)
        if len(payloads) == _BURST and len(self._buffer) >= 2:  # more may be complete
            self._consuming = True
            self._loop.call_soon(self._consume)
        if bad_header is not None:
            self._bad_header(bad_header)
            return
        if self._ended and not self._consuming:
            self._end()
        self._control_reading()

    def _end(self) -> None:
        """The peer closed (or the connection is gone) and every frame it sent was read."""
        if self._buffer:
            self._buffer = b""  # card data, maybe
            self.log.info("connection.ended_mid_frame", conn=self.number)
        self.close()

    def _control_reading(self) -> None:
        reading = (not self._writing_paused and self._waiting < _MAX_IN_FLIGHT
                   and len(self._buffer) < _MAX_BUFFERED)
        if reading != self._reading and not self.closing:
            assert self.transport is not None
            self._reading = reading
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _bad_header(self, header: bytes) -> None:
        error = "bad length header"
        try:
            _FRAMING.parse_header(header)
        except FramingError as exc:
            error = exc.msg
        self.log.warning("connection.bad_length_header", conn=self.number, error=error)
        self._buffer = b""
        self._ended = True
        self.abort()
