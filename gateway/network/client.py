"""The gateway's network client: signed-on mutual-TLS connections to the card network.

:class:`NetworkClient` keeps ``connections`` connections (each a
:class:`~gateway.network.connection.Connection`) and sends complete requests
on them, round robin, each with a deadline.

Policy, in one place:

* **Ready** - a connection counts only after its sign-on (0800, field 70 =
  001) was answered with 0810 and field 39 = 00.
* **start()** waits until at least one connection is ready. If none is within
  ``timeout`` (default: the request deadline), it stops all connection attempts
  and raises :class:`NotSent`; the client is then as before ``start()``.
* **Requests** - a request needs a free slot (at most ``max_in_flight`` across the
  client) and a ready connection. No slot before the deadline, or no ready
  connection at all, raise :class:`NotSent` at once: nothing is queued without
  bound, nothing waits for a reconnect. Once written, no response before the
  deadline raises :class:`OutcomeUnknown` (never a decline).
* **Late responses** - a response that no waiting request claims (it came after
  its deadline, is a duplicate, or matches nothing) goes to ``on_late_response``
  (sync or async). 0810s are only logged.
* **Recording** - ``on_frame("out" | "in", payload)``, if given, sees every frame
  each connection sends or receives (``netsim.certify.recorder.Recorder.frame``).
* **Echo** - a connection that received nothing for ``echo_interval`` seconds
  sends an echo test (0800/301). No 0810 with 39 = 00 within the deadline: the
  connection is dropped and reconnected.
* **Reconnect** - a lost or failed connection is replaced after a sleep drawn
  uniformly from ``[0, min(backoff_max, backoff_initial * 2**(n-1))]`` (full
  jitter), ``n`` counting consecutive failures; a connection that stayed up at
  least ``backoff_max`` seconds resets ``n``. Every new connection signs on again.
* **close()** - new requests get NotSent; each ready connection signs off
  (0800/002) and waits briefly (``min(deadline, 1 s)``) for its 0810; then
  every connection closes, and requests still in flight get OutcomeUnknown.

Network management messages take their STAN from the same
:class:`~gateway.network.trace.TraceAllocator` as the caller's requests, so
they never collide with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import ssl
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

import structlog

from codec import dialect

from .connection import Connection, FrameObserver, check_request
from .errors import NetworkError, NotSent, OutcomeUnknown
from .trace import TraceAllocator

__all__ = ["LateResponseHandler", "NetworkClient"]

log = structlog.get_logger("gateway.network")

#: Receives every response that no waiting request claimed.
LateResponseHandler = Callable[[dict[str, str]], Awaitable[None] | None]

_SIGN_OFF_WAIT = 1.0  # upper bound on waiting for the 0810 to a sign-off
_LATE_HANDLER_WAIT = 1.0  # how long close() lets late-response handlers finish


class NetworkClient:
    """Signed-on connections to the card network; see the module docstring for policy."""

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        terminal_id: str,
        acquirer_id: str,
        trace: TraceAllocator,
        deadline: float = 5.0,
        max_in_flight: int = 64,
        connections: int = 1,
        echo_interval: float = 30.0,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        on_late_response: LateResponseHandler | None = None,
        server_hostname: str = "localhost",
        on_frame: FrameObserver | None = None,
    ) -> None:
        if trace.terminal_id != terminal_id:
            raise ValueError("the trace allocator belongs to another terminal")
        if not acquirer_id.isdigit() or len(acquirer_id) > 11:
            raise ValueError("acquirer_id (field 32) must be 1 to 11 digits")
        if deadline <= 0 or echo_interval <= 0 or backoff_initial <= 0:
            raise ValueError("deadline, echo_interval and backoff_initial must be positive")
        if backoff_max < backoff_initial:
            raise ValueError("backoff_max must be at least backoff_initial")
        if max_in_flight < 1 or connections < 1:
            raise ValueError("max_in_flight and connections must be at least 1")
        self.host = host
        self.port = port
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self._terminal_id = terminal_id
        self._acquirer_id = acquirer_id
        self._trace = trace
        self._deadline = deadline
        self._max_in_flight = max_in_flight
        self._n_connections = connections
        self._echo_interval = echo_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._on_late_response = on_late_response
        self._on_frame = on_frame  # sees every frame of every connection (a recorder)
        self._in_flight = 0  # slots taken, at most max_in_flight
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._ready_conns: list[Connection | None] = [None] * connections
        self._live: list[Connection] = []  # the signed-on connections, for round robin
        self._ready_event = asyncio.Event()
        self._supervisors: list[asyncio.Task[None]] = []
        self._late_tasks: set[asyncio.Future[Any]] = set()
        self._closing = False
        self._closed = False
        self._close_done: asyncio.Event | None = None
        self._rr = 0

    # -- state -------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """At least one connection is open and signed on."""
        return bool(self._open_conns())

    @property
    def in_flight(self) -> int:
        """Requests holding a slot: waiting to be sent or for their response."""
        return self._in_flight

    def _open_conns(self) -> list[Connection]:
        return [c for c in self._ready_conns if c is not None and c.is_open]

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, *, timeout: float | None = None) -> None:
        """Connect and sign on every connection; return once one is ready.

        Raises NotSent when no connection is signed on within ``timeout``
        seconds (default: the request deadline); all attempts are stopped then.
        """
        if self._closing:
            raise RuntimeError("the client is closed")
        if self._supervisors:
            raise RuntimeError("the client is already started")
        wait = self._deadline if timeout is None else timeout
        loop = asyncio.get_running_loop()
        self._supervisors = [loop.create_task(self._supervise(slot), name=f"network-{slot}")
                             for slot in range(self._n_connections)]
        try:
            async with asyncio.timeout(wait):
                await self._ready_event.wait()
        except TimeoutError:
            await self._stop_supervisors()
            log.error("network not reachable: no connection signed on", host=self.host,
                      port=self.port)
            raise NotSent("no connection to the network could be signed on") from None
        except BaseException:
            await self._stop_supervisors()
            raise
        log.info("network client ready", host=self.host, port=self.port,
                 connections=len(self._open_conns()))

    async def close(self) -> None:
        """Sign off each ready connection, then close all; in-flight requests -> OutcomeUnknown.

        Idempotent: a second call waits for the first to finish.
        """
        if self._close_done is not None:
            await self._close_done.wait()
            return
        self._close_done = asyncio.Event()
        self._closing = True
        try:
            ready = self._open_conns()
            if ready:
                await asyncio.gather(*(self._sign_off(conn) for conn in ready))
            await self._stop_supervisors()
            if self._late_tasks:
                _done, pending = await asyncio.wait(set(self._late_tasks),
                                                    timeout=_LATE_HANDLER_WAIT)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
        finally:
            self._closed = True
            self._close_done.set()
        log.info("network client closed", host=self.host, port=self.port)

    async def __aenter__(self) -> NetworkClient:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _stop_supervisors(self) -> None:
        tasks, self._supervisors = self._supervisors, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- requests ----------------------------------------------------------------------

    async def request(
        self, doc: Mapping[str, str], *, deadline: float | None = None
    ) -> dict[str, str]:
        """Send the complete request ``doc`` and return the network's response.

        ``doc`` carries its own trace (fields 7, 11, 41 ...). ``deadline`` (seconds,
        default the client's) bounds everything: the wait for a slot, the write
        and the wait for the response. Raises NotSent (not sent; safe to retry),
        OutcomeUnknown (may have reached the network), or ValueError for a doc
        that is not a request or whose (41, 11) is already in flight.
        """
        check_request(doc)
        budget = self._deadline if deadline is None else deadline
        if budget <= 0:
            raise ValueError("deadline must be positive")
        if self._closing or not self._supervisors:
            raise NotSent.for_request("the network client is not running", doc)
        end = asyncio.get_running_loop().time() + budget
        if self._in_flight < self._max_in_flight and not self._slot_waiters:
            self._in_flight += 1  # a free slot: no waiting, no timer
        else:
            await self._wait_for_slot(doc, end)
        try:
            conn = self._pick()
            if conn is None:
                raise NotSent.for_request("no signed-on connection to the network", doc)
            try:
                return await conn.exchange(doc, end)
            except OutcomeUnknown as exc:
                log.warning("network outcome unknown", connection=conn.name, mti=exc.mti,
                            terminal=exc.terminal_id, stan=exc.stan, reason=exc.reason)
                raise
        finally:
            self._release_slot()

    async def _wait_for_slot(self, doc: Mapping[str, str], end: float) -> None:
        """Wait (in order of arrival) for a slot until ``end``; NotSent if none comes.

        A released slot is handed to the first waiter directly (``in_flight``
        does not drop), so a waiter that got its slot owns it.
        """
        waiter = asyncio.get_running_loop().create_future()
        self._slot_waiters.append(waiter)
        try:
            async with asyncio.timeout_at(end):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()  # handed over as the wait ended: pass it on
            else:
                waiter.cancel()
                with contextlib.suppress(ValueError):
                    self._slot_waiters.remove(waiter)
            if not isinstance(exc, TimeoutError):
                raise
            refused = NotSent.for_request("too many requests in flight", doc)
            log.warning("request not sent: too many in flight", mti=refused.mti,
                        terminal=refused.terminal_id, stan=refused.stan)
            raise refused from None

    def _release_slot(self) -> None:
        waiters = self._slot_waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to this waiter
                return
        self._in_flight -= 1

    def _pick(self) -> Connection | None:
        """The next open, signed-on connection (round robin), or None."""
        if self._closing:
            return None
        conns = self._live
        for _ in range(len(conns)):
            self._rr = (self._rr + 1) % len(conns)
            conn = conns[self._rr]
            if conn.is_open:
                return conn
        return None

    # -- late responses ----------------------------------------------------------------

    def _route_unsolicited(self, doc: dict[str, str]) -> None:
        if doc.get("t") == "0810":
            return  # the answer to an echo or sign-on that gave up: nothing to reconcile
        handler = self._on_late_response
        if handler is None:
            log.warning("late response dropped: no handler", mti=doc.get("t"),
                        terminal=doc.get("41"), stan=doc.get("11"))
            return
        result = handler(doc)
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._late_tasks.add(task)
            task.add_done_callback(self._late_done)

    def _late_done(self, task: asyncio.Future[Any]) -> None:
        self._late_tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("late-response handler failed", error=type(exc).__name__)

    # -- connections -------------------------------------------------------------------

    async def _supervise(self, slot: int) -> None:
        """Keep connection ``slot`` open and signed on until the client closes."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            conn = Connection(self.host, self.port, self._ssl,
                              server_hostname=self._server_hostname, name=f"network-{slot}",
                              on_unsolicited=self._route_unsolicited,
                              on_frame=self._on_frame)
            signed_on = False
            try:
                signed_on = await self._sign_on(conn, failures + 1)
                if signed_on and not self._closing:
                    self._set_ready(slot, conn)
                    await self._keep_alive(conn)
            except Exception as exc:  # a bug here must not end the slot for good
                log.error("network connection failed unexpectedly", connection=conn.name,
                          error=type(exc).__name__)
            finally:
                self._set_ready(slot, None)
                await conn.close("client closed" if self._closing else "lost")
            if self._closing:
                break
            stable = signed_on and loop.time() - conn.opened_at >= self._backoff_max
            failures = 1 if stable else failures + 1
            await asyncio.sleep(self._backoff(failures))

    async def _sign_on(self, conn: Connection, attempt: int) -> bool:
        """Open ``conn`` and sign on; False (logged) when either fails."""
        try:
            await conn.open(self._deadline)
            await self._management(conn, dialect.SIGN_ON)
        except Exception as exc:  # NetworkError, or the STAN store failing
            log.warning("network connection attempt failed", connection=conn.name,
                        error=type(exc).__name__, reason=_reason(exc), attempt=attempt)
            return False
        log.info("network connection signed on", connection=conn.name)
        return True

    def _set_ready(self, slot: int, conn: Connection | None) -> None:
        self._ready_conns[slot] = conn
        self._live = [c for c in self._ready_conns if c is not None]
        if any(c is not None for c in self._ready_conns):
            self._ready_event.set()
        else:
            self._ready_event.clear()

    def _backoff(self, failures: int) -> float:
        """Full jitter: uniform in [0, min(max, initial * 2**(failures - 1))]."""
        cap = min(self._backoff_max, self._backoff_initial * 2 ** min(failures - 1, 32))
        return random.uniform(0.0, cap)

    async def _keep_alive(self, conn: Connection) -> None:
        """Echo when ``conn`` has been idle; return when it is lost or an echo fails."""
        loop = asyncio.get_running_loop()
        while conn.is_open:
            idle = loop.time() - conn.last_received
            if idle < self._echo_interval:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._echo_interval - idle):
                        await conn.wait_closed()
                continue
            try:
                await self._management(conn, dialect.ECHO)
            except Exception as exc:
                log.warning("echo failed: dropping the connection", connection=conn.name,
                            error=type(exc).__name__, reason=_reason(exc))
                await conn.close("echo failed")
                return

    async def _sign_off(self, conn: Connection) -> None:
        try:
            await self._management(conn, dialect.SIGN_OFF,
                                   wait=min(self._deadline, _SIGN_OFF_WAIT))
        except Exception as exc:
            log.info("sign-off not acknowledged", connection=conn.name,
                     error=type(exc).__name__)

    async def _management(self, conn: Connection, code: str, *,
                          wait: float | None = None) -> dict[str, str]:
        """Send an 0800 with field 70 = ``code``; return the 0810 if its 39 is 00."""
        trace = await self._trace.allocate_async()
        doc = {"t": "0800", "7": trace.transmitted, "11": trace.stan, "32": self._acquirer_id,
               "41": self._terminal_id, "70": code}
        end = asyncio.get_running_loop().time() + (self._deadline if wait is None else wait)
        reply = await conn.exchange(doc, end)
        if reply.get("39") != dialect.APPROVED:
            raise NotSent(f"network management {code} refused with code {reply.get('39')}",
                          mti="0800", terminal_id=self._terminal_id, stan=trace.stan)
        return reply


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, NetworkError) else type(exc).__name__
