"""netsim in replay mode: plays the network from a script and checks what it receives.

:class:`ReplayHost` is a mutual-TLS server (the same framing and connection handling
as :class:`netsim.NetSim`, through :class:`netsim.connection.Connection`). The runner
(or ``paygate netsim replay``) hands it a script with :meth:`ReplayHost.play`: the
exchanges one case (or one recording) expects, in order. Each message received is
matched to the script's next exchange: its MTI and every field are checked
(:mod:`netsim.certify.matchers`; with ``strict``, a field the expectation does not
name is a mismatch too), and the scripted reply is sent - built from the request
like netsim's answers, then changed as the script says (fields, MTI, raw bytes, a
truncated payload, a delay, or nothing). Network management the script does not
expect (sign-on after a reconnect, echo tests, sign-off) is answered 39 = 00 and not
reported; any other message beyond the script is a mismatch, answered 39 = 00.
Nothing it logs or reports carries card data in clear.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial

import structlog

import codec
from codec import dialect
from netsim.certify.matchers import Mismatch, Seen, shown
from netsim.certify.script import Exchange, Reply
from netsim.connection import Connection
from netsim.rules import new_approval_code
from netsim.server import RESPONSE_FIELDS

__all__ = ["ReplayHost", "Script", "build_reply"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger("netsim.replay")

_NOT_FIELDS = frozenset({"t", "p", "1"})   # the MTI and the bitmaps
_ECHOED = {mti: (answer, tuple(f for f in RESPONSE_FIELDS[answer] if f not in ("7", "38", "39")))
           for mti, answer in dialect.RESPONSE_MTI.items()}


def build_reply(request: Mapping[str, str], reply: Reply) -> dict[str, str]:
    """The response to ``request`` as netsim builds it, changed as ``reply`` says."""
    mti, echoed = _ECHOED.get(request.get("t", ""), ("0810", ("11", "41")))
    doc = {f: request[f] for f in echoed if f in request}
    doc["t"] = reply.mti or mti
    doc["7"] = dialect.transmission_time()
    code = reply.fields.get("39") or dialect.APPROVED
    doc["39"] = code
    if mti == "0110" and code in (dialect.APPROVED, dialect.PARTIAL_APPROVAL):
        doc["38"] = new_approval_code()
    for key, value in reply.fields.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


@dataclass
class Script:
    """One case's (or one recording's) exchanges and what happened to them."""

    name: str
    exchanges: tuple[Exchange, ...]
    requests: list[dict[str, str]] = field(default_factory=list)
    replies: list[dict[str, str] | None] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    pending: int = 0         # replies waiting for their delay
    extra: int = 0           # messages received beyond the script
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _update(self) -> None:
        if len(self.requests) >= len(self.exchanges) and self.pending == 0:
            self.done.set()

    def missing(self) -> list[Mismatch]:
        """A mismatch for every expected exchange that never came."""
        return [Mismatch(self.name, i, ex.mti, "message", f"a {ex.mti}", "nothing received")
                for i, ex in enumerate(self.exchanges) if i >= len(self.requests)]


class ReplayHost:
    """The replay-mode network: see the module docstring."""

    def __init__(self, ssl_context: ssl.SSLContext, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.host = host
        self._ssl = ssl_context
        self._requested_port = port
        self._server: asyncio.Server | None = None
        self._conns: set[Connection] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        self._script = Script("(no script)", ())
        self.port = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            partial(Connection, self, log), self.host, self._requested_port, ssl=self._ssl)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        server, self._server = self._server, None
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for conn in list(self._conns):
            conn.abort()
        if server is not None:
            server.close()
            await server.wait_closed()

    @property
    def script(self) -> Script:
        return self._script

    def play(self, name: str, exchanges: tuple[Exchange, ...]) -> Script:
        """Expect ``exchanges`` from now on (the previous script is left as it is)."""
        self._script = Script(name, exchanges)
        self._script._update()
        return self._script

    # ------------------------------------------------------------ connection owner

    def _opened(self, conn: Connection) -> None:
        self._conns.add(conn)

    def _closed(self, conn: Connection) -> None:
        self._conns.discard(conn)

    def _received(self, conn: Connection, payloads: list[bytes]) -> None:
        for payload in payloads:
            try:
                self._process(conn, payload)
            except Exception as exc:  # a bad script must not end the connection
                log.error("replay.failed", error=type(exc).__name__)
        conn.flush_soon()

    # ------------------------------------------------------------ matching

    def _process(self, conn: Connection, payload: bytes) -> None:
        script = self._script
        try:
            doc = codec.decode(payload, dialect.SPEC)
        except codec.DecodeError as exc:
            script.mismatches.append(Mismatch(script.name, len(script.requests), "?", "message",
                                              "a decodable message",
                                              f"undecodable at field {exc.field}: {exc.msg}"))
            return
        mti = doc.get("t", "")
        index = len(script.requests)
        nxt = script.exchanges[index] if index < len(script.exchanges) else None
        if mti == "0800" and (nxt is None or nxt.mti != "0800"):
            self._management(conn, doc)
            return
        if nxt is None:
            script.extra += 1
            script.mismatches.append(Mismatch(script.name, index, mti, "message",
                                              "no further message", f"a {mti}"))
            self._send(conn, build_reply(doc, Reply()))
            return
        script.requests.append(doc)
        script.replies.append(None)
        script.mismatches.extend(_compare(script, index, nxt, doc))
        self._reply(conn, script, index, doc, nxt.reply)
        script._update()

    def _management(self, conn: Connection, doc: dict[str, str]) -> None:
        code = doc.get("70")
        if code == dialect.SIGN_ON:
            conn.signed_on = True
        elif code == dialect.SIGN_OFF:
            conn.signed_on = False
        self._send(conn, build_reply(doc, Reply()))

    def _reply(self, conn: Connection, script: Script, index: int, request: dict[str, str],
               reply: Reply) -> None:
        if reply.none:
            return
        if reply.raw is not None:
            payload = reply.raw
        else:
            doc = build_reply(request, reply)
            try:
                payload = codec.encode(doc, dialect.SPEC)
            except codec.EncodeError as exc:
                script.mismatches.append(Mismatch(script.name, index, request.get("t", ""),
                                                  "reply", "an encodable reply",
                                                  f"cannot encode the scripted reply: {exc.msg}"))
                return
            if request.get("t") == "0800" and doc.get("39") == dialect.APPROVED:
                conn.signed_on = request.get("70") != dialect.SIGN_OFF
            script.replies[index] = doc
        if reply.truncate is not None:
            payload = payload[:reply.truncate]
        if reply.delay <= 0:
            self._write(conn, payload)
            return
        script.pending += 1

        def fire() -> None:
            self._timers.discard(timer)
            script.pending -= 1
            self._write(conn, payload)
            script._update()

        timer = asyncio.get_running_loop().call_later(reply.delay, fire)
        self._timers.add(timer)

    def _send(self, conn: Connection, doc: dict[str, str]) -> None:
        self._write(conn, codec.encode(doc, dialect.SPEC))

    def _write(self, conn: Connection, payload: bytes) -> None:
        if conn.closing:
            return
        conn.send(len(payload).to_bytes(2, "big") + payload)


def _compare(script: Script, index: int, exchange: Exchange, doc: Mapping[str, str]
             ) -> list[Mismatch]:
    """The mismatches of the request ``doc`` against ``exchange`` (fields in order)."""
    mti = doc.get("t", "")
    if mti != exchange.mti:
        return [Mismatch(script.name, index, mti, "mti", repr(exchange.mti), repr(mti))]
    seen = Seen(script.requests, script.replies)
    out = []
    names = set(exchange.fields)
    if exchange.strict:
        names |= {k for k in doc if k not in _NOT_FIELDS}
    for name in sorted(names, key=int):
        actual = doc.get(name)
        matcher = exchange.fields.get(name)
        if matcher is None:
            expected = "(absent: the case does not name it)" if actual is not None else None
        else:
            expected = matcher.check(name, actual, seen)
        if expected is not None:
            out.append(Mismatch(script.name, index, mti, name, expected, shown(name, actual)))
    return out
