"""One mutual-TLS connection to the card network, with many requests in flight.

A :class:`Connection` frames messages (``codec.framing.BINARY2``), encodes and
decodes them with the network dialect (``codec.dialect.SPEC``) and pairs each
response with its request: responses are looked up by (field 41, field 11),
and the response MTI must answer the request's MTI
(``codec.dialect.RESPONSE_MTI``).

It is an asyncio protocol, not a pair of streams, so a request costs one
future and one timer:

* **Sending** encodes the request, registers it and queues its frame; the
  frames queued during one turn of the event loop go out in one
  ``transport.write`` (one TLS record, one system call) at the end of it.
  Requests only wait to be written while the transport's buffer is above its
  high-water mark (``pause_writing``).
* **Deadlines** are a ``loop.call_at`` timer per request that fails its
  future with OutcomeUnknown; the response cancels the timer.
* **Receiving** happens in ``data_received``: every complete frame of a chunk
  is decoded and dispatched at once, with no reader task.

What arrives is never allowed to kill the connection unless the byte stream
itself is broken:

* a frame that does not decode is logged (field and offset only) and dropped;
* a response nobody waits for (late, duplicate, unknown key, wrong MTI) goes to
  the ``on_unsolicited`` callback;
* an echo test (0800, field 70 = 301) from the network is answered with 0810;
  any other request from the network is logged and dropped.

A framing error (bad length header, stream ended mid-frame), a reset or EOF
ends the connection: every request still pending fails with
:class:`~gateway.network.errors.OutcomeUnknown`. The connection knows nothing
of sign-on, echo policy or reconnection; :mod:`gateway.network.client` does.
``on_frame("out" | "in", payload)``, if given, sees every frame's payload sent or
received (a recorder).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable, Mapping
from typing import cast

import structlog

import codec
from codec import dialect
from codec.framing import BINARY2, FramingError, IncompleteFrame

from .errors import NotSent, OutcomeUnknown

__all__ = ["Connection", "FrameObserver", "UnsolicitedHandler", "check_request"]

log = structlog.get_logger("gateway.network")

#: Called with every decoded response that no pending request claims.
UnsolicitedHandler = Callable[[dict[str, str]], None]
#: Called with ("out" | "in", payload) for every frame sent or received (a recorder).
FrameObserver = Callable[[str, bytes], None]

_CLOSE_TIMEOUT = 1.0  # seconds to wait for a TLS close before aborting
_SPEC = dialect.SPEC
_RESPONSE_MTI = dialect.RESPONSE_MTI
_RESPONSE_MTIS = dialect.RESPONSE_MTIS
_HEADER = BINARY2.header_len
_MAX_FRAME = BINARY2.max_frame


class _Pending:
    """A request waiting for its response (or its deadline timer)."""

    __slots__ = ("answer_mti", "future", "mti", "stan", "terminal_id", "timer")

    def __init__(self, mti: str, terminal_id: str, stan: str,
                 future: asyncio.Future[dict[str, str]]) -> None:
        self.mti = mti
        self.answer_mti = _RESPONSE_MTI[mti]
        self.terminal_id = terminal_id
        self.stan = stan
        self.future = future
        self.timer: asyncio.TimerHandle | None = None

    def outcome_unknown(self, reason: str) -> OutcomeUnknown:
        return OutcomeUnknown(reason, mti=self.mti, terminal_id=self.terminal_id, stan=self.stan)


def check_request(doc: Mapping[str, str]) -> tuple[str, str, str]:
    """Return (MTI, field 41, field 11) of a request; raise ValueError if it is not one."""
    mti = doc.get("t", "")
    if mti not in _RESPONSE_MTI:
        raise ValueError("not a request MTI of the network dialect")
    terminal_id = doc.get("41", "")
    stan = doc.get("11", "")
    if not terminal_id or not stan:
        raise ValueError("a request needs field 41 (terminal id) and field 11 (STAN)")
    return mti, terminal_id, stan


class Connection:
    """One TLS connection to the network. Use :meth:`open`, then :meth:`exchange`.

    ``name`` only labels log lines. Times are the running loop's clock
    (``loop.time()``); ``end`` arguments are absolute deadlines on that clock.
    """

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        server_hostname: str = "localhost",
        name: str = "network",
        on_unsolicited: UnsolicitedHandler | None = None,
        on_frame: FrameObserver | None = None,
    ) -> None:
        self.host = host
        self._on_frame = on_frame
        self.port = port
        self.name = name
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._on_unsolicited = on_unsolicited
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._out: list[bytes] = []  # frames queued for the next flush
        self._inbuf = b""  # the start of a frame not yet complete
        self._paused = False  # the transport's buffer is above its high-water mark
        self._writable: list[asyncio.Future[None]] = []  # waiting for resume_writing
        self._gone: asyncio.Future[None] | None = None  # done once the transport is lost
        self._closed = False
        self._closed_event = asyncio.Event()
        self.last_received = 0.0
        self.opened_at = 0.0

    # -- state -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Connected and not lost or closed."""
        return self._transport is not None and not self._closed

    @property
    def in_flight(self) -> int:
        """Requests written (or queued to be written) and still waiting for a response."""
        return len(self._pending)

    async def wait_closed(self) -> None:
        """Return once the connection is lost or closed."""
        await self._closed_event.wait()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Connect and complete the TLS handshake within ``timeout`` seconds.

        Raises NotSent when the network cannot be reached.
        """
        if self._loop is not None or self._closed:
            raise RuntimeError("a Connection is opened once")
        loop = self._loop = asyncio.get_running_loop()
        self._gone = loop.create_future()
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port, ssl=self._ssl,
                    server_hostname=self._server_hostname,
                    ssl_handshake_timeout=max(timeout, 0.001))
        except TimeoutError:
            self._lose("connect timed out")
            raise NotSent("connecting to the network timed out") from None
        except OSError as exc:  # includes ssl.SSLError
            self._lose("connect failed")
            raise NotSent(f"cannot connect to the network: {type(exc).__name__}") from exc
        if self._closed:  # lost between the handshake and now
            raise NotSent("the connection was lost right after connecting")
        log.info("network connection open", connection=self.name, host=self.host,
                 port=self.port)

    async def close(self, reason: str = "closed") -> None:
        """Close the connection; requests still pending fail with OutcomeUnknown."""
        self._lose(reason)
        transport, gone = self._transport, self._gone
        if transport is None or gone is None or gone.done():
            return
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await asyncio.shield(gone)
        except TimeoutError:
            transport.abort()

    def _lose(self, reason: str) -> None:
        """Mark the connection lost: fail what is pending, start closing the transport."""
        if self._closed:
            return
        self._closed = True
        self._closed_event.set()
        self._out.clear()
        self._inbuf = b""
        pending = list(self._pending.values())
        self._pending.clear()
        for entry in pending:
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_exception(entry.outcome_unknown("connection lost in flight"))
        self._wake_writers()
        if self._transport is not None:
            self._transport.close()
            log.info("network connection closed", connection=self.name, reason=reason,
                     failed_in_flight=len(pending))

    # -- sending -----------------------------------------------------------------------

    async def exchange(self, doc: Mapping[str, str], end: float) -> dict[str, str]:
        """Send request ``doc`` and return its response, waiting until ``end`` at most.

        Raises NotSent if the request was not written (connection closed,
        deadline passed before the write, cannot be encoded), OutcomeUnknown if it
        was (or may have been) written and no response came in time or the
        connection was lost, and ValueError if ``doc`` is not a request or a
        request with the same (41, 11) is already in flight here.
        """
        if self._paused and self.is_open:
            await self._wait_writable(doc, end)
        entry = self._send(doc, end)
        try:
            return await entry.future
        except asyncio.CancelledError:
            self._abandon(entry)
            raise

    def _send(self, doc: Mapping[str, str], end: float) -> _Pending:
        """Register ``doc``, queue its frame and arm its deadline; return its entry."""
        mti, terminal_id, stan = check_request(doc)
        key = (terminal_id, stan)
        loop = self._loop
        if loop is None or not self.is_open:
            raise NotSent.for_request("connection is not open", doc)
        if key in self._pending:
            raise ValueError("a request with this terminal id and STAN is already in flight")
        if end <= loop.time():
            raise NotSent.for_request("deadline passed before sending", doc)
        try:
            payload = codec.encode(doc, _SPEC)
        except codec.EncodeError as exc:
            raise NotSent.for_request("request cannot be encoded", doc) from exc
        if len(payload) > _MAX_FRAME:
            raise NotSent.for_request("request cannot be encoded", doc)
        entry = _Pending(mti, terminal_id, stan, loop.create_future())
        entry.timer = loop.call_at(end, self._expire, key, entry)
        self._pending[key] = entry
        if self._on_frame is not None:
            self._on_frame("out", payload)
        self._queue(len(payload).to_bytes(_HEADER, "big") + payload)
        return entry

    def _queue(self, data: bytes) -> None:
        """Queue ``data`` for the flush at the end of this turn of the event loop."""
        if not self._out:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if self._transport is not None and not self._closed:
            self._transport.write(data)

    async def _wait_writable(self, doc: Mapping[str, str], end: float) -> None:
        """Wait until the transport takes data again; NotSent if ``end`` comes first."""
        assert self._loop is not None
        waiter = self._loop.create_future()
        self._writable.append(waiter)
        try:
            async with asyncio.timeout_at(end):
                await waiter
        except TimeoutError:
            raise NotSent.for_request("deadline passed before sending", doc) from None
        finally:
            if waiter in self._writable:
                self._writable.remove(waiter)

    def _wake_writers(self) -> None:
        waiters, self._writable = self._writable, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _expire(self, key: tuple[str, str], entry: _Pending) -> None:
        """The deadline timer: give up on ``entry``; a response that still comes is late."""
        if self._pending.get(key) is entry:
            del self._pending[key]
        if not entry.future.done():
            entry.future.set_exception(entry.outcome_unknown("no response before the deadline"))

    def _abandon(self, entry: _Pending) -> None:
        """Stop waiting for ``entry``; a response that still comes is unsolicited."""
        key = (entry.terminal_id, entry.stan)
        if self._pending.get(key) is entry:
            del self._pending[key]
        if entry.timer is not None:
            entry.timer.cancel()

    # -- transport callbacks (via _Protocol) -------------------------------------------

    def _connected(self, transport: asyncio.Transport) -> None:
        assert self._loop is not None
        self._transport = transport
        self.opened_at = self.last_received = self._loop.time()

    def _received(self, data: bytes) -> None:
        """Decode and dispatch every complete frame; keep the rest for the next chunk."""
        if self._closed:
            return
        assert self._loop is not None
        self.last_received = self._loop.time()
        if self._inbuf:
            data = self._inbuf + data
        pos, size = 0, len(data)
        while size - pos >= _HEADER and not self._closed:
            length = int.from_bytes(data[pos:pos + _HEADER], "big")
            if not 0 < length <= _MAX_FRAME:
                try:
                    BINARY2.parse_header(data[pos:pos + _HEADER])
                except FramingError as exc:
                    self._inbuf = b""
                    self._broken(exc)
                    return
            stop = pos + _HEADER + length
            if stop > size:
                break
            payload = data[pos + _HEADER:stop]
            pos = stop
            if self._on_frame is not None:
                self._on_frame("in", payload)
            try:
                doc = codec.decode(payload, _SPEC)
            except codec.DecodeError as exc:
                log.warning("undecodable frame dropped", connection=self.name,
                            field=exc.field, pos=exc.pos, length=len(payload))
                continue
            self._dispatch(doc)
        self._inbuf = data[pos:] if pos < size else b""

    def _broken(self, exc: FramingError) -> None:
        self._lose(f"framing error: {exc.msg}")
        if self._transport is not None:
            self._transport.abort()

    def _eof(self) -> None:
        """The network closed its side (between frames, or mid-frame: a framing error)."""
        got = len(self._inbuf)
        if not got:
            self._lose("closed by the network")
            return
        expected = _HEADER
        if got >= _HEADER:
            expected += int.from_bytes(self._inbuf[:_HEADER], "big")
        self._lose(f"framing error: {IncompleteFrame(expected, got).msg}")

    def _lost(self, exc: Exception | None) -> None:
        if exc is None:
            self._eof()
        else:
            self._lose(f"connection error: {type(exc).__name__}")
        self._wake_writers()
        if self._gone is not None and not self._gone.done():
            self._gone.set_result(None)

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        if not paused:
            self._wake_writers()

    # -- receiving ---------------------------------------------------------------------

    def _dispatch(self, doc: dict[str, str]) -> None:
        mti = doc.get("t", "")
        key = (doc.get("41", ""), doc.get("11", ""))
        entry = self._pending.get(key)
        if entry is not None and entry.answer_mti == mti:
            del self._pending[key]
            if entry.timer is not None:
                entry.timer.cancel()
            if not entry.future.done():
                entry.future.set_result(doc)
            else:  # its caller was cancelled a moment ago
                self._unsolicited(doc)
        elif mti in _RESPONSE_MTIS:
            self._unsolicited(doc)
        elif mti == "0800" and doc.get("70") == dialect.ECHO:
            self._answer_echo(doc)
        else:
            log.warning("unexpected message from the network dropped", connection=self.name,
                        mti=mti, terminal=doc.get("41"), stan=doc.get("11"))

    def _unsolicited(self, doc: dict[str, str]) -> None:
        log.info("unsolicited response", connection=self.name, mti=doc.get("t"),
                 terminal=doc.get("41"), stan=doc.get("11"), code=doc.get("39"))
        if self._on_unsolicited is None:
            return
        try:
            self._on_unsolicited(doc)
        except Exception as exc:  # a callback's bug must not end the connection
            log.error("unsolicited-response handler failed", connection=self.name,
                      error=type(exc).__name__)

    def _answer_echo(self, request: dict[str, str]) -> None:
        reply = {"t": "0810", "7": dialect.transmission_time(), "11": request.get("11", ""),
                 "39": dialect.APPROVED, "41": request.get("41", ""), "70": dialect.ECHO}
        if "32" in request:
            reply["32"] = request["32"]
        try:
            payload = codec.encode(reply, _SPEC)
        except codec.EncodeError:
            log.warning("cannot answer the network's echo", connection=self.name)
            return
        if self._on_frame is not None:
            self._on_frame("out", payload)
        self._queue(len(payload).to_bytes(_HEADER, "big") + payload)
        log.info("answered the network's echo", connection=self.name, stan=reply["11"])


class _Protocol(asyncio.Protocol):
    """Hands the transport's callbacks to its :class:`Connection`."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's TLS transport is one without subclassing
        # asyncio.Transport, so no isinstance check here).
        transport = cast(asyncio.Transport, transport)
        self._conn._connected(transport)

    def data_received(self, data: bytes) -> None:
        self._conn._received(data)

    def eof_received(self) -> bool:
        self._conn._eof()
        return False  # let the transport close

    def connection_lost(self, exc: Exception | None) -> None:
        self._conn._lost(exc)

    def pause_writing(self) -> None:
        self._conn._set_paused(True)

    def resume_writing(self) -> None:
        self._conn._set_paused(False)
