"""netsim's ledger storage: the SQLite schema, the state changes applied inside one
transaction (:class:`Transaction`), and the write connection (:class:`Writer`).

The tables are described in :mod:`netsim.ledger`. A :class:`Transaction` applies a
batch of changes in order: authorizations netsim answered, and captures, refunds,
voids and reversal advices decided against the authorization they name
(:func:`netsim.rules.decide`), and their repeats (0221, 0201, 0401): answered from
the journal row of the message they repeat when it was processed, decided as it
when it was not. The rows of consecutive authorizations go in one
``executemany`` and their journal rows in one ``INSERT ... SELECT`` copying them;
the other journal rows in one ``executemany``, written before anything reads the
journal, so every change sees the ones before it. Row ids are chosen here, one
past the largest (read once per transaction), so that a change knows the ids it
writes before the rows are sent; there is only ever one writer. The
:class:`Writer` wraps each batch in its transaction and commits it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from netsim import rules
from netsim.rules import EntryKind, Request, Status

__all__ = ["SCHEMA", "SCHEMA_VERSION", "Change", "Outcome", "Transaction", "Writer", "connect"]

SCHEMA_VERSION = 1
_CHECKPOINT_EVERY = 32       # commits between two background checkpoints
_WAL_LIMIT = 64 << 20        # bytes; a WAL file past it is checkpointed by the writer itself

# authorizations needs no index of its own on (terminal, stan): the UNIQUE key's
# index starts with those columns. The status CHECK is spelled with OR: SQLite
# evaluates an IN list of three through a temporary table built for every row.
SCHEMA = """
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
    status TEXT NOT NULL
        CHECK (status = 'approved' OR status = 'declined' OR status = 'reversed'),
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
"""

_APPROVED, _DECLINED = Status.APPROVED.value, Status.DECLINED.value

# created_at and updated_at are the same parameter (?3). A duplicate (the same
# terminal, STAN and field 7: the UNIQUE key) inserts nothing.
_INSERT_AUTHORIZATION = (
    "INSERT INTO authorizations (id, day, created_at, updated_at, mti, processing_code, "
    "stan, transmitted, rrn, terminal, merchant, acquirer, amount, currency, card_bin, "
    "card_last4, approval_code, response_code, status) VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, "
    "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18) "
    "ON CONFLICT (terminal, stan, transmitted) DO NOTHING")
_ENTRY_COLUMNS = (
    "id, kind, day, created_at, mti, processing_code, stan, transmitted, rrn, terminal, "
    "merchant, acquirer, amount, currency, card_bin, card_last4, approval_code, "
    "response_code, outcome, effect, changed, authorization_id, original_stan, "
    "original_transmitted")
_INSERT_ENTRY = (f"INSERT INTO entries ({_ENTRY_COLUMNS}) "
                 f"VALUES ({', '.join('?' * len(_ENTRY_COLUMNS.split(',')))})")
# The journal rows of the authorizations with ids ?2 to ?3, just inserted (so still
# approved or declined), with entry ids offset by ?1 from theirs.
_JOURNAL_AUTHORIZATIONS = (
    f"INSERT INTO entries ({_ENTRY_COLUMNS}) "
    f"SELECT id + ?1, '{EntryKind.AUTHORIZATION.value}', day, created_at, mti, "
    "processing_code, stan, transmitted, rrn, terminal, merchant, acquirer, amount, "
    "currency, card_bin, card_last4, approval_code, response_code, "
    f"CASE status WHEN '{_APPROVED}' THEN '{rules.APPROVED_OUTCOME}' "
    f"ELSE '{rules.DECLINED_OUTCOME}' END, "
    f"CASE status WHEN '{_APPROVED}' THEN amount ELSE 0 END, status = '{_APPROVED}', id, '', '' "
    "FROM authorizations WHERE id BETWEEN ?2 AND ?3")
# The first journal row of a message (or of the repeat that was processed in its place):
# the same terminal, STAN and field 7, and MTI ?4 or ?5 (a message and its repeat MTI).
_PROCESSED = ("SELECT * FROM entries WHERE terminal = ?1 AND stan = ?2 AND transmitted = ?3 "
              "AND mti IN (?4, ?5) ORDER BY id LIMIT 1")
# Each MTI that has a repeat MTI, and that repeat (the inverse of rules.REPEATS).
_REPEAT_OF = {base: repeat for repeat, base in rules.REPEATS.items()}
_ORIGINAL = "SELECT * FROM authorizations WHERE terminal = ? AND stan = ? AND transmitted = ?"
_UPDATES = {
    kind: f"UPDATE authorizations SET {change}, updated_at = ? WHERE id = ?"
    for kind, change in ((EntryKind.CAPTURE, "captured = captured + ?"),
                         (EntryKind.REFUND, "refunded = refunded + ?"),
                         (EntryKind.REVERSAL, "reversed = reversed + ?, status = 'reversed'"))
}


def connect(path: str | os.PathLike[str], *, write: bool = False) -> sqlite3.Connection:
    """A connection to the ledger at ``path``: rows by name; for the one writer, with
    ``synchronous=NORMAL`` (WAL) and foreign keys checked."""
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if write:
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


@dataclass(frozen=True)
class Outcome:
    """What the ledger did with a request: the response code to send, what the message
    did (an :class:`Entry` outcome, ``duplicate`` or ``repeat-mismatch``), the amount it
    moved, and the ids of the records written and touched (None for a duplicate or a
    repeat that does not match its original: those record nothing)."""

    code: str
    outcome: str
    effect: int = 0
    changed: bool = False
    entry_id: int | None = None
    authorization_id: int | None = None

    @property
    def duplicate(self) -> bool:
        return self.entry_id is None and self.code == rules.DUPLICATE


_DUPLICATE = Outcome(rules.DUPLICATE, "duplicate")
_MISMATCH = Outcome(rules.FORMAT_ERROR, rules.REPEAT_MISMATCH)


def _outcome(code: str, outcome: str, effect: int, changed: bool, entry_id: int,
             authorization_id: int | None) -> Outcome:
    """``Outcome(...)``, built without the dataclass __init__ (whose frozen field-by-field
    assignments cost more than the rest of recording an authorization in Python)."""
    result = object.__new__(Outcome)
    result.__dict__.update(code=code, outcome=outcome, effect=effect, changed=changed,
                           entry_id=entry_id, authorization_id=authorization_id)
    return result


class Change(NamedTuple):
    """A state change to apply: ``request``, with the issuer's response ``code`` and
    ``approval_code`` for a 0100 (other MTIs are decided in the transaction)."""

    request: Request
    code: str = ""
    approval_code: str = ""


class Transaction:
    """Applies changes inside the caller's open transaction on ``conn``; every row
    written is stamped with ``now`` (UTC)."""

    def __init__(self, conn: sqlite3.Connection, now: datetime) -> None:
        self._conn = conn
        self._now = now.isoformat(timespec="microseconds")
        self._day = now.date().isoformat()
        self._next_authorization = _next_id(conn, "authorizations")
        self._next_entry = _next_id(conn, "entries")
        self._journal: list[tuple[object, ...]] = []

    def apply(self, changes: Sequence[Change | None]) -> list[Outcome | None]:
        """Apply ``changes`` in order; their outcomes (None for a None change)."""
        outcomes: list[Outcome | None] = [None] * len(changes)
        pending: list[tuple[int, Change]] = []  # authorizations not inserted yet
        for i, change in enumerate(changes):
            if change is None:
                continue
            if change.request.mti == "0100":
                pending.append((i, change))
                continue
            if pending:
                self._authorize(pending, outcomes)
                pending = []
            outcomes[i] = self._refer(change.request)
        if pending:
            self._authorize(pending, outcomes)
        self._write_journal()
        return outcomes

    # ------------------------------------------------------------ authorizations

    def _authorize(self, changes: list[tuple[int, Change]],
                   outcomes: list[Outcome | None]) -> None:
        """Record answered 0100s (at ``outcomes``' positions), each with its journal
        row; a duplicate records nothing and gets 94."""
        now, day, first = self._now, self._day, self._next_authorization
        rows: list[tuple[object, ...]] = []
        for k, (_, (req, code, approval_code)) in enumerate(changes):
            approved = code == rules.APPROVED
            rows.append((first + k, day, now, req.mti, req.processing_code, req.stan,
                         req.transmitted, req.rrn, req.terminal, req.merchant, req.acquirer,
                         req.amount, req.currency, req.card_bin, req.card_last4,
                         approval_code if approved else "", code,
                         _APPROVED if approved else _DECLINED))
        ids = self._insert_authorizations(rows)
        last = self._next_authorization - 1  # those inserted are first..last
        # Their journal rows, copied from the rows just inserted.
        offset = self._next_entry - first
        if last >= first:
            self._conn.execute(_JOURNAL_AUTHORIZATIONS, (offset, first, last))
            self._next_entry = last + offset + 1
        for (i, (req, code, _)), auth_id in zip(changes, ids, strict=True):
            if auth_id is None:
                outcomes[i] = _DUPLICATE
            elif code == rules.APPROVED:
                outcomes[i] = _outcome(code, rules.APPROVED_OUTCOME, req.amount, True,
                                       auth_id + offset, auth_id)
            else:
                outcomes[i] = _outcome(code, rules.DECLINED_OUTCOME, 0, False,
                                       auth_id + offset, auth_id)

    def _insert_authorizations(self, rows: list[tuple[object, ...]]) -> list[int | None]:
        """Insert ``rows``, numbered from the next id; the id of each, None for a
        duplicate. All in one statement, unless a duplicate is among them: then they
        are taken back and inserted one by one, so that ids stay consecutive."""
        first = self._next_authorization
        if self._conn.executemany(_INSERT_AUTHORIZATION, rows).rowcount == len(rows):
            self._next_authorization = first + len(rows)
            return list(range(first, first + len(rows)))
        self._conn.execute("DELETE FROM authorizations WHERE id >= ?", (first,))
        ids: list[int | None] = []
        for row in rows:
            auth_id = self._next_authorization
            if self._conn.execute(_INSERT_AUTHORIZATION, (auth_id, *row[1:])).rowcount:
                self._next_authorization += 1
                ids.append(auth_id)
            else:
                ids.append(None)
        return ids

    # ------------------------------------------------------------ messages about an original

    def _refer(self, req: Request) -> Outcome:
        """A capture, refund, void or reversal advice (or a repeat) against the original
        it names.

        A capture, refund or void already processed (the same terminal, STAN and field
        7, under its MTI or its repeat's) is a duplicate: 94, nothing recorded. A repeat
        of one already processed gets that one's code (:meth:`_repeat`); a repeat of
        one never processed is decided as it. Advices are never duplicates.
        """
        kind = rules.kind_of(req.mti)
        if req.mti not in rules.ADVICES:
            self._write_journal()  # the duplicate check reads it
            base = rules.REPEATS.get(req.mti, req.mti)
            processed = self._conn.execute(_PROCESSED, (
                req.terminal, req.stan, req.transmitted, base,
                _REPEAT_OF.get(base, base))).fetchone()
            if processed is not None:
                return self._repeat(req, processed) if req.mti != base else _DUPLICATE
        row = None
        if req.original is not None and req.original.mti == "0100":
            row = self._conn.execute(_ORIGINAL, (req.terminal, req.original.stan,
                                                 req.original.transmitted)).fetchone()
        hold = rules.locate(None if row is None else _hold(row), req)
        decision = rules.decide(hold, req)
        auth_id = None
        card_bin = card_last4 = approval_code = ""
        if hold is not None and row is not None:
            auth_id = int(row["id"])
            card_bin, card_last4, approval_code = row["card_bin"], row["card_last4"], \
                hold.approval_code
            if decision.changed:
                self._conn.execute(_UPDATES[kind], (decision.effect, self._now, auth_id))
        entry_id = self._journal_row(req, decision.code, decision.outcome, decision.effect,
                                     decision.changed, auth_id, card_bin, card_last4,
                                     approval_code)
        return Outcome(decision.code, decision.outcome, decision.effect, decision.changed,
                       entry_id, auth_id)

    def _repeat(self, req: Request, processed: sqlite3.Row) -> Outcome:
        """A repeat of the processed message ``processed`` (its journal row): answered
        with its code and journalled as changing nothing, or, when it does not carry
        that message's fields, a format error that records nothing."""
        if not rules.repeats_original(_processed(processed), req):
            return _MISMATCH
        code, auth_id = processed["response_code"], processed["authorization_id"]
        entry_id = self._journal_row(req, code, rules.REPEAT, 0, False, auth_id,
                                     processed["card_bin"], processed["card_last4"],
                                     processed["approval_code"])
        return Outcome(code, rules.REPEAT, 0, False, entry_id, auth_id)

    # ------------------------------------------------------------ the journal

    def _journal_row(self, req: Request, code: str, outcome: str, effect: int, changed: bool,
                     auth_id: int | None, card_bin: str, card_last4: str,
                     approval_code: str) -> int:
        """Queue the journal row of ``req``; its id."""
        entry_id = self._next_entry
        self._next_entry += 1
        original = req.original
        self._journal.append((
            entry_id, rules.kind_of(req.mti).value, self._day, self._now, req.mti,
            req.processing_code, req.stan, req.transmitted, req.rrn, req.terminal,
            req.merchant, req.acquirer, req.amount, req.currency, card_bin, card_last4,
            approval_code, code, outcome, effect, int(changed), auth_id,
            original.stan if original else "", original.transmitted if original else ""))
        return entry_id

    def _write_journal(self) -> None:
        if self._journal:
            self._conn.executemany(_INSERT_ENTRY, self._journal)
            self._journal = []


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def _next_id(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT coalesce(max(id), 0) + 1 FROM {table}").fetchone()[0])


def _processed(row: sqlite3.Row) -> rules.Processed:
    return rules.Processed(
        processing_code=row["processing_code"], amount=row["amount"], acquirer=row["acquirer"],
        rrn=row["rrn"], merchant=row["merchant"], currency=row["currency"],
        original_stan=row["original_stan"], original_transmitted=row["original_transmitted"],
        approval_code=row["approval_code"])


def _hold(row: sqlite3.Row) -> rules.Hold:
    return rules.Hold(status=Status(row["status"]), amount=row["amount"],
                      currency=row["currency"], rrn=row["rrn"],
                      approval_code=row["approval_code"], captured=row["captured"],
                      refunded=row["refunded"], reversed=row["reversed"])


class Writer:
    """The one write connection of the ledger at ``path``: applies batches of changes,
    each in a transaction of its own (:class:`Transaction`).

    The WAL is copied back into the database file (checkpointed) by a thread of its
    own, not at the commit that fills it: a checkpoint waits for two syncs, and the
    writer runs in netsim's event loop. Should those checkpoints keep falling behind
    (the WAL file grows past ``_WAL_LIMIT``), the writer checkpoints itself.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._conn = connect(path, write=True)
        self._conn.execute("PRAGMA wal_autocheckpoint=0")
        self._conn.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT}")
        self._wal = f"{os.fspath(path)}-wal"
        self._commits = 0
        self._checkpoints = threading.Event()  # set: a checkpoint is due (or closing)
        self._closing = False
        self._checkpointer = threading.Thread(target=self._checkpoint_loop, args=(path,),
                                              name="netsim-checkpoint", daemon=True)
        self._checkpointer.start()

    def apply(self, changes: Sequence[Change | None], now: datetime) -> list[Outcome | None]:
        """Apply ``changes`` in one transaction (see :meth:`Transaction.apply`)."""
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            outcomes = Transaction(conn, now).apply(changes)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0:
            if _size(self._wal) > _WAL_LIMIT:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            else:
                self._checkpoints.set()
        return outcomes

    def close(self) -> None:
        self._closing = True
        self._checkpoints.set()
        self._checkpointer.join()
        self._conn.close()

    def _checkpoint_loop(self, path: str | os.PathLike[str]) -> None:
        with contextlib.closing(connect(path, write=True)) as conn:
            while True:
                self._checkpoints.wait()
                self._checkpoints.clear()
                if self._closing:
                    return
                with contextlib.suppress(sqlite3.Error):  # busy, say: the next one will do
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
