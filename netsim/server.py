"""netsim's server: the issuer host's end of the mutual-TLS network link.

Owns the listener, the connections and the message flow: each frame
(``codec.framing.BINARY2``) is decoded with ``codec.dialect.SPEC``, checked,
handed to the rules (:mod:`netsim.rules`) and the ledger (:mod:`netsim.ledger`),
and answered through the faults (:mod:`netsim.faults`). Many requests can be in
flight on one connection and answers go out in completion order; a slow or
failing request never holds up another.

No task per request: each connection is a :class:`netsim.connection.Connection`
(an :class:`asyncio.Protocol`) and a request runs as callbacks. The requests of a
burst read from a connection are decoded and decided at once; their ledger
changes join the ledger's group commit (one transaction per loop iteration:
:meth:`netsim.ledger.Ledger.record`), and once it has committed each answer is
encoded and queued on its connection, whose queued answers leave in one write.
Only a delayed answer (the slow card, latency or jitter faults) waits, on a timer
of its own.

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
* 0220, 0200, 0400, 0420, 0421 and the repeats 0221, 0201, 0401: decided and
  recorded by the ledger in one transaction; answered with its code (a repeat
  of a message already processed: that message's code; one that does not
  match it: 30).

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
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import date
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

import codec
from codec import dialect
from codec.errors import SENSITIVE_FIELDS
from codec.framing import BINARY2, FramingError, frame
from gateway.pki import peer_common_name
from netsim import rules
from netsim.connection import Connection
from netsim.faults import Faults
from netsim.ledger import Ledger, LedgerClosedError, Outcome
from netsim.rules import AuthDecision, Delivery, Request

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
# Per request MTI: the response MTI and the fields it echoes.
_ECHOED = {mti: (answer, tuple(f for f in RESPONSE_FIELDS[answer] if f not in ("7", "38", "39")))
           for mti, answer in dialect.RESPONSE_MTI.items()}
_REQUIRED = {mti: frozenset(fields) for mti, fields in dialect.REQUIRED_FIELDS.items()}

_FRAMING = BINARY2
_UNIX_EPOCH = date(1970, 1, 1).toordinal()
_HANDSHAKE_TIMEOUT = 10.0
_CLOSE_TIMEOUT = 2.0  # stop() waits twice that for the aborted connections to end


class NetSim:
    """The card-network simulator: an asyncio mutual-TLS server over ``ledger``.

    ``ssl_context`` is a server context that requires client certificates
    (``gateway.pki.server_context``). ``port=0`` binds a free port; read it from
    :attr:`port` after :meth:`start`. ``faults`` (default: none) and
    ``slow_delay`` (seconds before the slow test card is answered) may be
    changed while it runs. ``on_frame("in" | "out", payload)``, if given, sees every
    frame received and sent (a recorder: ``netsim.certify.recorder``). Use
    ``async with NetSim(...) as sim:`` or
    :meth:`start` / :meth:`stop`. The ledger stays open after :meth:`stop`;
    its owner closes it.
    """

    def __init__(self, ssl_context: ssl.SSLContext, ledger: Ledger, *,
                 host: str = "127.0.0.1", port: int = 0, faults: Faults | None = None,
                 slow_delay: float = 3.0,
                 on_frame: Callable[[str, bytes], None] | None = None) -> None:
        self.ledger = ledger
        self.on_frame = on_frame
        self.host = host
        self.faults = faults if faults is not None else Faults()
        self.slow_delay = slow_delay
        self._ssl = ssl_context
        self._requested_port = port
        self._port: int | None = None
        self._server: asyncio.Server | None = None
        self._stopping = False
        self._conns: set[Connection] = set()
        self._all_closed: asyncio.Future[None] | None = None  # while stop() waits
        self._timers: set[asyncio.TimerHandle] = set()
        self._numbers = itertools.count(1)
        self._day, self._today, self._debug = -1, date.min, True  # see _received

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Bind and start accepting connections."""
        if self._server is not None:
            raise RuntimeError("netsim is already running")
        self._stopping = False
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            partial(Connection, self, log), self.host, self._requested_port, ssl=self._ssl,
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
        """Stop listening, abort every connection, abandon answers still waiting to be
        sent, and wait until every change already handed to the ledger is committed."""
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping = True
        server.close()
        for conn in list(self._conns):
            conn.abort()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._conns:  # their connection_lost comes in a loop iteration or two
            self._all_closed = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(self._all_closed, _CLOSE_TIMEOUT * 2)
            except TimeoutError:
                log.warning("netsim.connections_linger", count=len(self._conns))
            finally:
                self._all_closed = None
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

    def _opened(self, conn: Connection) -> None:
        assert conn.transport is not None
        if self._stopping or self.faults.refuse:
            log.info("connection.refused", stopping=self._stopping)
            conn.abort()
            return
        conn.number = next(self._numbers)
        self._conns.add(conn)
        log.info("connection.opened", conn=conn.number,
                 peer=peer_common_name(conn.transport.get_extra_info("ssl_object")))

    def _closed(self, conn: Connection) -> None:
        if conn not in self._conns:
            return  # refused
        self._conns.discard(conn)
        if not self._conns and self._all_closed is not None and not self._all_closed.done():
            self._all_closed.set_result(None)
        log.info("connection.closed", conn=conn.number)

    # ------------------------------------------------------------ requests

    def _received(self, conn: Connection, payloads: list[bytes]) -> None:
        """A burst of requests (frames' payloads) read from ``conn``."""
        if self._stopping:
            return  # abandoned, like every request not answered yet
        # Read once per burst, not per request: today's date (UTC), and whether
        # debug events are logged at all.
        day = int(time.time()) // 86400
        if day != self._day:
            self._day, self._today = day, date.fromordinal(_UNIX_EPOCH + day)
        is_enabled_for = getattr(log, "is_enabled_for", None)  # not every wrapper has it
        self._debug = is_enabled_for is None or bool(is_enabled_for(logging.DEBUG))
        on_frame = self.on_frame
        for payload in payloads:
            if on_frame is not None:
                on_frame("in", payload)
            try:
                self._process(conn, payload)
            except Exception as exc:  # a failing request never hurts the others
                _failed(conn, exc)
        # Scheduled after the ledger's commit of this burst (which its first change
        # scheduled), and before the connection reads its next burst: the answers
        # leave as soon as they are committed.
        conn.flush_soon()

    def _process(self, conn: Connection, payload: bytes) -> None:
        try:
            doc = codec.decode(payload, dialect.SPEC)
        except codec.DecodeError as exc:
            self._undecodable(conn, exc)
            return
        mti = doc.get("t", "")
        if mti not in _ECHOED:
            log.warning("message.unknown_mti", conn=conn.number,
                        mti=mti if mti.isdigit() else mti.encode().hex())
            return
        if not doc.get("11") or not doc.get("41"):
            log.warning("message.unmatchable", conn=conn.number, mti=mti)
            return
        if mti == "0800":
            self._network(conn, doc)
            return
        if not conn.signed_on:
            log.info("message.not_signed_on", conn=conn.number, mti=mti, stan=doc["11"])
            self._deliver(conn, _answer(doc, rules.NOT_SIGNED_ON))
            return
        if not doc.keys() >= _REQUIRED[mti]:
            missing = [f for f in dialect.REQUIRED_FIELDS[mti] if f not in doc]
            log.warning("message.missing_fields", conn=conn.number, mti=mti, stan=doc["11"],
                        fields=missing)
            self._deliver(conn, _answer(doc, dialect.FORMAT_ERROR))
            return
        try:
            request = Request.from_doc(doc)
        except ValueError:
            log.warning("message.bad_value", conn=conn.number, mti=mti, stan=doc["11"])
            self._deliver(conn, _answer(doc, dialect.FORMAT_ERROR))
            return
        if mti == "0100":
            decision = rules.authorize(request, self._today)
            approval = rules.new_approval_code() if decision.approved else ""
            self._record(conn, request, partial(self._authorized, conn, doc, request, decision,
                                                approval),
                         code=decision.code, approval_code=approval)
        else:
            self._record(conn, request, partial(self._processed, conn, doc, request))

    def _record(self, conn: Connection, request: Request,
                done: Callable[[Outcome | Exception], None], **kwargs: Any) -> None:
        """Hand the change to the ledger; ``done`` follows its commit."""
        conn.hold()
        try:
            self.ledger.record(request, done, **kwargs)
        except BaseException:
            conn.release()
            raise

    def _authorized(self, conn: Connection, doc: dict[str, str], request: Request,
                    decision: AuthDecision, approval: str, result: Outcome | Exception) -> None:
        conn.release()
        if isinstance(result, Exception):
            _failed(conn, result)
            return
        try:
            if self._debug:
                log.debug("authorization", conn=conn.number, stan=request.stan,
                          terminal=request.terminal, card=codec.mask_pan(request.pan),
                          code=result.code, delivery=decision.delivery.value)
            if result.duplicate:
                self._deliver(conn, _answer(doc, result.code))
            else:
                self._deliver(conn, _answer(doc, decision.code, approval), decision.delivery)
        except Exception as exc:
            _failed(conn, exc)

    def _processed(self, conn: Connection, doc: dict[str, str], request: Request,
                   result: Outcome | Exception) -> None:
        conn.release()
        if isinstance(result, Exception):
            _failed(conn, result)
            return
        try:
            if self._debug:
                log.debug("message.processed", conn=conn.number, mti=request.mti,
                          stan=request.stan, terminal=request.terminal, code=result.code,
                          outcome=result.outcome)
            if result.outcome == rules.REPEAT_MISMATCH:
                log.warning("message.repeat_mismatch", conn=conn.number, mti=request.mti,
                            stan=request.stan, terminal=request.terminal)
            self._deliver(conn, _answer(doc, result.code))
        except Exception as exc:
            _failed(conn, exc)

    def _undecodable(self, conn: Connection, exc: codec.DecodeError) -> None:
        known = {k: v for k, v in exc.partial.items() if k not in SENSITIVE_FIELDS}
        answerable = (known.get("t") in dialect.REQUEST_MTIS
                      and bool(known.get("11")) and bool(known.get("41")))
        log.warning("message.undecodable", conn=conn.number, field=exc.field, pos=exc.pos,
                    error=exc.msg, answered=answerable)
        if answerable:
            self._deliver(conn, _answer(known, dialect.FORMAT_ERROR))

    def _network(self, conn: Connection, doc: dict[str, str]) -> None:
        if not doc.keys() >= _REQUIRED["0800"]:
            self._deliver(conn, _answer(doc, dialect.FORMAT_ERROR))
            return
        code = doc["70"]
        if code == dialect.SIGN_ON:
            conn.signed_on = True
        elif code == dialect.SIGN_OFF:
            conn.signed_on = False
        elif code != dialect.ECHO:
            self._deliver(conn, _answer(doc, dialect.FORMAT_ERROR))
            return
        log.info("network.management", conn=conn.number, code=code, signed_on=conn.signed_on)
        self._deliver(conn, _answer(doc, dialect.APPROVED))

    # ------------------------------------------------------------ answers

    def _deliver(self, conn: Connection, answer: dict[str, str],
                 delivery: Delivery = Delivery.NORMAL) -> None:
        """Send ``answer`` as the test card and the faults say."""
        if delivery is Delivery.LOST:
            log.info("response.lost", conn=conn.number, stan=answer.get("11", ""),
                     reason="test card")
        elif delivery is Delivery.SLOW:
            self._later(self.slow_delay, conn, self._delay, answer)
        else:
            self._delay(conn, answer)

    def _delay(self, conn: Connection, answer: dict[str, str]) -> None:
        faults = self.faults
        delay = faults.delay() if faults.latency or faults.jitter else 0.0
        if delay > 0:
            self._later(delay, conn, self._send, answer)
        else:
            self._send(conn, answer)

    def _send(self, conn: Connection, answer: dict[str, str]) -> None:
        faults = self.faults
        if faults.reset_rate and faults.resets():
            log.info("fault.reset", conn=conn.number, stan=answer.get("11", ""))
            conn.abort()
        elif faults.drop_rate and faults.drops():
            log.info("fault.drop", conn=conn.number, stan=answer.get("11", ""))
        elif conn.closing:
            log.info("response.undeliverable", conn=conn.number, stan=answer.get("11", ""))
        else:
            try:
                data = _framed(codec.encode(answer, dialect.SPEC))
            except (codec.EncodeError, FramingError) as exc:
                log.error("response.unencodable", conn=conn.number,
                          stan=answer.get("11", ""), error=exc.msg)
                return
            if self.on_frame is not None:
                self.on_frame("out", data[2:])
            conn.send(data)

    def _later(self, delay: float, conn: Connection,
               then: Callable[[Connection, dict[str, str]], None],
               answer: dict[str, str]) -> None:
        """Call ``then(conn, answer)`` in ``delay`` seconds (unless :meth:`stop` comes
        first); the request keeps its connection's in-flight slot until then."""
        if self._stopping:
            return

        def fire() -> None:
            self._timers.discard(timer)
            conn.release()
            try:
                then(conn, answer)
            except Exception as exc:
                _failed(conn, exc)

        conn.hold()
        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)


def _answer(request: Mapping[str, str], code: str, approval_code: str = "") -> dict[str, str]:
    """The response to ``request`` with response code ``code``."""
    mti, echoed = _ECHOED[request["t"]]
    doc = {field: request[field] for field in echoed if field in request}
    doc["t"] = mti
    doc["7"] = dialect.transmission_time()
    doc["39"] = code
    if approval_code:
        doc["38"] = approval_code
    return doc


def _framed(payload: bytes) -> bytes:
    """``frame(payload, BINARY2)``, without its copy and checks when the size is fine."""
    if 0 < len(payload) <= _FRAMING.max_frame:
        return len(payload).to_bytes(2, "big") + payload
    return frame(payload, _FRAMING)  # raises FramingError


def _failed(conn: Connection, exc: BaseException) -> None:
    log.error("request.failed", conn=conn.number, error=type(exc).__name__, where=_where(exc))


def _where(exc: BaseException) -> str:
    """Where ``exc`` was raised (file:line), for logs that must not carry its message."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return f"{Path(tb.tb_frame.f_code.co_filename).name}:{tb.tb_lineno}" if tb else "?"
