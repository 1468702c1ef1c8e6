"""The reconciler's durable store-and-forward queue, in the gateway's SQLite database.

Two tables of their own next to the payments tables (same ``SqliteDatabase``):

* ``reconciler_checkpoint(name, seq)``: how far the outbox (``events``) has been
  read, per consumer;
* ``reconciler_queue``: one row per attempt whose outcome is unknown and not yet
  resolved: its intent, kind, how many passes failed (``tries``), when it is due
  next (``next_at``, ms) and the last error.

:meth:`ReconcilerQueue.ingest` reads the events after the checkpoint, queues the
attempts of every ``attempt.unknown`` event among them (and of every approved
capture, whose hold may have a remainder to release) and moves the checkpoint
past them **in one transaction**, so a crash between the two can neither lose an
attempt nor queue one twice. :meth:`ReconcilerQueue.sweep` queues every attempt
the store still has ``unknown`` (done once on start: nothing is missed whatever
the checkpoint says). Queueing is idempotent (one row per attempt).

The queue decides nothing: the worker (``reconciler.worker``) records every
network try as an attempt before it sends it, and deletes the row (:meth:`done`)
once the attempt is resolved; a crash leaves the row, and the next pass resumes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from gateway.payments.model import AttemptKind, AttemptStatus
from gateway.payments.store import PaymentStore
from gateway.store.sqlite import SqliteDatabase

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS reconciler_checkpoint (
        name TEXT PRIMARY KEY,
        seq  INTEGER NOT NULL
    ) STRICT""",
    """CREATE TABLE IF NOT EXISTS reconciler_queue (
        attempt_id TEXT PRIMARY KEY,
        intent_id  TEXT NOT NULL,
        kind       TEXT NOT NULL,
        tries      INTEGER NOT NULL,
        next_at    INTEGER NOT NULL,
        last_error TEXT NOT NULL,
        created    INTEGER NOT NULL,
        updated    INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS reconciler_queue_due ON reconciler_queue (next_at)",
)

#: The checkpoint of the worker that resolves unknown attempts.
CHECKPOINT: Final = "unknown_attempts"
#: The kinds of attempt the queue takes: a timeout reversal try that stays unknown
#: is not queued itself (its authorization's row stays until a try is acknowledged).
QUEUED_KINDS: Final = frozenset({AttemptKind.AUTHORIZATION, AttemptKind.CAPTURE,
                                 AttemptKind.VOID, AttemptKind.RELEASE, AttemptKind.REFUND})
_UNKNOWN_EVENT: Final = f"attempt.{AttemptStatus.UNKNOWN.value}"
_INGESTED_TYPES: Final = (_UNKNOWN_EVENT, f"attempt.{AttemptStatus.APPROVED.value}")
_COLUMNS: Final = "attempt_id, intent_id, kind, tries, next_at, last_error, created, updated"
_INSERT: Final = (f"INSERT INTO reconciler_queue ({_COLUMNS}) VALUES (?, ?, ?, 0, ?, '', ?, ?) "
                  "ON CONFLICT (attempt_id) DO NOTHING")


@dataclass(frozen=True)
class QueueEntry:
    """One unknown attempt waiting to be resolved."""

    attempt_id: str
    intent_id: str
    kind: AttemptKind
    tries: int          # passes that did not resolve it
    next_at: int        # ms since the epoch: due from then on
    last_error: str
    created: int
    updated: int


def _entry(row: Sequence[object]) -> QueueEntry:
    attempt_id, intent_id, kind, tries, next_at, last_error, created, updated = row
    return QueueEntry(attempt_id=str(attempt_id), intent_id=str(intent_id),
                      kind=AttemptKind(str(kind)), tries=int(str(tries)),
                      next_at=int(str(next_at)), last_error=str(last_error),
                      created=int(str(created)), updated=int(str(updated)))


def _insert(conn: sqlite3.Connection, rows: Iterable[tuple[str, str, str]], now: int) -> int:
    added = 0
    for attempt_id, intent_id, kind in rows:
        added += conn.execute(_INSERT, (attempt_id, intent_id, kind, now, now, now)).rowcount
    return added


class ReconcilerQueue:
    """The queue and checkpoint on ``db`` (the caller's: not closed here)."""

    def __init__(self, db: SqliteDatabase, *, name: str = CHECKPOINT) -> None:
        self._db = db
        self._name = name

        def create(conn: sqlite3.Connection) -> None:
            for statement in SCHEMA:
                conn.execute(statement)
        db.write_sync(create)

    async def checkpoint(self) -> int:
        """The seq of the last event ingested (0 before the first)."""
        def job(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT seq FROM reconciler_checkpoint WHERE name = ?",
                               (self._name,)).fetchone()
            return 0 if row is None else int(row[0])
        return await self._db.read(job)

    async def ingest(self, store: PaymentStore, now: int, *, batch: int = 1000) -> int:
        """Queue the attempts of the ``attempt.unknown`` events after the checkpoint and
        advance it, each batch in one transaction; returns how many rows were added."""
        added = 0
        while True:
            start = await self.checkpoint()
            events, last = await store.events_of_types(start, batch, _INGESTED_TYPES)
            if last == start:
                return added
            rows = [(e.aggregate_id, str(e.payload.get("intent_id", "")),
                     str(e.payload.get("kind", ""))) for e in events
                    if e.aggregate_type == "attempt" and (
                        (e.type == _UNKNOWN_EVENT and e.payload.get("kind") in QUEUED_KINDS)
                        # an approved capture may leave a remainder to release: checked
                        # from the queue, so a crash right after it cannot forget it
                        or (e.type == "attempt.approved"
                            and e.payload.get("kind") == AttemptKind.CAPTURE.value))]

            def job(conn: sqlite3.Connection, start: int = start, last: int = last,
                    rows: list[tuple[str, str, str]] = rows) -> int | None:
                row = conn.execute("SELECT seq FROM reconciler_checkpoint WHERE name = ?",
                                   (self._name,)).fetchone()
                if (0 if row is None else int(row[0])) != start:
                    return None          # another ingest moved it: read again
                conn.execute("INSERT INTO reconciler_checkpoint (name, seq) VALUES (?, ?) "
                             "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                             (self._name, last))
                return _insert(conn, rows, now)
            result = await self._db.write(job)
            added += result or 0
            if result is not None and last - start < batch:
                return added

    async def sweep(self, store: PaymentStore, now: int, *, limit: int = 1_000_000) -> int:
        """Queue every attempt the store has ``unknown`` (of a queued kind); returns how
        many rows were added (those already queued are left as they are)."""
        unknown = await store.attempts_with_status(AttemptStatus.UNKNOWN, limit=limit)
        rows = [(a.id, a.intent_id, a.kind.value) for a in unknown if a.kind in QUEUED_KINDS]
        if not rows:
            return 0
        return await self._db.write(lambda conn: _insert(conn, rows, now))

    async def due(self, now: int, limit: int = 100) -> list[QueueEntry]:
        """Entries due at ``now``, the longest-waiting first."""
        def job(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM reconciler_queue WHERE next_at <= ? "
                                "ORDER BY next_at, created, attempt_id LIMIT ?",
                                (now, limit)).fetchall()
            return [_entry(r) for r in rows]
        return await self._db.read(job)

    async def size(self) -> int:
        """How many entries the queue holds, due or not."""
        def job(conn: sqlite3.Connection) -> int:
            return int(conn.execute("SELECT count(*) FROM reconciler_queue").fetchone()[0])
        return await self._db.read(job)

    async def entries(self) -> list[QueueEntry]:
        """Every entry, due or not, by ``next_at``."""
        return await self.due(2**62, 2**31)

    async def get(self, attempt_id: str) -> QueueEntry | None:
        """The entry of ``attempt_id``, or ``None`` (never queued, or done)."""
        def job(conn: sqlite3.Connection) -> QueueEntry | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM reconciler_queue WHERE attempt_id = ?",
                               (attempt_id,)).fetchone()
            return None if row is None else _entry(row)
        return await self._db.read(job)

    async def reschedule(self, attempt_id: str, next_at: int, error: str, now: int) -> bool:
        """One more failed pass: ``tries`` + 1, due again at ``next_at``; ``False`` if the
        entry is gone (resolved meanwhile)."""
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE reconciler_queue SET tries = tries + 1, next_at = ?, "
                                "last_error = ?, updated = ? WHERE attempt_id = ?",
                                (next_at, error[:500], now, attempt_id)).rowcount == 1
        return await self._db.write(job)

    async def done_many(self, attempt_ids: list[str]) -> int:
        """Drop the entries of resolved attempts; how many there were."""
        def job(conn: sqlite3.Connection) -> int:
            return conn.executemany("DELETE FROM reconciler_queue WHERE attempt_id = ?",
                                    [(a,) for a in attempt_ids]).rowcount
        return await self._db.write(job)

    async def done(self, attempt_id: str) -> bool:
        """The attempt is resolved: drop its entry; ``False`` if there was none."""
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM reconciler_queue WHERE attempt_id = ?",
                                (attempt_id,)).rowcount == 1
        return await self._db.write(job)
