"""Where payments live: the engine-agnostic store interface and the types it uses.

A :class:`PaymentStore` persists what the state machine decides: one
:class:`~gateway.payments.model.Change` is written in one transaction (the
intent under an optimistic version check, its attempts and refunds, and its
events, numbered and hash-chained). It also keeps the idempotency records and
serves the outbox (``events_after``). ``sqlite_store.SqlitePaymentStore`` is
the SQLite engine; the same tables carry over to PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Protocol

from gateway.payments.idempotency import IdempotencyRecord
from gateway.payments.idempotency import RecordState as IdempotencyState
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    Change,
    IntentStatus,
    PaymentIntent,
    Refund,
)

__all__ = [
    "DuplicateId",
    "EventRow",
    "IdempotencyRecord",
    "IdempotencyState",
    "InvalidCursor",
    "PaymentStore",
    "VersionConflict",
]


class VersionConflict(Exception):
    """The stored intent's version is not the one the change was decided on."""

    def __init__(self, intent_id: str, expected: int, actual: int | None) -> None:
        found = "no such intent" if actual is None else f"found version {actual}"
        super().__init__(f"{intent_id}: expected version {expected}, {found}")
        self.intent_id = intent_id
        self.expected = expected
        self.actual = actual


class DuplicateId(Exception):
    """A new record's id is already taken (by an intent, or an attempt/refund of
    another intent)."""

    def __init__(self, record_id: str) -> None:
        super().__init__(f"{record_id} already exists")
        self.record_id = record_id


class InvalidCursor(ValueError):
    """``after`` names no intent of this merchant."""


@dataclass(frozen=True)
class EventRow:
    """One stored event: numbered (``seq``) and chained (``prev_hash``, ``hash``)."""

    seq: int
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: dict[str, object]
    created: int
    prev_hash: str
    hash: str


class PaymentStore(Protocol):
    """What the payments service needs from a store."""

    async def commit(self, change: Change) -> int:
        """Write ``change`` atomically and return the seq of its last event (the
        last seq in the store if it has none).

        The intent is inserted when ``expected_version`` is ``None`` (raises
        :class:`DuplicateId` if the id exists), else updated only if the stored
        version equals ``expected_version`` (raises :class:`VersionConflict`);
        its new ``version`` must be ``expected_version + 1``. Attempts and refunds
        (all of this intent) are upserted by id; events are appended. On any
        error nothing of the change is written."""
        ...

    async def get_intent(self, intent_id: str) -> PaymentIntent | None:
        """The intent, or ``None``."""
        ...

    async def list_intents(self, merchant_id: str, *, status: IntentStatus | None = None,
                           created_gte: int | None = None, created_lt: int | None = None,
                           limit: int = 20, after: str | None = None,
                           ) -> tuple[list[PaymentIntent], bool]:
        """A page of the merchant's intents, newest first by ``(created, id)``,
        starting after the intent ``after`` (the previous page's last id); and
        whether more follow. Raises :class:`InvalidCursor` for an unknown ``after``."""
        ...

    async def get_attempt(self, attempt_id: str) -> Attempt | None:
        """The attempt, or ``None``."""
        ...

    async def attempts_for_intent(self, intent_id: str) -> list[Attempt]:
        """The intent's attempts in the order they were recorded."""
        ...

    async def intent_with_attempts(self, intent_id: str,
                                   ) -> tuple[PaymentIntent, list[Attempt]] | None:
        """The intent and its attempts (as ``attempts_for_intent``) read together, as one
        consistent snapshot; ``None`` without the intent."""
        ...

    async def attempts_with_status(self, status: AttemptStatus, kind: AttemptKind | None = None,
                                   limit: int = 100) -> list[Attempt]:
        """Attempts in ``status`` (and of ``kind``), oldest first (for the reconciler)."""
        ...

    async def attempt_by_trace(self, terminal_id: str, stan: str) -> Attempt | None:
        """The newest attempt sent from ``terminal_id`` with STAN ``stan`` (fields 41 and
        11: how a late reply names its request), or ``None``."""
        ...

    async def get_refund(self, refund_id: str) -> Refund | None:
        """The refund, or ``None``."""
        ...

    async def refunds_for_intent(self, intent_id: str) -> list[Refund]:
        """The intent's refunds in the order they were created."""
        ...

    async def claim_idempotency(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        """Insert ``record`` (``in_progress``) and return ``None``; or, if (scope, key)
        has a record that has not expired at ``record.created``, return that one and
        write nothing. An expired record is replaced."""
        ...

    async def takeover_idempotency(self, record: IdempotencyRecord,
                                   older_than: int) -> IdempotencyRecord | None:
        """Take over a claim left ``in_progress`` by a call that will never finish (its
        process died): if (scope, key) has an ``in_progress`` record of
        ``record.fingerprint``, created before ``older_than`` and not expired at
        ``record.created``, make ``record`` the claim (its ``created`` and ``expires``)
        and return the record it replaced; otherwise write nothing and return ``None``.
        Atomic: of two takeovers of one stale claim, one wins."""
        ...

    async def complete_idempotency(self, scope: str, key: str, response: bytes, code: int,
                                   details: bytes, claimed_at: int | None = None) -> bool:
        """Mark an ``in_progress`` claim ``done`` with the response to replay;
        ``False`` if there was no such claim. With ``claimed_at``, only the claim made at
        that time (a call whose claim was taken over writes nothing)."""
        ...

    async def release_idempotency(self, scope: str, key: str,
                                  claimed_at: int | None = None) -> bool:
        """Delete an ``in_progress`` claim (the request failed before anything durable
        happened); ``False`` if there was none. ``claimed_at`` as for completing."""
        ...

    async def purge_idempotency(self, now: int) -> int:
        """Delete records expired at ``now``; returns how many."""
        ...

    async def events_after(self, seq: int, limit: int = 1000) -> list[EventRow]:
        """Events with a seq above ``seq``, in seq order, at most ``limit``."""
        ...

    async def events_of_types(self, seq: int, window: int, types: Collection[str],
                              ) -> tuple[list[EventRow], int]:
        """The events of ``types`` among the next ``window`` events after ``seq`` (in seq
        order), and the seq of the last event of that window (``seq`` itself when no
        event follows it): a consumer that wants few types reads past the rest without
        loading them, and resumes after the returned seq."""
        ...

    async def last_event(self) -> EventRow | None:
        """The newest event, or ``None`` if there is none."""
        ...

    def close(self) -> None:
        """Release what the store holds (not a database it was handed)."""
        ...
