"""netsim's ledger: the truth of what the network answered and what it holds.

Owns the SQLite file (stdlib ``sqlite3``, WAL, ``synchronous=NORMAL``: a
committed change survives the netsim process being killed, which is what a
simulator's truth needs; only an operating-system crash could lose the last
commits) with two tables, and the typed records read from it:

* ``authorizations``: one row per 0100 netsim answered (approved or declined),
  with its current state: :class:`Authorization` (status, captured, refunded
  and released amounts);
* ``entries``: the journal, one row per financial message netsim processed
  (authorization, capture, refund, reversal: 0400 voids, 0420 advices and
  every 0421 repeat, each with its own STAN), with the response code, what it
  did (``outcome``), the amount it moved (``effect``) and whether it changed
  anything: :class:`Entry`.

The card is stored only as BIN (first 6) and last 4; the full PAN, track data
and CVC never reach the file.

One writer: a single thread owns the write connection and applies every state
change (check + update + journal row) all-or-nothing, with group commit:
changes queued while a commit is being synced go out together in the next
transaction (one sync for all); if one of them fails, that transaction is
rolled back and each change is applied in a transaction of its own, so a
failing change fails alone. A change's future resolves only after its commit,
so netsim answers nothing it has not made durable. Readers
(:meth:`Ledger.authorizations`, :meth:`Ledger.entries`, ...) open their own
connection per call, so they are safe from any thread or process while netsim
runs.

Amounts are integer minor units; days are UTC dates; timestamps UTC.
"""

from __future__ import annotations

import contextlib
import os
import queue
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

from netsim import rules
from netsim.rules import EntryKind, Request, Status

__all__ = ["Authorization", "Entry", "Ledger", "LedgerClosedError", "Outcome"]

SCHEMA_VERSION = 1
_MAX_BATCH = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS authorizations (
    id INTEGER PRIMARY KEY,
    day TEXT NOT NULL, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
    mti TEXT NOT NULL, processing_code TEXT NOT NULL, stan TEXT NOT NULL,
    transmitted TEXT NOT NULL, rrn TEXT NOT NULL, terminal TEXT NOT NULL,
    merchant TEXT NOT NULL, acquirer TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount >= 0), currency TEXT NOT NULL,
    card_bin TEXT NOT NULL CHECK (length(card_bin) <= 6),
    card_last4 TEXT NOT NULL CHECK (length(card_last4) <= 4),
    approval_code TEXT NOT NULL, response_code TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('approved', 'declined', 'reversed')),
    captured INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT 0,
    reversed INTEGER NOT NULL DEFAULT 0,
    CHECK (captured + reversed <= amount AND refunded <= captured),
    UNIQUE (terminal, stan, transmitted)
);
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL, day TEXT NOT NULL, created_at TEXT NOT NULL,
    mti TEXT NOT NULL, processing_code TEXT NOT NULL, stan TEXT NOT NULL,
    transmitted TEXT NOT NULL, rrn TEXT NOT NULL, terminal TEXT NOT NULL,
    merchant TEXT NOT NULL, acquirer TEXT NOT NULL,
    amount INTEGER NOT NULL, currency TEXT NOT NULL,
    card_bin TEXT NOT NULL CHECK (length(card_bin) <= 6),
    card_last4 TEXT NOT NULL CHECK (length(card_last4) <= 4),
    approval_code TEXT NOT NULL, response_code TEXT NOT NULL, outcome TEXT NOT NULL,
    effect INTEGER NOT NULL, changed INTEGER NOT NULL,
    authorization_id INTEGER REFERENCES authorizations (id),
    original_stan TEXT NOT NULL, original_transmitted TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS entries_by_message ON entries (terminal, stan, transmitted);
CREATE INDEX IF NOT EXISTS entries_by_original ON entries (terminal, original_stan);
CREATE INDEX IF NOT EXISTS entries_by_day ON entries (day);
CREATE INDEX IF NOT EXISTS authorizations_by_stan ON authorizations (terminal, stan);
"""


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
    outcome: str              # approved, declined, captured, reversed, nothing-to-reverse, ...
    effect: int               # minor units authorized, captured, refunded or released
    changed: bool             # whether the network's state changed
    authorization_id: int | None
    original_stan: str        # from field 90; empty for an authorization
    original_transmitted: str

    @property
    def masked_card(self) -> str:
        return _masked(self.card_bin, self.card_last4)


@dataclass(frozen=True)
class Outcome:
    """What the ledger did with a request: the response code to send, what the message
    did (an :class:`Entry` outcome, or ``duplicate``), the amount it moved, and the ids
    of the records written and touched (None for a duplicate, which records nothing)."""

    code: str
    outcome: str
    effect: int = 0
    changed: bool = False
    entry_id: int | None = None
    authorization_id: int | None = None

    @property
    def duplicate(self) -> bool:
        return self.entry_id is None


class LedgerClosedError(RuntimeError):
    """A change was submitted to a closed ledger."""


class _Job(NamedTuple):
    fn: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


_Jobs = queue.SimpleQueue[_Job | None]


class Ledger:
    """netsim's ledger in the SQLite file at ``path`` (created unless ``create=False``).

    ``clock`` returns the current time (timezone-aware; default: now, UTC); it
    sets each record's day and timestamps. Writes go through one background
    thread, started on first use and stopped by :meth:`close` (or when the
    ledger is garbage-collected).
    """

    def __init__(self, path: str | os.PathLike[str], *,
                 clock: Callable[[], datetime] | None = None, create: bool = True) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        if not create and not self.path.exists():
            raise FileNotFoundError(f"no ledger at {self.path}")
        with contextlib.closing(_connect(self.path)) as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version == 0 and create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"{self.path} is not a netsim ledger (schema version {version})")
        self._jobs: _Jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._finalizer = weakref.finalize(self, self._jobs.put, None)

    # ------------------------------------------------------------ writes

    def submit(self, request: Request, *, code: str | None = None,
               approval_code: str = "") -> Future[Outcome]:
        """Queue the state change ``request`` asks for; the future resolves after commit.

        A 0100 needs the issuer's response ``code`` (and ``approval_code`` when
        approved): it is recorded as answered, unless the same terminal, STAN and
        field 7 were seen before (then nothing is recorded and the code is 94).
        Other MTIs are decided here, against the authorization they name, by
        :func:`netsim.rules.decide`.
        """
        now = self._now()
        if request.mti == "0100":
            if code is None:
                raise ValueError("an authorization needs the issuer's response code")
            fn = partial(_authorize, now=now, req=request, code=code,
                         approval_code=approval_code if code == rules.APPROVED else "")
        else:
            rules.kind_of(request.mti)  # KeyError for a non-financial MTI
            fn = partial(_refer, now=now, req=request)
        return self._submit(fn)

    def apply(self, request: Request, *, code: str | None = None,
              approval_code: str = "") -> Outcome:
        """:meth:`submit` and wait for the outcome."""
        return self.submit(request, code=code, approval_code=approval_code).result()

    def flush(self) -> Future[None]:
        """A future that resolves once every change submitted before it is committed."""
        return self._submit(lambda _conn: None)

    def close(self) -> None:
        """Finish the queued changes and stop the writer thread (idempotent)."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._finalizer()
        if thread is not None:
            thread.join()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _submit(self, fn: Callable[[sqlite3.Connection], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        with self._lock:
            if self._closed:
                raise LedgerClosedError("the ledger is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=_write_loop, args=(self.path, self._jobs),
                                                name="netsim-ledger", daemon=True)
                self._thread.start()
            self._jobs.put(_Job(fn, future))
        return future

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
        conn = _connect(self.path)
        try:
            conn.execute("PRAGMA query_only=ON")
            yield conn
        finally:
            conn.close()


# ---------------------------------------------------------------- the writer thread


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def _write_loop(path: Path, jobs: _Jobs) -> None:
    """Take queued changes in batches; apply each batch in one transaction."""
    conn = _connect(path)
    try:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        stopping = False
        while not stopping:
            first = jobs.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < _MAX_BATCH:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            _run_batch(conn, batch)
    finally:
        conn.close()


def _run_batch(conn: sqlite3.Connection, batch: list[_Job]) -> None:
    """Apply a batch in one transaction (one sync). If any change in it fails, roll the
    whole batch back and apply each change in a transaction of its own instead, so that
    a failing change fails alone and every change stays all-or-nothing."""
    live = [job for job in batch if job.future.set_running_or_notify_cancel()]
    if not live:
        return
    try:
        conn.execute("BEGIN IMMEDIATE")
        values = [job.fn(conn) for job in live]
        conn.execute("COMMIT")
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        if len(live) == 1:
            live[0].future.set_exception(exc)
            return
        for job in live:
            _run_alone(conn, job)
        return
    for job, value in zip(live, values, strict=True):
        job.future.set_result(value)


def _run_alone(conn: sqlite3.Connection, job: _Job) -> None:
    try:
        conn.execute("BEGIN IMMEDIATE")
        value = job.fn(conn)
        conn.execute("COMMIT")
    except Exception as exc:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        job.future.set_exception(exc)
    else:
        job.future.set_result(value)


# ---------------------------------------------------------------- changes (writer thread only)


_DUPLICATE = Outcome(rules.DUPLICATE, "duplicate")


def _seen(conn: sqlite3.Connection, req: Request) -> bool:
    """Whether this very message (MTI, terminal, STAN, field 7) was processed before."""
    row = conn.execute("SELECT 1 FROM entries WHERE terminal = ? AND stan = ? AND "
                       "transmitted = ? AND mti = ? LIMIT 1",
                       (req.terminal, req.stan, req.transmitted, req.mti)).fetchone()
    return row is not None


def _authorize(conn: sqlite3.Connection, *, now: datetime, req: Request, code: str,
               approval_code: str) -> Outcome:
    """Record an answered 0100; a duplicate (same terminal, STAN and field 7: the
    table's UNIQUE key) records nothing."""
    approved = code == rules.APPROVED
    stamp = now.isoformat(timespec="microseconds")
    cur = _insert(conn, "authorizations", {
        "day": now.date().isoformat(), "created_at": stamp, "updated_at": stamp,
        "mti": req.mti, "processing_code": req.processing_code, "stan": req.stan,
        "transmitted": req.transmitted, "rrn": req.rrn, "terminal": req.terminal,
        "merchant": req.merchant, "acquirer": req.acquirer, "amount": req.amount,
        "currency": req.currency, "card_bin": req.card_bin, "card_last4": req.card_last4,
        "approval_code": approval_code, "response_code": code,
        "status": str(Status.APPROVED if approved else Status.DECLINED),
    }, " ON CONFLICT (terminal, stan, transmitted) DO NOTHING")
    if cur.rowcount == 0:
        return _DUPLICATE
    auth_id = _rowid(cur)
    decision = rules.Decision(code, rules.APPROVED_OUTCOME if approved else rules.DECLINED_OUTCOME,
                              req.amount if approved else 0, approved)
    entry_id = _journal(conn, now, req, decision, auth_id, req.card_bin, req.card_last4,
                        approval_code)
    return Outcome(code, decision.outcome, decision.effect, decision.changed, entry_id, auth_id)


def _refer(conn: sqlite3.Connection, *, now: datetime, req: Request) -> Outcome:
    """A capture, refund, void or reversal advice against the original it names."""
    if req.mti not in rules.ADVICES and _seen(conn, req):
        return _DUPLICATE
    row = None
    if req.original is not None and req.original.mti == "0100":
        row = conn.execute("SELECT * FROM authorizations WHERE terminal = ? AND stan = ? AND "
                           "transmitted = ?", (req.terminal, req.original.stan,
                                               req.original.transmitted)).fetchone()
    hold = rules.locate(None if row is None else _hold(row), req)
    decision = rules.decide(hold, req)
    auth_id = None
    card_bin = card_last4 = approval_code = ""
    if hold is not None and row is not None:
        auth_id = int(row["id"])
        card_bin, card_last4, approval_code = row["card_bin"], row["card_last4"], hold.approval_code
        if decision.changed:
            _update_hold(conn, now, auth_id, req.kind, decision.effect)
    entry_id = _journal(conn, now, req, decision, auth_id, card_bin, card_last4, approval_code)
    return Outcome(decision.code, decision.outcome, decision.effect, decision.changed, entry_id,
                   auth_id)


_UPDATES = {
    EntryKind.CAPTURE: "captured = captured + ?",
    EntryKind.REFUND: "refunded = refunded + ?",
    EntryKind.REVERSAL: "reversed = reversed + ?, status = 'reversed'",
}


def _update_hold(conn: sqlite3.Connection, now: datetime, auth_id: int, kind: EntryKind,
                 effect: int) -> None:
    conn.execute(f"UPDATE authorizations SET {_UPDATES[kind]}, updated_at = ? WHERE id = ?",
                 (effect, now.isoformat(timespec="microseconds"), auth_id))


def _journal(conn: sqlite3.Connection, now: datetime, req: Request, decision: rules.Decision,
             auth_id: int | None, card_bin: str, card_last4: str, approval_code: str) -> int:
    original = req.original
    return _rowid(_insert(conn, "entries", {
        "kind": str(req.kind), "day": now.date().isoformat(),
        "created_at": now.isoformat(timespec="microseconds"), "mti": req.mti,
        "processing_code": req.processing_code, "stan": req.stan,
        "transmitted": req.transmitted, "rrn": req.rrn, "terminal": req.terminal,
        "merchant": req.merchant, "acquirer": req.acquirer, "amount": req.amount,
        "currency": req.currency, "card_bin": card_bin, "card_last4": card_last4,
        "approval_code": approval_code, "response_code": decision.code,
        "outcome": decision.outcome, "effect": decision.effect,
        "changed": int(decision.changed), "authorization_id": auth_id,
        "original_stan": original.stan if original else "",
        "original_transmitted": original.transmitted if original else "",
    }))


def _insert(conn: sqlite3.Connection, table: str, row: dict[str, object],
            suffix: str = "") -> sqlite3.Cursor:
    columns, marks = ", ".join(row), ", ".join("?" * len(row))
    return conn.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks}){suffix}",
                        tuple(row.values()))


def _rowid(cur: sqlite3.Cursor) -> int:
    if cur.lastrowid is None:  # sqlite always sets it after an INSERT that inserted
        raise RuntimeError("no row id after insert")
    return cur.lastrowid


def _hold(row: sqlite3.Row) -> rules.Hold:
    return rules.Hold(status=Status(row["status"]), amount=row["amount"],
                      currency=row["currency"], rrn=row["rrn"],
                      approval_code=row["approval_code"], captured=row["captured"],
                      refunded=row["refunded"], reversed=row["reversed"])


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
