"""One mutual-TLS connection to the card network, with many requests in flight.

A :class:`Connection` frames messages (``codec.framing.BINARY2``), encodes and
decodes them with the network dialect (``codec.dialect.SPEC``) and pairs each
response with its request: a reader task looks up the pending request by
(field 41, field 11) and checks that the response MTI answers the request's
MTI (``codec.dialect.RESPONSE_MTI``). Writes are serialized by a lock.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

import codec
from codec import dialect
from codec.framing import BINARY2, FramingError, frame, read_frame

from .errors import NotSent, OutcomeUnknown

__all__ = ["Connection", "UnsolicitedHandler"]

log = structlog.get_logger("gateway.network")

#: Called with every decoded response that no pending request claims.
UnsolicitedHandler = Callable[[dict[str, str]], None]

_CLOSE_TIMEOUT = 1.0  # seconds to wait for a TLS close before aborting


@dataclass(slots=True)
class _Pending:
    """A request waiting for its response."""

    mti: str
    terminal_id: str
    stan: str
    future: asyncio.Future[dict[str, str]]

    def outcome_unknown(self, reason: str) -> OutcomeUnknown:
        return OutcomeUnknown(reason, mti=self.mti, terminal_id=self.terminal_id, stan=self.stan)


def _retrieve(future: asyncio.Future[dict[str, str]]) -> None:
    """Mark a future's exception as retrieved (nobody may be left to await it)."""
    if future.done() and not future.cancelled():
        future.exception()


def check_request(doc: Mapping[str, str]) -> tuple[str, str, str]:
    """Return (MTI, field 41, field 11) of a request; raise ValueError if it is not one."""
    mti = doc.get("t", "")
    if mti not in dialect.REQUEST_MTIS:
        raise ValueError("not a request MTI of the network dialect")
    terminal_id, stan = dialect.match_key(doc)
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
    ) -> None:
        self.host = host
        self.port = port
        self.name = name
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._on_unsolicited = on_unsolicited
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._closed = False
        self._closed_event = asyncio.Event()
        self.last_received = 0.0
        self.opened_at = 0.0

    # -- state -------------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        """Connected and not lost or closed."""
        return self._writer is not None and not self._closed

    @property
    def in_flight(self) -> int:
        """Requests written (or being written) and still waiting for a response."""
        return len(self._pending)

    async def wait_closed(self) -> None:
        """Return once the connection is lost or closed."""
        await self._closed_event.wait()

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self, timeout: float) -> None:
        """Connect and complete the TLS handshake within ``timeout`` seconds.

        Raises NotSent when the network cannot be reached.
        """
        if self._writer is not None or self._closed:
            raise RuntimeError("a Connection is opened once")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self._ssl, server_hostname=self._server_hostname,
                    ssl_handshake_timeout=max(timeout, 0.001))
        except TimeoutError:
            self._mark_closed()
            raise NotSent("connecting to the network timed out") from None
        except OSError as exc:  # includes ssl.SSLError
            self._mark_closed()
            raise NotSent(f"cannot connect to the network: {type(exc).__name__}") from exc
        loop = asyncio.get_running_loop()
        self._reader, self._writer = reader, writer
        self.opened_at = self.last_received = loop.time()
        self._read_task = loop.create_task(self._read_loop(), name=f"{self.name}-reader")
        log.info("network connection open", connection=self.name, host=self.host,
                 port=self.port)

    async def close(self, reason: str = "closed") -> None:
        """Close the connection; requests still pending fail with OutcomeUnknown."""
        self._lose(reason)
        current = asyncio.current_task()
        tasks = [t for t in (self._read_task, *self._tasks) if t is not None and t is not current]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        writer = self._writer
        if writer is not None:
            try:
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                writer.transport.abort()

    def _mark_closed(self) -> None:
        self._closed = True
        self._closed_event.set()

    def _lose(self, reason: str) -> None:
        """Mark the connection lost: fail what is pending, start closing the transport."""
        if self._closed:
            return
        self._mark_closed()
        pending = list(self._pending.values())
        self._pending.clear()
        for entry in pending:
            if not entry.future.done():
                entry.future.set_exception(entry.outcome_unknown("connection lost in flight"))
        if self._writer is not None:
            self._writer.close()
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
        entry = await self._send(doc, end)
        key = (entry.terminal_id, entry.stan)
        answered = False
        try:
            await asyncio.wait((entry.future,), timeout=max(end - _now(), 0.0))
            answered = entry.future.done()
        finally:
            if not answered:
                self._abandon(key, entry)
        if not answered:
            raise entry.outcome_unknown("no response before the deadline")
        return entry.future.result()

    async def _send(self, doc: Mapping[str, str], end: float) -> _Pending:
        mti, terminal_id, stan = check_request(doc)
        key = (terminal_id, stan)
        if not self.is_open:
            raise NotSent.for_request("connection is not open", doc)
        if key in self._pending:
            raise ValueError("a request with this terminal id and STAN is already in flight")
        if end <= _now():
            raise NotSent.for_request("deadline passed before sending", doc)
        try:
            payload = frame(codec.encode(doc, dialect.SPEC), BINARY2)
        except (codec.EncodeError, FramingError) as exc:
            raise NotSent.for_request("request cannot be encoded", doc) from exc
        entry = _Pending(mti, terminal_id, stan, asyncio.get_running_loop().create_future())
        entry.future.add_done_callback(_retrieve)
        self._pending[key] = entry
        written = False
        try:
            async with asyncio.timeout_at(end):
                async with self._write_lock:
                    if not self.is_open:
                        raise NotSent.for_request("connection lost before sending", doc)
                    if end <= _now():
                        raise NotSent.for_request("deadline passed before sending", doc)
                    writer = self._writer
                    assert writer is not None
                    writer.write(payload)
                    written = True
                    await writer.drain()
        except TimeoutError:
            self._abandon(key, entry)
            if written:
                raise entry.outcome_unknown("deadline passed while sending") from None
            raise NotSent.for_request("deadline passed before sending", doc) from None
        except OSError:
            self._abandon(key, entry)
            raise entry.outcome_unknown("connection lost while sending") from None
        except BaseException:
            self._abandon(key, entry)
            raise
        return entry

    def _abandon(self, key: tuple[str, str], entry: _Pending) -> None:
        """Stop waiting for ``entry``; a response that still comes is unsolicited."""
        if self._pending.get(key) is entry:
            del self._pending[key]
        if not entry.future.done():
            entry.future.cancel()

    # -- receiving ---------------------------------------------------------------------

    async def _read_loop(self) -> None:
        reader = self._reader
        assert reader is not None
        reason = "closed by the network"
        loop = asyncio.get_running_loop()
        try:
            while (payload := await read_frame(reader, BINARY2)) is not None:
                self.last_received = loop.time()
                try:
                    doc = codec.decode(payload, dialect.SPEC)
                except codec.DecodeError as exc:
                    log.warning("undecodable frame dropped", connection=self.name,
                                field=exc.field, pos=exc.pos, length=len(payload))
                    continue
                self._dispatch(doc)
        except FramingError as exc:
            reason = f"framing error: {exc.msg}"
        except OSError as exc:
            reason = f"connection error: {type(exc).__name__}"
        except asyncio.CancelledError:
            reason = "closed"
            raise
        finally:
            self._lose(reason)

    def _dispatch(self, doc: dict[str, str]) -> None:
        mti = doc.get("t", "")
        if mti in dialect.RESPONSE_MTIS:
            key = dialect.match_key(doc)
            entry = self._pending.get(key)
            if entry is not None and dialect.RESPONSE_MTI[entry.mti] == mti:
                del self._pending[key]
                if not entry.future.done():
                    entry.future.set_result(doc)
                return
            self._unsolicited(doc)
        elif mti == "0800" and doc.get("70") == dialect.ECHO:
            self._spawn(self._answer_echo(doc))
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

    async def _answer_echo(self, request: dict[str, str]) -> None:
        reply = {"t": "0810", "7": dialect.transmission_time(), "11": request.get("11", ""),
                 "39": dialect.APPROVED, "41": request.get("41", ""), "70": dialect.ECHO}
        if "32" in request:
            reply["32"] = request["32"]
        try:
            payload = frame(codec.encode(reply, dialect.SPEC), BINARY2)
        except (codec.EncodeError, FramingError):
            log.warning("cannot answer the network's echo", connection=self.name)
            return
        async with self._write_lock:
            if self.is_open and self._writer is not None:
                self._writer.write(payload)
                with contextlib.suppress(OSError):
                    await self._writer.drain()
        log.info("answered the network's echo", connection=self.name, stan=reply["11"])

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _now() -> float:
    return asyncio.get_running_loop().time()
