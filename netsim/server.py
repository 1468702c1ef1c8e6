"""netsim's server: the issuer host's end of the mutual-TLS network link.

Owns the listener, the connections and the message flow: each frame
(``codec.framing.BINARY2``) is decoded with ``codec.dialect.SPEC``, checked,
handed to the rules (:mod:`netsim.rules`) and the ledger (:mod:`netsim.ledger`),
and answered through the faults (:mod:`netsim.faults`). Every request runs in
its own task, so many can be in flight on one connection and answers go out in
completion order; a slow or failing request never holds up another.

Per message:

* a frame that does not decode: answered with the response MTI and 39=30 when
  the decoded prefix (``DecodeError.partial``) has a request MTI and fields 11
  and 41, dropped (and logged) otherwise; a bad length header closes the
  connection; an unknown MTI, or a message without 11 or 41, is dropped;
* 0800 (field 70): 001 sign-on, 301 echo (allowed before sign-on), 002
  sign-off; any other code 39=30. Financial requests on a connection that has
  not signed on (or has signed off) get 39=91 and are neither processed nor
  recorded;
* a missing mandatory field (``dialect.REQUIRED_FIELDS``) or a bad value: 39=30,
  not recorded;
* 0100: :func:`netsim.rules.authorize`, recorded, then answered (or not, for
  the lost-response card; late, for the slow card); a duplicate (terminal, STAN,
  field 7) gets 94 and records nothing;
* 0220, 0200, 0400, 0420, 0421: decided and recorded by the ledger in one
  transaction; answered with its code.

Responses carry the fields of ``codec.dialect``'s table, echoed from the
request, with field 7 set to the response's own transmission time.
Faults (latency, drops, resets) apply to every response, network management
included, after the request was processed. Nothing logged carries card data:
the PAN appears masked, if at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from types import TracebackType

import structlog

import codec
from codec import dialect
from codec.errors import SENSITIVE_FIELDS
from codec.framing import BINARY2, FramingError, IncompleteFrame, frame, read_frame
from gateway.pki import peer_common_name
from netsim import rules
from netsim.faults import Faults
from netsim.ledger import Ledger, LedgerClosedError
from netsim.rules import Delivery, Request

__all__ = ["RESPONSE_FIELDS", "NetSim"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger("netsim")

_FINANCIAL_RESPONSE = ("3", "4", "7", "11", "32", "37", "39", "41", "42", "49")

#: The fields of each response (``codec.dialect``'s table). 7 is the response's
#: own transmission time, 38 (approvals only) and 39 are netsim's; the others are
#: echoed from the request when it carries them.
RESPONSE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "0810": ("7", "11", "32", "39", "41", "70"),
    "0110": ("2", "3", "4", "7", "11", "12", "13", "32", "37", "38", "39", "41", "42", "49"),
    "0230": _FINANCIAL_RESPONSE,
    "0210": _FINANCIAL_RESPONSE,
    "0410": _FINANCIAL_RESPONSE,
    "0430": _FINANCIAL_RESPONSE,
}

_MAX_IN_FLIGHT = 4096        # per connection; reading pauses beyond it
_HANDSHAKE_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0


@dataclass(frozen=True)
class _Reply:
    doc: dict[str, str]
    delivery: Delivery = Delivery.NORMAL


class _Connection:
    """One accepted, TLS-established client connection: its sign-on state, and its
    outgoing frames, coalesced so that answers finishing together leave in one write."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.signed_on = False
        self.slots = asyncio.Semaphore(_MAX_IN_FLIGHT)
        self._out: list[bytes] = []

    @property
    def closing(self) -> bool:
        return self.writer.transport.is_closing()

    def abort(self) -> None:
        self._out.clear()
        self.writer.transport.abort()

    async def send(self, data: bytes) -> None:
        """Queue one frame; frames queued in the same loop iteration go out together."""
        if not self._out:
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)
        await self.writer.drain()

    def _flush(self) -> None:
        data, self._out = b"".join(self._out), []
        if data and not self.closing:
            self.writer.write(data)

    async def close(self) -> None:
        """Close gracefully (TLS close_notify), aborting if that does not finish soon."""
        if not self.closing:
            self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), _CLOSE_TIMEOUT)
        except asyncio.CancelledError:
            self.abort()
            raise
        except Exception:  # timeout, reset, TLS error: the connection is gone either way
            self.abort()


class NetSim:
    """The card-network simulator: an asyncio mutual-TLS server over ``ledger``.

    ``ssl_context`` is a server context that requires client certificates
    (``gateway.pki.server_context``). ``port=0`` binds a free port; read it from
    :attr:`port` after :meth:`start`. ``faults`` (default: none) and
    ``slow_delay`` (seconds before the slow test card is answered) may be
    changed while it runs. Use ``async with NetSim(...) as sim:`` or
    :meth:`start` / :meth:`stop`. The ledger stays open after :meth:`stop`;
    its owner closes it.
    """

    def __init__(self, ssl_context: ssl.SSLContext, ledger: Ledger, *,
                 host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
                 slow_delay: float = 3.0) -> None:
        self.ledger = ledger
        self.host = host
        self.faults = faults if faults is not None else Faults()
        self.slow_delay = slow_delay
        self._ssl = ssl_context
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._conns: set[_Connection] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._numbers = itertools.count(1)

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("netsim is already running")
        self._stopping = False
        self._server = await asyncio.start_server(
            self._serve, self.host, self._requested_port, ssl=self._ssl,
            ssl_handshake_timeout=_HANDSHAKE_TIMEOUT)
        self._port = int(self._server.sockets[0].getsockname()[1])
        log.info("netsim.started", host=self.host, port=self._port)

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`)."""
        if self._port is None:
            raise RuntimeError("netsim has not been started")
        return self._port

    @property
    def connections(self) -> int:
        """How many client connections are live."""
        return len(self._conns)

    async def reset_connections(self) -> int:
        """Abort every live connection now, like a network reset; return how many."""
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        log.info("netsim.connections_reset", count=len(conns))
        await asyncio.sleep(0)
        return len(conns)

    async def stop(self) -> None:
        """Stop listening, abort every connection, abandon requests still waiting to be
        answered, and wait until every change already handed to the ledger is committed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for conn in list(self._conns):
            conn.abort()
        requests = list(self._tasks)
        for task in requests:
            task.cancel()
        await asyncio.gather(*requests, return_exceptions=True)
        # The aborted connections' handlers now read EOF and end by themselves.
        handlers = list(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(handlers, timeout=_CLOSE_TIMEOUT * 2)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        with contextlib.suppress(LedgerClosedError):
            await asyncio.wrap_future(self.ledger.flush())
        await server.wait_closed()
        log.info("netsim.stopped", port=self._port)

    async def __aenter__(self) -> NetSim:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.stop()

    # ------------------------------------------------------------ connections

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if self._stopping or self.faults.refuse:
            log.info("connection.refused", stopping=self._stopping)
            writer.transport.abort()
            return
        conn = _Connection(next(self._numbers), writer)
        if task is not None:
            self._handlers.add(task)
        self._conns.add(conn)
        log.info("connection.opened", conn=conn.number,
                 peer=peer_common_name(writer.get_extra_info("ssl_object")))
        try:
            await self._read_loop(conn, reader)
            await conn.close()
        except asyncio.CancelledError:
            # Only stop() cancels a handler, and it must end quietly: asyncio 3.11's
            # stream callback logs an error for a cancelled client_connected_cb task.
            conn.abort()
        except Exception as exc:  # never let one connection take the server down
            log.error("connection.failed", conn=conn.number, error=type(exc).__name__,
                      where=_where(exc))
            conn.abort()
        finally:
            self._conns.discard(conn)
            if task is not None:
                self._handlers.discard(task)
            log.info("connection.closed", conn=conn.number)

    async def _read_loop(self, conn: _Connection, reader: asyncio.StreamReader) -> None:
        while True:
            try:
                payload = await read_frame(reader, BINARY2)
            except IncompleteFrame:
                log.info("connection.ended_mid_frame", conn=conn.number)
                return
            except FramingError as exc:
                log.warning("connection.bad_length_header", conn=conn.number, error=exc.msg)
                conn.abort()
                return
            except OSError as exc:  # reset, TLS alert, aborted
                log.info("connection.lost", conn=conn.number, error=type(exc).__name__)
                return
            if payload is None:
                return
            await conn.slots.acquire()
            task = asyncio.create_task(self._request(conn, payload))
            self._tasks.add(task)
            task.add_done_callback(partial(self._request_done, conn))

    def _request_done(self, conn: _Connection, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        conn.slots.release()

    # ------------------------------------------------------------ requests

    async def _request(self, conn: _Connection, payload: bytes) -> None:
        try:
            reply = await self._process(conn, payload)
            if reply is not None:
                await self._deliver(conn, reply)
        except Exception as exc:  # a failing request never hurts the others
            log.error("request.failed", conn=conn.number, error=type(exc).__name__,
                      where=_where(exc))

    async def _process(self, conn: _Connection, payload: bytes) -> _Reply | None:
        try:
            doc = codec.decode(payload, dialect.SPEC)
        except codec.DecodeError as exc:
            return self._undecodable(conn, exc)
        mti = doc.get("t", "")
        if mti not in dialect.REQUEST_MTIS:
            log.warning("message.unknown_mti", conn=conn.number,
                        mti=mti if mti.isdigit() else mti.encode().hex())
            return None
        if not doc.get("11") or not doc.get("41"):
            log.warning("message.unmatchable", conn=conn.number, mti=mti)
            return None
        if mti == "0800":
            return self._network(conn, doc)
        if not conn.signed_on:
            log.info("message.not_signed_on", conn=conn.number, mti=mti, stan=doc["11"])
            return _Reply(_answer(doc, rules.NOT_SIGNED_ON))
        missing = [f for f in dialect.REQUIRED_FIELDS[mti] if f not in doc]
        if missing:
            log.warning("message.missing_fields", conn=conn.number, mti=mti, stan=doc["11"],
                        fields=missing)
            return _Reply(_answer(doc, dialect.FORMAT_ERROR))
        try:
            request = Request.from_doc(doc)
        except ValueError:
            log.warning("message.bad_value", conn=conn.number, mti=mti, stan=doc["11"])
            return _Reply(_answer(doc, dialect.FORMAT_ERROR))
        if mti == "0100":
            return await self._authorize(conn, request, doc)
        outcome = await asyncio.wrap_future(self.ledger.submit(request))
        log.debug("message.processed", conn=conn.number, mti=mti, stan=request.stan,
                  terminal=request.terminal, code=outcome.code,
                  outcome=outcome.outcome)
        return _Reply(_answer(doc, outcome.code))

    def _undecodable(self, conn: _Connection, exc: codec.DecodeError) -> _Reply | None:
        known = {k: v for k, v in exc.partial.items() if k not in SENSITIVE_FIELDS}
        answerable = (known.get("t") in dialect.REQUEST_MTIS
                      and bool(known.get("11")) and bool(known.get("41")))
        log.warning("message.undecodable", conn=conn.number, field=exc.field, pos=exc.pos,
                    error=exc.msg, answered=answerable)
        return _Reply(_answer(known, dialect.FORMAT_ERROR)) if answerable else None

    def _network(self, conn: _Connection, doc: dict[str, str]) -> _Reply:
        if any(f not in doc for f in dialect.REQUIRED_FIELDS["0800"]):
            return _Reply(_answer(doc, dialect.FORMAT_ERROR))
        code = doc["70"]
        if code == dialect.SIGN_ON:
            conn.signed_on = True
        elif code == dialect.SIGN_OFF:
            conn.signed_on = False
        elif code != dialect.ECHO:
            return _Reply(_answer(doc, dialect.FORMAT_ERROR))
        log.info("network.management", conn=conn.number, code=code, signed_on=conn.signed_on)
        return _Reply(_answer(doc, dialect.APPROVED))

    async def _authorize(self, conn: _Connection, request: Request,
                         doc: dict[str, str]) -> _Reply:
        decision = rules.authorize(request, datetime.now(UTC).date())
        approval = rules.new_approval_code() if decision.approved else ""
        outcome = await asyncio.wrap_future(
            self.ledger.submit(request, code=decision.code, approval_code=approval))
        log.debug("authorization", conn=conn.number, stan=request.stan,
                  terminal=request.terminal, card=codec.mask_pan(request.pan),
                  code=outcome.code, delivery=str(decision.delivery))
        if outcome.duplicate:
            return _Reply(_answer(doc, outcome.code))
        return _Reply(_answer(doc, decision.code, approval), decision.delivery)

    async def _deliver(self, conn: _Connection, reply: _Reply) -> None:
        stan = reply.doc.get("11", "")
        if reply.delivery is Delivery.LOST:
            log.info("response.lost", conn=conn.number, stan=stan, reason="test card")
            return
        if reply.delivery is Delivery.SLOW:
            await asyncio.sleep(self.slow_delay)
        faults = self.faults
        delay = faults.delay()
        if delay > 0:
            await asyncio.sleep(delay)
        if faults.resets():
            log.info("fault.reset", conn=conn.number, stan=stan)
            conn.abort()
            return
        if faults.drops():
            log.info("fault.drop", conn=conn.number, stan=stan)
            return
        if conn.closing:
            log.info("response.undeliverable", conn=conn.number, stan=stan)
            return
        try:
            data = frame(codec.encode(reply.doc, dialect.SPEC), BINARY2)
        except (codec.EncodeError, FramingError) as exc:
            log.error("response.unencodable", conn=conn.number, stan=stan, error=exc.msg)
            return
        try:
            await conn.send(data)
        except OSError as exc:
            log.info("response.write_failed", conn=conn.number, stan=stan,
                     error=type(exc).__name__)


def _answer(request: Mapping[str, str], code: str, approval_code: str = "") -> dict[str, str]:
    """The response to ``request`` with response code ``code``."""
    mti = dialect.RESPONSE_MTI[request["t"]]
    doc = {"t": mti}
    for field in RESPONSE_FIELDS[mti]:
        if field == "7":
            doc["7"] = dialect.transmission_time()
        elif field == "39":
            doc["39"] = code
        elif field == "38":
            if approval_code:
                doc["38"] = approval_code
        elif field in request:
            doc[field] = request[field]
    return doc


def _where(exc: BaseException) -> str:
    """Where ``exc`` was raised (file:line), for logs that must not carry its message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
