"""The payments store on the gateway's SQLite database (``SqliteDatabase``).

One :meth:`SqlitePaymentStore.commit` is one write job, so the writer thread
runs it inside its own SAVEPOINT of a group-committed batch: the intent row
(optimistic version check), attempts and refunds (upserted by id) and the
events (numbered, hash-chained) land together or not at all. The chain's
previous hash is read inside the job from the last ``events`` row, so a job
that rolls back never leaves a stale "previous hash" behind for the next one.

Tables are ``STRICT``: money and times are INTEGER columns and a value of the
wrong type is refused; values are also checked to be ``int`` (not ``float``
or ``bool``) before a job is queued. JSON columns (``metadata``,
``last_payment_error``, ``request``, ``payload``) are canonical JSON text.
Enums are stored as their string values.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Collection
from dataclasses import asdict
from typing import Any, Final, cast

from gateway.payments.audit import GENESIS, canonical_json, chain_hash, load_json
from gateway.payments.idempotency import RETENTION_MS
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Change,
    IntentStatus,
    PaymentError,
    PaymentIntent,
    Refund,
    RefundStatus,
)
from gateway.payments.store import (
    DuplicateId,
    EventRow,
    IdempotencyRecord,
    IdempotencyState,
    InvalidCursor,
    VersionConflict,
)
from gateway.store.sqlite import SqliteDatabase

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS payment_intents (
        id                  TEXT PRIMARY KEY,
        merchant_id         TEXT NOT NULL,
        amount              INTEGER NOT NULL,
        currency            TEXT NOT NULL,
        capture_method      TEXT NOT NULL,
        status              TEXT NOT NULL,
        created             INTEGER NOT NULL,
        updated             INTEGER NOT NULL,
        description         TEXT NOT NULL,
        metadata            TEXT NOT NULL,
        amount_capturable   INTEGER NOT NULL,
        amount_received     INTEGER NOT NULL,
        amount_refunded     INTEGER NOT NULL,
        payment_method      TEXT NOT NULL,
        last_payment_error  TEXT,
        cancellation_reason TEXT NOT NULL,
        version             INTEGER NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS payment_intents_merchant "
    "ON payment_intents (merchant_id, created, id)",
    "CREATE INDEX IF NOT EXISTS payment_intents_status "
    "ON payment_intents (status, merchant_id, created, id)",
    """CREATE TABLE IF NOT EXISTS attempts (
        id                  TEXT PRIMARY KEY,
        intent_id           TEXT NOT NULL REFERENCES payment_intents (id),
        kind                TEXT NOT NULL,
        status              TEXT NOT NULL,
        amount              INTEGER NOT NULL,
        currency            TEXT NOT NULL,
        stan                TEXT NOT NULL,
        rrn                 TEXT NOT NULL,
        transmitted         TEXT NOT NULL,
        terminal_id         TEXT NOT NULL,
        created             INTEGER NOT NULL,
        updated             INTEGER NOT NULL,
        approved_amount     INTEGER NOT NULL,
        response_code       TEXT NOT NULL,
        approval_code       TEXT NOT NULL,
        original_attempt_id TEXT NOT NULL,
        refund_id           TEXT NOT NULL,
        request             TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS attempts_status ON attempts (status, kind, created)",
    "CREATE INDEX IF NOT EXISTS attempts_intent ON attempts (intent_id)",
    "CREATE INDEX IF NOT EXISTS attempts_created ON attempts (created)",
    "CREATE INDEX IF NOT EXISTS attempts_trace ON attempts (terminal_id, stan)",
    """CREATE TABLE IF NOT EXISTS refunds (
        id          TEXT PRIMARY KEY,
        intent_id   TEXT NOT NULL REFERENCES payment_intents (id),
        amount      INTEGER NOT NULL,
        currency    TEXT NOT NULL,
        status      TEXT NOT NULL,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL,
        reason      TEXT NOT NULL,
        attempt_id  TEXT NOT NULL
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS refunds_intent ON refunds (intent_id)",
    """CREATE TABLE IF NOT EXISTS idempotency_keys (
        scope       TEXT NOT NULL,
        key         TEXT NOT NULL,
        fingerprint ANY NOT NULL,
        state       TEXT NOT NULL CHECK (state IN ('in_progress', 'done')),
        response    BLOB NOT NULL,
        code        INTEGER NOT NULL,
        details     BLOB NOT NULL,
        created     INTEGER NOT NULL,
        expires     INTEGER NOT NULL,
        PRIMARY KEY (scope, key)
    ) STRICT""",
    "CREATE INDEX IF NOT EXISTS idempotency_keys_expires ON idempotency_keys (expires)",
    """CREATE TABLE IF NOT EXISTS events (
        seq            INTEGER PRIMARY KEY,
        type           TEXT NOT NULL,
        aggregate_type TEXT NOT NULL,
        aggregate_id   TEXT NOT NULL,
        payload        TEXT NOT NULL,
        created        INTEGER NOT NULL,
        prev_hash      TEXT NOT NULL,
        hash           TEXT NOT NULL
    ) STRICT""",
)

_INTENT: Final = ("id, merchant_id, amount, currency, capture_method, status, created, updated, "
                  "description, metadata, amount_capturable, amount_received, amount_refunded, "
                  "payment_method, last_payment_error, cancellation_reason, version")
_INTENT_SET: Final = ", ".join(f"{c.strip()} = ?" for c in _INTENT.split(",")[1:])
_ATTEMPT: Final = ("id, intent_id, kind, status, amount, currency, stan, rrn, transmitted, "
                   "terminal_id, created, updated, approved_amount, response_code, approval_code, "
                   "original_attempt_id, refund_id, request")
_REFUND: Final = "id, intent_id, amount, currency, status, created, updated, reason, attempt_id"
_IDEM: Final = "scope, key, fingerprint, state, response, code, details, created, expires"
_EVENT: Final = "seq, type, aggregate_type, aggregate_id, payload, created, prev_hash, hash"


def _upsert(table: str, columns: str) -> str:
    names = [c.strip() for c in columns.split(",")]
    updates = ", ".join(f"{n} = excluded.{n}" for n in names[1:])
    marks = ", ".join("?" * len(names))
    # The WHERE makes an id of another intent a no-op (0 rows), reported as DuplicateId.
    return (f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT (id) DO UPDATE "
            f"SET {updates} WHERE {table}.intent_id = excluded.intent_id")


_UPSERT_REFUND: Final = _upsert("refunds", _REFUND)
#: What a decision may change on an attempt; the rest is fixed once it is recorded.
_ATTEMPT_MUTABLE: Final = ("status", "updated", "approved_amount", "response_code",
                           "approval_code", "request")
_ATTEMPT_NAMES: Final = tuple(c.strip() for c in _ATTEMPT.split(","))
_ATTEMPT_FIXED: Final = tuple(n for n in _ATTEMPT_NAMES if n not in _ATTEMPT_MUTABLE)
_MUTABLE_AT: Final = tuple(_ATTEMPT_NAMES.index(n) for n in _ATTEMPT_MUTABLE)
_FIXED_AT: Final = tuple(_ATTEMPT_NAMES.index(n) for n in _ATTEMPT_FIXED)
# An update sets only the mutable columns (only the status index changes, not the
# other four) and matches the fixed ones: an attempt whose id exists with other fixed
# values (another intent's, another STAN or amount) is refused as a DuplicateId.
_UPDATE_ATTEMPT: Final = (
    f"UPDATE attempts SET {', '.join(f'{n} = ?' for n in _ATTEMPT_MUTABLE)} "
    f"WHERE {' AND '.join(f'{n} = ?' for n in _ATTEMPT_FIXED)}")
_INSERT_ATTEMPT: Final = (f"INSERT INTO attempts ({_ATTEMPT}) "
                          f"VALUES ({', '.join('?' * len(_ATTEMPT_NAMES))})")


def _write_attempt(conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
    """Update the attempt ``row`` names, or insert it if it is new."""
    if conn.execute(_UPDATE_ATTEMPT, [row[i] for i in _MUTABLE_AT]
                    + [row[i] for i in _FIXED_AT]).rowcount == 1:
        return
    try:
        conn.execute(_INSERT_ATTEMPT, row)
    except sqlite3.IntegrityError:
        if conn.execute("SELECT 1 FROM attempts WHERE id = ?", (row[0],)).fetchone():
            raise DuplicateId(str(row[0])) from None
        raise


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return value


# -- rows out ------------------------------------------------------------------------------
def _intent_values(intent: PaymentIntent) -> tuple[Any, ...]:
    for name in ("amount", "amount_capturable", "amount_received", "amount_refunded",
                 "created", "updated", "version"):
        _int(getattr(intent, name), f"PaymentIntent.{name}")
    error = intent.last_payment_error
    return (intent.id, intent.merchant_id, intent.amount, intent.currency,
            intent.capture_method.value, intent.status.value, intent.created, intent.updated,
            intent.description, canonical_json(intent.metadata), intent.amount_capturable,
            intent.amount_received, intent.amount_refunded, intent.payment_method,
            None if error is None else canonical_json(asdict(error)), intent.cancellation_reason,
            intent.version)


def _attempt_values(a: Attempt) -> tuple[Any, ...]:
    for name in ("amount", "approved_amount", "created", "updated"):
        _int(getattr(a, name), f"Attempt.{name}")
    return (a.id, a.intent_id, a.kind.value, a.status.value, a.amount, a.currency, a.stan, a.rrn,
            a.transmitted, a.terminal_id, a.created, a.updated, a.approved_amount,
            a.response_code, a.approval_code, a.original_attempt_id, a.refund_id,
            canonical_json(a.request))


def _refund_values(r: Refund) -> tuple[Any, ...]:
    for name in ("amount", "created", "updated"):
        _int(getattr(r, name), f"Refund.{name}")
    return (r.id, r.intent_id, r.amount, r.currency, r.status.value, r.created, r.updated,
            r.reason, r.attempt_id)


# -- rows in -------------------------------------------------------------------------------
def _intent(row: Any) -> PaymentIntent:
    (id_, merchant_id, amount, currency, capture_method, status, created, updated, description,
     metadata, capturable, received, refunded, payment_method, error, reason, version) = row
    return PaymentIntent(
        id=id_, merchant_id=merchant_id, amount=amount, currency=currency,
        capture_method=CaptureMethod(capture_method), status=IntentStatus(status),
        created=created, updated=updated, description=description,
        metadata=load_json(metadata), amount_capturable=capturable, amount_received=received,
        amount_refunded=refunded, payment_method=payment_method,
        last_payment_error=None if error is None else PaymentError(**load_json(error)),
        cancellation_reason=reason, version=version)


def _attempt(row: Any) -> Attempt:
    (id_, intent_id, kind, status, amount, currency, stan, rrn, transmitted, terminal_id,
     created, updated, approved, response_code, approval_code, original, refund_id,
     request) = row
    return Attempt(
        id=id_, intent_id=intent_id, kind=AttemptKind(kind), status=AttemptStatus(status),
        amount=amount, currency=currency, stan=stan, rrn=rrn, transmitted=transmitted,
        terminal_id=terminal_id, created=created, updated=updated, approved_amount=approved,
        response_code=response_code, approval_code=approval_code, original_attempt_id=original,
        refund_id=refund_id, request=load_json(request))


def _refund(row: Any) -> Refund:
    id_, intent_id, amount, currency, status, created, updated, reason, attempt_id = row
    return Refund(id=id_, intent_id=intent_id, amount=amount, currency=currency,
                  status=RefundStatus(status), created=created, updated=updated, reason=reason,
                  attempt_id=attempt_id)


def _idem(row: Any) -> IdempotencyRecord:
    scope, key, fingerprint, state, response, code, details, created, expires = row
    return IdempotencyRecord(scope=scope, key=key, fingerprint=fingerprint,
                             state=cast(IdempotencyState, state), response=bytes(response),
                             code=code, details=bytes(details), created=created,
                             expires=expires)


def _event(row: Any) -> EventRow:
    seq, type_, aggregate_type, aggregate_id, payload, created, prev_hash, digest = row
    return EventRow(seq=seq, type=type_, aggregate_type=aggregate_type,
                    aggregate_id=aggregate_id, payload=load_json(payload), created=created,
                    prev_hash=prev_hash, hash=digest)


class SqlitePaymentStore:
    """Payment intents, attempts, refunds, idempotency keys and the events chain in
    the gateway's SQLite database. The database belongs to the caller."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.write_sync(_create)

    def __repr__(self) -> str:
        return f"SqlitePaymentStore({self._db!r})"

    # -- writes ----------------------------------------------------------------------------
    async def commit(self, change: Change) -> int:
        intent, expected = change.intent, change.expected_version
        if expected is not None:
            _int(expected, "Change.expected_version")
            if intent.version != expected + 1:
                raise ValueError(f"{intent.id}: the new version must be {expected + 1}, "
                                 f"not {intent.version}")
        owners = [(a.id, a.intent_id) for a in change.attempts]
        owners += [(r.id, r.intent_id) for r in change.refunds]
        for record_id, owner in owners:
            if owner != intent.id:
                raise ValueError(f"{record_id} belongs to {owner}, not {intent.id}")
        intent_row = _intent_values(intent)
        attempt_rows = [_attempt_values(a) for a in change.attempts]
        refund_rows = [_refund_values(r) for r in change.refunds]
        events = [(e.type, e.aggregate_type, e.aggregate_id, canonical_json(e.payload),
                   _int(e.created, "Event.created")) for e in change.events]

        def job(conn: sqlite3.Connection) -> int:
            if expected is None:
                if conn.execute("SELECT 1 FROM payment_intents WHERE id = ?",
                                (intent.id,)).fetchone() is not None:
                    raise DuplicateId(intent.id)
                conn.execute(f"INSERT INTO payment_intents ({_INTENT}) "
                             f"VALUES ({', '.join('?' * len(intent_row))})", intent_row)
            else:
                updated = conn.execute(
                    f"UPDATE payment_intents SET {_INTENT_SET} WHERE id = ? AND version = ?",
                    (*intent_row[1:], intent.id, expected)).rowcount
                if updated != 1:
                    found = conn.execute("SELECT version FROM payment_intents WHERE id = ?",
                                         (intent.id,)).fetchone()
                    raise VersionConflict(intent.id, expected,
                                          None if found is None else int(found[0]))
            for row in attempt_rows:
                _write_attempt(conn, row)
            for row in refund_rows:
                if conn.execute(_UPSERT_REFUND, row).rowcount != 1:
                    raise DuplicateId(str(row[0]))
            last = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
                                ).fetchone()
            seq, prev = (0, GENESIS) if last is None else (int(last[0]), str(last[1]))
            chained = []
            for type_, agg_type, agg_id, payload, created in events:
                seq += 1
                digest = chain_hash(prev, seq, type_, agg_type, agg_id, payload, created)
                chained.append((seq, type_, agg_type, agg_id, payload, created, prev, digest))
                prev = digest
            conn.executemany(f"INSERT INTO events ({_EVENT}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                             chained)
            return seq
        return await self._db.write(job)

    # -- reads -----------------------------------------------------------------------------
    async def get_intent(self, intent_id: str) -> PaymentIntent | None:
        def job(conn: sqlite3.Connection) -> PaymentIntent | None:
            row = conn.execute(f"SELECT {_INTENT} FROM payment_intents WHERE id = ?",
                               (intent_id,)).fetchone()
            return None if row is None else _intent(row)
        return await self._db.read(job)

    async def list_intents(self, merchant_id: str, *, status: IntentStatus | None = None,
                           created_gte: int | None = None, created_lt: int | None = None,
                           limit: int = 20, after: str | None = None,
                           ) -> tuple[list[PaymentIntent], bool]:
        if _int(limit, "limit") < 1:
            raise ValueError("limit must be at least 1")
        where: list[str] = ["merchant_id = ?"]
        params: list[object] = [merchant_id]
        if status is not None:
            where.append("status = ?")
            params.append(status.value)
        if created_gte is not None:
            where.append("created >= ?")
            params.append(_int(created_gte, "created_gte"))
        if created_lt is not None:
            where.append("created < ?")
            params.append(_int(created_lt, "created_lt"))

        def job(conn: sqlite3.Connection) -> tuple[list[PaymentIntent], bool]:
            clauses, values = list(where), list(params)
            if after is not None:
                cursor = conn.execute("SELECT created FROM payment_intents "
                                      "WHERE id = ? AND merchant_id = ?",
                                      (after, merchant_id)).fetchone()
                if cursor is None:
                    raise InvalidCursor(f"no intent {after!r} for this merchant")
                clauses.append("(created, id) < (?, ?)")
                values.extend((cursor[0], after))
            rows = conn.execute(f"SELECT {_INTENT} FROM payment_intents "
                                f"WHERE {' AND '.join(clauses)} "
                                "ORDER BY created DESC, id DESC LIMIT ?",
                                (*values, limit + 1)).fetchall()
            return [_intent(r) for r in rows[:limit]], len(rows) > limit
        return await self._db.read(job)

    async def get_attempt(self, attempt_id: str) -> Attempt | None:
        def job(conn: sqlite3.Connection) -> Attempt | None:
            row = conn.execute(f"SELECT {_ATTEMPT} FROM attempts WHERE id = ?",
                               (attempt_id,)).fetchone()
            return None if row is None else _attempt(row)
        return await self._db.read(job)

    async def attempts_for_intent(self, intent_id: str) -> list[Attempt]:
        def job(conn: sqlite3.Connection) -> list[Attempt]:
            rows = conn.execute(f"SELECT {_ATTEMPT} FROM attempts WHERE intent_id = ? "
                                "ORDER BY created, rowid", (intent_id,)).fetchall()
            return [_attempt(r) for r in rows]
        return await self._db.read(job)

    async def intent_with_attempts(self, intent_id: str,
                                   ) -> tuple[PaymentIntent, list[Attempt]] | None:
        def job(conn: sqlite3.Connection) -> tuple[PaymentIntent, list[Attempt]] | None:
            conn.execute("BEGIN")   # one snapshot for both reads
            try:
                row = conn.execute(f"SELECT {_INTENT} FROM payment_intents WHERE id = ?",
                                   (intent_id,)).fetchone()
                rows = [] if row is None else conn.execute(
                    f"SELECT {_ATTEMPT} FROM attempts WHERE intent_id = ? "
                    "ORDER BY created, rowid", (intent_id,)).fetchall()
            finally:
                conn.execute("COMMIT")
            return None if row is None else (_intent(row), [_attempt(r) for r in rows])
        return await self._db.read_now(job)

    async def attempts_with_status(self, status: AttemptStatus, kind: AttemptKind | None = None,
                                   limit: int = 100) -> list[Attempt]:
        def job(conn: sqlite3.Connection) -> list[Attempt]:
            if kind is None:
                rows = conn.execute(f"SELECT {_ATTEMPT} FROM attempts WHERE status = ? "
                                    "ORDER BY created, id LIMIT ?",
                                    (status.value, limit)).fetchall()
            else:
                rows = conn.execute(f"SELECT {_ATTEMPT} FROM attempts WHERE status = ? "
                                    "AND kind = ? ORDER BY created, id LIMIT ?",
                                    (status.value, kind.value, limit)).fetchall()
            return [_attempt(r) for r in rows]
        return await self._db.read(job)

    async def attempt_by_trace(self, terminal_id: str, stan: str) -> Attempt | None:
        def job(conn: sqlite3.Connection) -> Attempt | None:
            row = conn.execute(f"SELECT {_ATTEMPT} FROM attempts WHERE terminal_id = ? "
                               "AND stan = ? ORDER BY created DESC, rowid DESC LIMIT 1",
                               (terminal_id, stan)).fetchone()
            return None if row is None else _attempt(row)
        return await self._db.read(job)

    async def get_refund(self, refund_id: str) -> Refund | None:
        def job(conn: sqlite3.Connection) -> Refund | None:
            row = conn.execute(f"SELECT {_REFUND} FROM refunds WHERE id = ?",
                               (refund_id,)).fetchone()
            return None if row is None else _refund(row)
        return await self._db.read(job)

    async def refunds_for_intent(self, intent_id: str) -> list[Refund]:
        def job(conn: sqlite3.Connection) -> list[Refund]:
            rows = conn.execute(f"SELECT {_REFUND} FROM refunds WHERE intent_id = ? "
                                "ORDER BY created, rowid", (intent_id,)).fetchall()
            return [_refund(r) for r in rows]
        return await self._db.read(job)

    # -- idempotency -----------------------------------------------------------------------
    async def claim_idempotency(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        if record.state != "in_progress":
            raise ValueError("a claim is an in_progress record")
        values = (record.scope, record.key, record.fingerprint, record.state,
                  bytes(record.response), _int(record.code, "code"), bytes(record.details),
                  _int(record.created, "created"), _int(record.expires, "expires"))

        def job(conn: sqlite3.Connection) -> IdempotencyRecord | None:
            row = conn.execute(f"SELECT {_IDEM} FROM idempotency_keys "
                               "WHERE scope = ? AND key = ?", (record.scope, record.key)
                               ).fetchone()
            if row is not None:
                existing = _idem(row)
                if existing.expires > record.created:
                    return existing
            conn.execute(f"INSERT OR REPLACE INTO idempotency_keys ({_IDEM}) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", values)
            return None
        return await self._db.write(job)

    async def takeover_idempotency(self, record: IdempotencyRecord,
                                   older_than: int) -> IdempotencyRecord | None:
        if record.state != "in_progress":
            raise ValueError("a takeover claims with an in_progress record")
        _int(older_than, "older_than")
        values = (_int(record.created, "created"), record.scope, record.key)

        def job(conn: sqlite3.Connection) -> IdempotencyRecord | None:
            row = conn.execute(f"SELECT {_IDEM} FROM idempotency_keys "
                               "WHERE scope = ? AND key = ?", (record.scope, record.key)
                               ).fetchone()
            if row is None:
                return None
            stale = _idem(row)
            if (stale.state != "in_progress" or stale.fingerprint != record.fingerprint
                    or stale.created >= older_than or stale.expires <= record.created):
                return None
            # Only the claim's time moves (it is fresh for the lease); ``expires`` keeps
            # counting from the first claim, so the first claim's time is never lost
            # however many takeovers follow (a takeover that dies too re-dates ``created``).
            conn.execute("UPDATE idempotency_keys SET created = ? "
                         "WHERE scope = ? AND key = ?", values)
            first = stale.expires - RETENTION_MS
            return dataclasses.replace(stale, created=min(stale.created, first))
        return await self._db.write(job)

    async def complete_idempotency(self, scope: str, key: str, response: bytes, code: int,
                                   details: bytes, claimed_at: int | None = None) -> bool:
        values = (bytes(response), _int(code, "code"), bytes(details), scope, key,
                  claimed_at, claimed_at)

        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute("UPDATE idempotency_keys SET state = 'done', response = ?, "
                                "code = ?, details = ? WHERE scope = ? AND key = ? "
                                "AND state = 'in_progress' AND (? IS NULL OR created = ?)",
                                values).rowcount == 1
        return await self._db.write(job)

    async def release_idempotency(self, scope: str, key: str,
                                  claimed_at: int | None = None) -> bool:
        def job(conn: sqlite3.Connection) -> bool:
            return conn.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? "
                                "AND state = 'in_progress' AND (? IS NULL OR created = ?)",
                                (scope, key, claimed_at, claimed_at)).rowcount == 1
        return await self._db.write(job)

    async def purge_idempotency(self, now: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM idempotency_keys WHERE expires <= ?",
                                (now,)).rowcount
        return await self._db.write(job)

    # -- events ----------------------------------------------------------------------------
    async def events_after(self, seq: int, limit: int = 1000) -> list[EventRow]:
        def job(conn: sqlite3.Connection) -> list[EventRow]:
            rows = conn.execute(f"SELECT {_EVENT} FROM events WHERE seq > ? ORDER BY seq "
                                "LIMIT ?", (seq, limit)).fetchall()
            return [_event(r) for r in rows]
        return await self._db.read(job)

    async def events_of_types(self, seq: int, window: int, types: Collection[str],
                              ) -> tuple[list[EventRow], int]:
        wanted = sorted(set(types))
        marks = ", ".join("?" * len(wanted))

        def job(conn: sqlite3.Connection) -> tuple[list[EventRow], int]:
            conn.execute("BEGIN")   # the rows and the window's end from one snapshot
            try:
                end = conn.execute("SELECT max(seq) FROM events WHERE seq > ? AND seq <= ?",
                                   (seq, seq + window)).fetchone()[0]
                rows = [] if end is None or not wanted else conn.execute(
                    f"SELECT {_EVENT} FROM events WHERE seq > ? AND seq <= ? "
                    f"AND type IN ({marks}) ORDER BY seq", (seq, end, *wanted)).fetchall()
            finally:
                conn.execute("COMMIT")
            return [_event(r) for r in rows], seq if end is None else int(end)
        return await self._db.read(job)

    async def last_event(self) -> EventRow | None:
        def job(conn: sqlite3.Connection) -> EventRow | None:
            row = conn.execute(f"SELECT {_EVENT} FROM events ORDER BY seq DESC LIMIT 1"
                               ).fetchone()
            return None if row is None else _event(row)
        return await self._db.read(job)

    def close(self) -> None:
        """Nothing to release: the ``SqliteDatabase`` is the caller's to close."""


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)
