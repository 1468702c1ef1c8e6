"""netsim's ledger: the truth of what the network answered and what it holds.

Owns the SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=NORMAL``: a
committed change survives the netsim process being killed, which is what a
simulator's truth needs; only an operating-system crash could lose the last
commits) with two tables (schema and changes: :mod:`netsim.store`), and the typed
records read from it:

* ``authorizations``: one row per 0100 netsim answered (approved or declined),
  with its current state: :class:`Authorization` (status, captured, refunded
  and released amounts);
* ``entries``: the journal, one row per financial message netsim processed
  (authorization, capture, refund, reversal: 0400 voids, 0420 advices and
  every 0421 repeat, each with its own STAN; and every 0221, 0201 and 0401
  repeat, under the STAN of the message it repeats), with the response code,
  what it did (``outcome``), the amount it moved (``effect``) and whether it
  changed anything: :class:`Entry`. A repeat of a message already processed is
  journalled with that message's code, outcome ``repeat`` and ``changed``
  False; one whose original was never processed is decided as that original
  and journalled with what it did.

The card is stored only as BIN (first 6) and last 4; the full PAN, track data
and CVC never reach the file.

One writer connection applies every state change (check + update + journal row)
all-or-nothing. In an event loop, changes are group-committed without leaving the
loop: those recorded during one loop iteration are applied in one transaction by a
callback at the start of the next (one commit for all); if one of them fails, that
transaction is rolled back and each change is applied in a transaction of its own,
so a failing change fails alone. A change is reported (callback, future) only
after its commit, so netsim answers nothing it has not made durable. Outside an
event loop a change is applied at once. The WAL is checkpointed by a thread of
its own (:class:`netsim.store.Writer`): commits seldom wait for a sync. Readers
(:meth:`Ledger.authorizations`, :meth:`Ledger.entries`, ...) open their own
connection per call, so they are safe from any thread or process while netsim
runs.

Amounts are integer minor units; days are UTC dates; timestamps UTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, date, datetime
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import structlog

from netsim import rules
from netsim.rules import EntryKind, Request, Status
from netsim.store import SCHEMA, SCHEMA_VERSION, Change, Outcome, Writer, connect

__all__ = ["Authorization", "Entry", "Ledger", "LedgerClosedError", "OnCommit", "Outcome"]

log: structlog.typing.FilteringBoundLogger = structlog.get_logger("netsim.ledger")

#: Called with a change's outcome once it is committed, or with the exception that
#: kept it from being applied.
OnCommit = Callable[[Outcome | Exception], None]


def _masked(card_bin: str, card_last4: str) -> str:
    return f"{card_bin}******{card_last4}" if card_bin else ""


@dataclass(frozen=True)
class Authorization:
    """An authorization (0100) netsim answered, and what has become of it."""

    id: int
    day: date
    created_at: datetime
    updated_at: datetime
    mti: str
    processing_code: str
    stan: str
    transmitted: str          # field 7 of the 0100
    rrn: str
    terminal: str
    merchant: str
    acquirer: str
    amount: int               # authorized (requested) amount, minor units
    currency: str
    card_bin: str
    card_last4: str
    approval_code: str        # empty when declined
    response_code: str
    status: Status
    captured: int
    refunded: int
    reversed: int             # released by a void or reversal advice

    @property
    def held(self) -> int:
        """What is still on hold: authorized minus captured minus released."""
        return self.amount - self.captured - self.reversed if self.status is Status.APPROVED else 0

    @property
    def masked_card(self) -> str:
        return _masked(self.card_bin, self.card_last4)


@dataclass(frozen=True)
class Entry:
    """One financial message netsim processed: a line of the journal."""

    id: int
    kind: EntryKind
    day: date
    created_at: datetime
    mti: str
    processing_code: str
    stan: str
    transmitted: str
    rrn: str
    terminal: str
    merchant: str
    acquirer: str
    amount: int               # field 4 of the message
    currency: str
    card_bin: str
    card_last4: str
    approval_code: str        # of the authorization it belongs to; empty when none
    response_code: str
    outcome: str              # approved, declined, captured, reversed, repeat, ...
    effect: int               # minor units authorized, captured, refunded or released
    changed: bool             # whether the network's state changed
    authorization_id: int | None
    original_stan: str        # from field 90; empty for an authorization
    original_transmitted: str

    @property
    def masked_card(self) -> str:
        return _masked(self.card_bin, self.card_last4)


class LedgerClosedError(RuntimeError):
    """A change was submitted to a closed ledger."""


class _Job(NamedTuple):
    change: Change | None  # None: nothing to change (a flush)
    done: Callable[[Any], None]


class Ledger:
    """netsim's ledger in the SQLite file at ``path`` (created unless ``create=False``).

    ``clock`` returns the current time (timezone-aware; default: now, UTC); it
    sets each record's day and timestamps (one reading per transaction). The write
    connection (and its checkpoint thread) is opened on first use and closed by
    :meth:`close`, or when the ledger is garbage-collected.
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], datetime] | None = None, create: bool = True) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no ledger at {self.path}")
        with contextlib.closing(connect(self.path)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path} is not a netsim ledger (schema version {version})")
        self._lock = threading.Lock()  # guards the write connection and the queue
        self._writer: Writer | None = None  # opened on first use
        self._finalizer: weakref.finalize[[], Ledger] | None = None
        self._queue: list[_Job] = []  # waiting for the commit scheduled on _queue_loop
        self._queue_loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # ------------------------------------------------------------ writes

    def record(self, request: Request, done: OnCommit, *, code: str | None = None,
               approval_code: str = "") -> None:
        """Apply the state change ``request`` asks for; call ``done`` with its
        :class:`Outcome` once committed (or with the exception that failed it).

        A 0100 needs the issuer's response ``code`` (and ``approval_code`` when
        approved): it is recorded as answered, unless the same terminal, STAN and
        field 7 were seen before (then nothing is recorded and the code is 94).
        Other MTIs are decided in the transaction, against the authorization they
        name, by :func:`netsim.rules.decide`; a capture, refund or void already
        processed is a duplicate (94, nothing recorded), and a repeat (0221, 0201,
        0401) of one already processed gets its code and changes nothing (30 and
        nothing recorded if it does not carry that message's fields).

        In a running event loop the change joins the loop's group commit, and
        ``done`` is called in the loop; otherwise it is applied at once and ``done``
        is called before this returns.
        """
        if request.mti == "0100":
            if code is None:
                raise ValueError("an authorization needs the issuer's response code")
            change = Change(request, code, approval_code if code == rules.APPROVED else "")
        else:
            rules.kind_of(request.mti)  # KeyError for a non-financial MTI
            change = Change(request)
        self._enqueue(_Job(change, done))

    def submit(self, request: Request, *, code: str | None = None,
               approval_code: str = "") -> Future[Outcome]:
        """:meth:`record`, with a future that resolves after the commit."""
        future: Future[Outcome] = Future()
        self.record(request, partial(_resolve, future), code=code, approval_code=approval_code)
        return future

    def apply(self, request: Request, *, code: str | None = None,
              approval_code: str = "") -> Outcome:
        """Apply the change at once (after the changes queued before it in this
        thread's event loop, if any) and return its outcome."""
        future = self.submit(request, code=code, approval_code=approval_code)
        if not future.done():  # queued in this thread's event loop: commit it now
            self._commit_queue()
        return future.result()

    def flush(self) -> Future[None]:
        """A future that resolves once every change recorded before it (in this
        thread) is committed."""
        future: Future[None] = Future()
        self._enqueue(_Job(None, partial(_resolve, future)))
        return future

    def close(self) -> None:
        """Commit the queued changes and close the write connection (idempotent)."""
        with self._lock:
            self._closed = True
            loop = self._queue_loop
        if loop is not None and loop.is_running() and not _running_in(loop):
            committed = threading.Event()
            loop.call_soon_threadsafe(_then, self._commit_queue, committed.set)
            committed.wait()
        else:
            self._commit_queue()
        with self._lock:
            finalizer, self._finalizer, self._writer = self._finalizer, None, None
        if finalizer is not None:
            finalizer()  # closes the writer

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _enqueue(self, job: _Job) -> None:
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            if self._closed:
                raise LedgerClosedError("the ledger is closed")
            if loop is not None and self._queue_loop in (None, loop):
                if not self._queue:
                    self._queue_loop = loop
                    loop.call_soon(self._commit_queue)
                self._queue.append(job)
                return
            # No event loop in this thread (or another loop's batch is pending).
            results = self._run([job])
        job.done(results[0])

    def _commit_queue(self) -> None:
        """Commit the queued changes in one transaction, then report each."""
        with self._lock:
            jobs, self._queue, self._queue_loop = self._queue, [], None
            results = self._run(jobs) if jobs else []
        for job, result in zip(jobs, results, strict=True):
            try:
                job.done(result)
            except Exception as exc:  # a failing callback must not starve the others
                log.error("ledger.callback_failed", error=type(exc).__name__)

    def _run(self, jobs: list[_Job]) -> list[Outcome | Exception | None]:
        """Apply ``jobs`` in one transaction (the lock held). If one fails, roll back
        and apply each in a transaction of its own, so that it fails alone."""
        changes = [job.change for job in jobs]
        if all(change is None for change in changes):
            return [None] * len(changes)
        try:
            return list(self._transaction(changes))
        except Exception as exc:
            if len(changes) == 1:
                return [exc]
        results: list[Outcome | Exception | None] = []
        for change in changes:
            try:
                results.extend(self._transaction([change]))
            except Exception as exc:
                results.append(exc)
        return results

    def _transaction(self, changes: list[Change | None]) -> list[Outcome | None]:
        if self._writer is None:
            self._writer = Writer(self.path)
            self._finalizer = weakref.finalize(self, self._writer.close)
        return self._writer.apply(changes, self._now())

    def _now(self) -> datetime:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError("the ledger clock must return timezone-aware times")
        return now.astimezone(UTC)

    # ------------------------------------------------------------ reads

    def authorizations(self, *, day: date | None = None) -> list[Authorization]:
        """Every authorization netsim answered (of ``day``, if given), oldest first."""
        sql, args = "SELECT * FROM authorizations", []
        if day is not None:
            sql, args = sql + " WHERE day = ?", [day.isoformat()]
        with self._reader() as conn:
            return [_authorization(row) for row in conn.execute(sql + " ORDER BY id", args)]

    def find_authorization(self, terminal: str, stan: str) -> Authorization | None:
        """The latest authorization from ``terminal`` with STAN ``stan``, or None."""
        with self._reader() as conn:
            row = conn.execute("SELECT * FROM authorizations WHERE terminal = ? AND stan = ? "
                               "ORDER BY id DESC LIMIT 1", (terminal, stan)).fetchone()
        return None if row is None else _authorization(row)

    def entries(self, kind: EntryKind | str | None = None,
                day: date | None = None) -> list[Entry]:
        """The journal (of one ``kind`` and ``day``, if given), oldest first."""
        where, args = [], []
        if kind is not None:
            where.append("kind = ?")
            args.append(str(EntryKind(kind)))
        if day is not None:
            where.append("day = ?")
            args.append(day.isoformat())
        sql = "SELECT * FROM entries" + (" WHERE " + " AND ".join(where) if where else "")
        with self._reader() as conn:
            return [_entry(row) for row in conn.execute(sql + " ORDER BY id", args)]

    def reversals_of(self, terminal: str, stan: str) -> list[Entry]:
        """Every void, reversal advice and repeat naming the authorization from
        ``terminal`` with STAN ``stan`` (field 90), oldest first, whatever they did."""
        with self._reader() as conn:
            rows = conn.execute("SELECT * FROM entries WHERE kind = 'reversal' AND terminal = ? "
                                "AND original_stan = ? ORDER BY id", (terminal, stan))
            return [_entry(row) for row in rows]

    @contextlib.contextmanager
    def _reader(self) -> Iterator[sqlite3.Connection]:
        conn = connect(self.path)
        try:
            conn.execute("PRAGMA query_only=ON")
            yield conn
        finally:
            conn.close()


def _resolve(future: Future[Any], result: object) -> None:
    if isinstance(result, Exception):
        future.set_exception(result)
    else:
        future.set_result(result)


def _running_in(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def _then(first: Callable[[], None], second: Callable[[], None]) -> None:
    try:
        first()
    finally:
        second()


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "day": date.fromisoformat, "created_at": datetime.fromisoformat,
    "updated_at": datetime.fromisoformat, "status": Status, "kind": EntryKind, "changed": bool,
}


def _values(row: sqlite3.Row) -> dict[str, Any]:
    return {k: _CONVERT[k](v) if k in _CONVERT else v
            for k, v in zip(row.keys(), row, strict=True)}


def _authorization(row: sqlite3.Row) -> Authorization:
    return Authorization(**_values(row))


def _entry(row: sqlite3.Row) -> Entry:
    return Entry(**_values(row))
