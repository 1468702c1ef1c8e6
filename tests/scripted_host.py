"""A scripted card-network peer for the network client's tests (a helper, not a test).

:class:`ScriptedHost` is a real asyncio mutual-TLS server speaking the network
dialect (2-byte length frames, ``codec.dialect.SPEC``). It records every
message it receives and answers according to two scripts: ``management`` for
0800s (default: approve with 0810, 39 = 00) and ``script`` for everything else
(default: approve). A script maps a request to a list of actions:

* :class:`Answer` - respond (after ``delay`` seconds), with extra or overriding fields;
* :class:`Raw` - write raw bytes (``frame=True`` puts a length header in front);
* :class:`Reset` - abort the TCP connection (after ``delay``).

No action means the request is never answered. Answering twice is two Answers;
out of order is different delays. Each action runs in its own task, so delays
never hold up reading.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import codec
from codec import dialect, examples
from codec.framing import frame, read_frame
from gateway.network import NetworkClient, Trace, TraceAllocator
from gateway.pki import Credentials, client_context, server_context


@dataclass(frozen=True)
class Answer:
    """Send the response to the request after ``delay`` seconds; ``fields`` override."""

    fields: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Raw:
    """Write ``data`` as is (``frame=True``: as the payload of one length-framed frame)."""

    data: bytes
    frame: bool = True
    delay: float = 0.0


@dataclass(frozen=True)
class Reset:
    """Abort the connection (no TLS close, no FIN) after ``delay`` seconds."""

    delay: float = 0.0


Action = Answer | Raw | Reset
Script = Callable[[dict[str, str]], Sequence[Action]]

# Request fields a response repeats (the dialect's response columns).
_ECHOED = ("2", "3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49", "70")


def response_to(request: Mapping[str, str],
                overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """The approving response to ``request``: its MTI mapped, its fields repeated, 39 = 00."""
    doc = {"t": dialect.RESPONSE_MTI[request["t"]], "39": dialect.APPROVED}
    doc.update({k: request[k] for k in _ECHOED if k in request})
    doc.update(overrides or {})
    return doc


def approve(_request: dict[str, str]) -> Sequence[Action]:
    """The default script: answer at once with approval."""
    return [Answer()]


def silent(_request: dict[str, str]) -> Sequence[Action]:
    """A script that never answers."""
    return []


@dataclass
class Received:
    """One message the host received, and on which connection (numbered from 1)."""

    connection: int
    doc: dict[str, str]


class ScriptedHost:
    """The scripted network peer; ``async with ScriptedHost(ctx) as host: host.port``."""

    def __init__(self, ssl_context: ssl.SSLContext, *, script: Script = approve,
                 management: Script = approve) -> None:
        self._ssl = ssl_context
        self.script = script
        self.management = management
        self.received: list[Received] = []
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: dict[int, asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> int:
        """Listen on 127.0.0.1 (a free port); return the port."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ssl)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening, abort every connection and cancel pending actions."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers.values()):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> ScriptedHost:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # -- what the tests look at --------------------------------------------------------

    def messages(self, mti: str | None = None, code: str | None = None,
                 connection: int | None = None) -> list[dict[str, str]]:
        """Received messages, filtered by MTI, field 70 and connection number."""
        return [r.doc for r in self.received
                if (mti is None or r.doc.get("t") == mti)
                and (code is None or r.doc.get("70") == code)
                and (connection is None or r.connection == connection)]

    def first_on(self, connection: int) -> dict[str, str]:
        """The first message received on connection ``connection``."""
        return next(r.doc for r in self.received if r.connection == connection)

    async def send(self, doc: dict[str, str], connection: int | None = None) -> None:
        """Send ``doc`` on connection ``connection`` (default: the newest one)."""
        number = max(self._writers) if connection is None else connection
        writer = self._writers[number]
        writer.write(frame(codec.encode(doc, dialect.SPEC)))
        await writer.drain()

    async def send_raw(self, data: bytes, connection: int | None = None) -> None:
        """Write ``data`` as is on connection ``connection`` (default: the newest one)."""
        writer = self._writers[max(self._writers) if connection is None else connection]
        writer.write(data)
        await writer.drain()

    def reset_all(self) -> None:
        """Abort every open connection."""
        for writer in list(self._writers.values()):
            writer.transport.abort()

    # -- serving -----------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self._writers[number] = writer
        try:
            while (payload := await read_frame(reader)) is not None:
                doc = codec.decode(payload, dialect.SPEC)
                self.received.append(Received(number, doc))
                if doc.get("t") not in dialect.REQUEST_MTIS:
                    continue  # a response (to the host's own echo): recorded only
                script = self.management if doc.get("t") == "0800" else self.script
                for action in script(doc):
                    self._spawn(self._act(writer, doc, action))
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass  # reset, framing or decode error: the connection ends
        finally:
            self._writers.pop(number, None)
            writer.transport.abort()

    async def _act(self, writer: asyncio.StreamWriter, request: dict[str, str],
                   action: Action) -> None:
        if action.delay:
            await asyncio.sleep(action.delay)
        if writer.transport.is_closing():
            return
        if isinstance(action, Reset):
            writer.transport.abort()
            return
        if isinstance(action, Raw):
            data = frame(action.data) if action.frame else action.data
        else:
            data = frame(codec.encode(response_to(request, action.fields), dialect.SPEC))
        writer.write(data)
        with contextlib.suppress(OSError):
            await writer.drain()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0,
                     what: str = "condition") -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not predicate():
        if loop.time() >= end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


# -- the client side -------------------------------------------------------------------

TERMINAL = "TERM0001"
ACQUIRER = "440001"


class MemoryStanStore:
    """A StanStore kept in memory (no fsync), for tests that do not test persistence."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def next_stan(self, terminal_id: str, day: date) -> int:
        """Advance and return the terminal's counter."""
        stan = self.last.get(terminal_id, 0) % 999_999 + 1
        self.last[terminal_id] = stan
        return stan


def make_client(host: ScriptedHost, ssl_context: ssl.SSLContext, **options: Any) -> NetworkClient:
    """A client for ``host`` on terminal TERM0001 with an in-memory STAN store."""
    trace = options.pop("trace", None) or new_trace()
    return NetworkClient("127.0.0.1", host.port, ssl_context, terminal_id=TERMINAL,
                         acquirer_id=ACQUIRER, trace=trace, **options)


def auth_request(trace: Trace, amount: int = 1999) -> dict[str, str]:
    """The sample authorization (0100) carrying ``trace`` and ``amount`` (minor units)."""
    doc = examples.auth_request()
    doc.update(trace.fields())
    doc["4"] = f"{amount:012d}"
    return doc


def new_trace() -> TraceAllocator:
    """A trace allocator for TERM0001 on a fresh in-memory STAN store."""
    return TraceAllocator(MemoryStanStore(), TERMINAL)


def contexts(netsim: Credentials, gateway: Credentials) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """The host's server context and the client's context, from the test PKI."""
    return server_context(netsim), client_context(gateway)
