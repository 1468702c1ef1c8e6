"""The payments service: the state machine's decisions carried out against the
store, the vault and the card network. This is the I/O edge of the domain.

The one rule it exists to keep is **record before send**: every network
attempt is committed (row + event, fsync) before its message is written to the
socket, and its outcome is committed before the caller is answered. A reply
that does not come in time leaves the attempt ``unknown`` and the intent
``processing``: the caller is told exactly that, never "failed", and the
reconciler takes it from there.

Calls on one intent are serialised in this process (a lock per intent); the
store's version check refuses a change made on a stale read from any other
process.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import structlog

from gateway import metrics
from gateway.merchants import MerchantDirectory
from gateway.network import NetworkClient, NotSent, OutcomeUnknown, Trace, TraceAllocator
from gateway.payments import machine, messages, release
from gateway.payments.errors import DomainError
from gateway.payments.machine import Declined, Outcome, Unknown
from gateway.payments.messages import Acceptor
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    Change,
    IntentStatus,
    PaymentIntent,
    Refund,
    new_id,
)
from gateway.payments.store import PaymentStore
from gateway.vault import TokenNotFound, Vault

log = structlog.get_logger("gateway.payments")
Ids = Callable[[str], str]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class IntentFeed:
    """In-process fan-out of intent changes to ``WatchPaymentIntent`` streams."""

    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Queue[PaymentIntent]]] = defaultdict(set)

    def publish(self, intent: PaymentIntent) -> None:
        for queue in self._watchers.get(intent.id, ()):
            queue.put_nowait(intent)

    @asynccontextmanager
    async def subscribe(self, intent_id: str) -> AsyncIterator[asyncio.Queue[PaymentIntent]]:
        queue: asyncio.Queue[PaymentIntent] = asyncio.Queue()
        self._watchers[intent_id].add(queue)
        try:
            yield queue
        finally:
            watchers = self._watchers.get(intent_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    del self._watchers[intent_id]


class IntentLocks:
    """One asyncio lock per intent id, dropped when nobody holds or waits for it (shared
    with the reconciler when both run in one process: ``PaymentService.locks``)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, intent_id: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(intent_id, (asyncio.Lock(), 0))
        self._locks[intent_id] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[intent_id]
            if users == 1:
                del self._locks[intent_id]
            else:
                self._locks[intent_id] = (lock, users - 1)


def _with_intent_id(ids: Ids, intent_id: str) -> Ids:
    """``ids``, except that the intent's id is ``intent_id``."""
    def pick(prefix: str) -> str:
        return intent_id if prefix == "pi" else ids(prefix)
    return pick


def _with_request(change: Change, attempt_id: str, doc: Mapping[str, str]) -> Change:
    """The change with the message about to be sent stored on its attempt (card data
    stripped: the PAN, expiry, tracks, PIN block and chip data never reach the store)."""
    stored = {k: v for k, v in doc.items() if k not in machine.CARD_DATA_FIELDS}
    attempts = tuple(dataclasses.replace(a, request=stored) if a.id == attempt_id else a
                     for a in change.attempts)
    return dataclasses.replace(change, attempts=attempts)


def _merged(first: Change, then: Change) -> Change:
    """Two consecutive decisions on one intent as one atomic change (one version step)."""
    intent = dataclasses.replace(then.intent, version=first.intent.version)
    return Change(intent=intent, expected_version=first.expected_version,
                  attempts=first.attempts + then.attempts, refunds=first.refunds + then.refunds,
                  events=first.events + then.events)


def _new_attempt(change: Change, kind: AttemptKind) -> Attempt | None:
    for attempt in change.attempts:
        if attempt.kind is kind and attempt.status is AttemptStatus.RECORDED:
            return attempt
    return None


class PaymentService:
    """Create, confirm, capture, cancel and refund payment intents for merchants."""

    def __init__(self, store: PaymentStore, vault: Vault, network: NetworkClient,
                 trace: TraceAllocator, merchants: MerchantDirectory, *, acquirer_id: str,
                 clock: Callable[[], int] = _now_ms, ids: Ids = new_id,
                 feed: IntentFeed | None = None, locks: IntentLocks | None = None) -> None:
        self._store = store
        self._vault = vault
        self._network = network
        self._trace = trace
        self._merchants = merchants
        self._acquirer_id = acquirer_id
        self._clock = clock
        self._ids = ids
        self.feed = feed or IntentFeed()
        self._locks = locks if locks is not None else IntentLocks()

    @property
    def locks(self) -> IntentLocks:
        """The per-intent locks: whoever else changes intents in this process takes them."""
        return self._locks

    # -- helpers ---------------------------------------------------------------------
    def _acceptor(self, merchant_id: str) -> Acceptor:
        merchant = self._merchants.get(merchant_id)
        if merchant is None:
            raise DomainError("INVALID_ARGUMENT", "merchant_invalid", "unknown merchant_id")
        return Acceptor(self._acquirer_id, merchant.card_acceptor_id, merchant.mcc)

    async def _allocate(self) -> Trace:
        # From the STAN store's durable block; reserving a new block (a commit and its
        # fsync) runs in a thread, off the event loop.
        return await self._trace.allocate_async()

    async def _commit(self, change: Change) -> PaymentIntent:
        await self._store.commit(change)
        self.feed.publish(change.intent)
        return change.intent

    async def _owned(self, merchant_id: str, intent_id: str) -> PaymentIntent:
        intent = await self._store.get_intent(intent_id)
        if intent is None or intent.merchant_id != merchant_id:
            raise DomainError("NOT_FOUND", "payment_intent_not_found",
                              "no such payment intent", {"id": intent_id[:64]})
        return intent

    async def _authorization(self, intent: PaymentIntent) -> Attempt:
        approved = [a for a in await self._store.attempts_for_intent(intent.id)
                    if a.kind is AttemptKind.AUTHORIZATION and a.status is AttemptStatus.APPROVED]
        if not approved:
            raise DomainError("FAILED_PRECONDITION", "intent_unexpected_state",
                              "the payment intent has no approved authorization",
                              {"status": intent.status.value})
        return max(approved, key=lambda a: a.created)

    async def _exchange(self, doc: Mapping[str, str]) -> Outcome:
        """Send one request; an answer is an outcome, silence is Unknown."""
        try:
            reply = await self._network.request(doc)
        except OutcomeUnknown:
            log.warning("network_outcome_unknown", mti=doc.get("t"), stan=doc.get("11"))
            return Unknown()
        except NotSent:
            log.warning("network_not_sent", mti=doc.get("t"), stan=doc.get("11"))
            return Declined(messages.NOT_SENT)
        return messages.outcome(reply)

    async def _record_and_send(
            self, change: Change, kind: AttemptKind,
            build: Callable[[Attempt], dict[str, str]]) -> tuple[PaymentIntent, Attempt, Outcome]:
        """Attach the message to the attempt the change records, commit (durable), send."""
        attempt = _new_attempt(change, kind)
        if attempt is None:
            raise AssertionError(f"the change records no {kind} attempt")
        doc = build(attempt)
        change = _with_request(change, attempt.id, doc)
        intent = await self._commit(change)
        recorded = next(a for a in change.attempts if a.id == attempt.id)
        outcome = await self._exchange(doc)
        metrics.count_attempt(kind.value, type(outcome).__name__.lower(),
                              getattr(outcome, "code", ""))
        return intent, recorded, outcome

    # -- commands ---------------------------------------------------------------------
    async def create_intent(self, merchant_id: str, amount: int, currency: str,
                            capture_method: str, description: str = "",
                            metadata: Mapping[str, str] | None = None, *,
                            intent_id: str | None = None) -> PaymentIntent:
        """A new intent; ``intent_id`` sets its id (an idempotent create's, derived from
        its claim: ``gateway.payments.replay.claim_intent_id``), else a random one."""
        if self._merchants.get(merchant_id) is None:
            raise DomainError("INVALID_ARGUMENT", "merchant_invalid", "unknown merchant_id")
        ids = self._ids if intent_id is None else _with_intent_id(self._ids, intent_id)
        change = machine.create_intent(merchant_id, amount, currency, capture_method,
                                       description, metadata, self._clock(), ids)
        return await self._commit(change)

    async def confirm(self, merchant_id: str, intent_id: str, token: str) -> PaymentIntent:
        """Authorize the intent with a vault token (and capture it, if automatic)."""
        async with self._locks.hold(intent_id):
            intent = await self._owned(merchant_id, intent_id)
            machine.require_status(intent, IntentStatus.REQUIRES_PAYMENT_METHOD)
            try:
                card = await self._vault.detokenize_for_network(merchant_id, token)
            except TokenNotFound:
                raise DomainError("INVALID_ARGUMENT", "payment_method_invalid",
                                  "no such card token for this merchant") from None
            trace = await self._allocate()
            acceptor = self._acceptor(merchant_id)
            change = machine.confirm(intent, token, trace, self._clock(), self._ids)
            intent, attempt, outcome = await self._record_and_send(
                change, AttemptKind.AUTHORIZATION,
                lambda a: messages.authorization(a, card.card, trace, acceptor, card.cvc))
            capture_trace = None
            if isinstance(outcome, machine.Approved) and intent.capture_method == "automatic":
                capture_trace = await self._allocate()
            change = machine.authorization_outcome(intent, attempt, outcome, self._clock(),
                                                   self._ids, capture_trace=capture_trace)
            if capture_trace is None:
                return await self._commit(change)
            settled = next(a for a in change.attempts if a.id == attempt.id)
            intent, capture, outcome = await self._record_and_send(
                change, AttemptKind.CAPTURE,
                lambda a: messages.capture(a, settled, capture_trace, acceptor))
            return await self._commit(machine.capture_outcome(
                intent, settled, capture, outcome, self._clock(), self._ids))

    async def capture(self, merchant_id: str, intent_id: str,
                      amount_to_capture: int) -> PaymentIntent:
        async with self._locks.hold(intent_id):
            intent = await self._owned(merchant_id, intent_id)
            machine.require_status(intent, IntentStatus.REQUIRES_CAPTURE)
            auth = await self._authorization(intent)
            trace = await self._allocate()
            acceptor = self._acceptor(merchant_id)
            change = machine.capture(intent, auth, amount_to_capture, trace, self._clock(),
                                     self._ids)
            intent, attempt, outcome = await self._record_and_send(
                change, AttemptKind.CAPTURE, lambda a: messages.capture(a, auth, trace, acceptor))
            captured = machine.capture_outcome(intent, auth, attempt, outcome, self._clock(),
                                               self._ids)
            if release.remainder(captured.intent, auth) == 0:
                return await self._commit(captured)
            return await self._release_rest(captured, auth, acceptor)

    async def _release_rest(self, captured: Change, auth: Attempt,
                            acceptor: Acceptor) -> PaymentIntent:
        """After a partial capture, give the rest of the hold back (0400 of the remainder).

        The release is recorded in the same commit as the capture's outcome, so no crash
        can leave a succeeded intent whose remainder nobody will release.
        """
        trace = await self._allocate()
        change = release.release(captured.intent, auth, trace, self._clock(), self._ids)
        if change is None:
            return await self._commit(captured)
        change = _merged(captured, change)
        intent, attempt, outcome = await self._record_and_send(
            change, AttemptKind.RELEASE, lambda a: messages.void(a, auth, trace, acceptor))
        if isinstance(outcome, Declined) and outcome.code == messages.NOT_SENT:
            # Never left: unknown, so that the reconciler repeats it (0401) until answered;
            # settled declined, the rest of the hold would stay on at the network for good.
            outcome = Unknown()
        return await self._commit(release.release_outcome(intent, attempt, outcome,
                                                          self._clock()))

    async def cancel(self, merchant_id: str, intent_id: str, reason: str) -> PaymentIntent:
        async with self._locks.hold(intent_id):
            intent = await self._owned(merchant_id, intent_id)
            if intent.status is not IntentStatus.REQUIRES_CAPTURE:
                return await self._commit(machine.cancel(intent, None, reason, None,
                                                         self._clock(), self._ids))
            auth = await self._authorization(intent)
            trace = await self._allocate()
            acceptor = self._acceptor(merchant_id)
            change = machine.cancel(intent, auth, reason, trace, self._clock(), self._ids)
            intent, attempt, outcome = await self._record_and_send(
                change, AttemptKind.VOID, lambda a: messages.void(a, auth, trace, acceptor))
            return await self._commit(machine.void_outcome(
                intent, auth, attempt, outcome, self._clock(), self._ids))

    async def create_refund(self, merchant_id: str, intent_id: str, amount: int,
                            reason: str = "") -> Refund:
        async with self._locks.hold(intent_id):
            intent = await self._owned(merchant_id, intent_id)
            machine.require_status(intent, IntentStatus.SUCCEEDED)
            auth = await self._authorization(intent)
            refunds = await self._store.refunds_for_intent(intent.id)
            trace = await self._allocate()
            acceptor = self._acceptor(merchant_id)
            change = machine.refund(intent, auth, refunds, amount, reason, trace,
                                    self._clock(), self._ids)
            record = change.refunds[0]
            intent, attempt, outcome = await self._record_and_send(
                change, AttemptKind.REFUND, lambda a: messages.refund(a, auth, trace, acceptor))
            done = machine.refund_outcome(intent, record, attempt, outcome, self._clock(),
                                          self._ids)
            await self._commit(done)
            return done.refunds[0] if done.refunds else record

    # -- queries ----------------------------------------------------------------------
    async def get_intent(self, merchant_id: str, intent_id: str) -> PaymentIntent:
        return await self._owned(merchant_id, intent_id)

    async def list_intents(self, merchant_id: str, *, status: IntentStatus | None = None,
                           created_gte: int | None = None, created_lt: int | None = None,
                           limit: int = 20,
                           after: str | None = None) -> tuple[list[PaymentIntent], bool]:
        return await self._store.list_intents(merchant_id, status=status,
                                              created_gte=created_gte, created_lt=created_lt,
                                              limit=limit, after=after)

    async def get_refund(self, merchant_id: str, refund_id: str) -> Refund:
        record = await self._store.get_refund(refund_id)
        if record is not None:
            intent = await self._store.get_intent(record.intent_id)
            if intent is not None and intent.merchant_id == merchant_id:
                return record
        raise DomainError("NOT_FOUND", "refund_not_found", "no such refund",
                          {"id": refund_id[:64]})

    async def watch(self, merchant_id: str, intent_id: str) -> AsyncIterator[PaymentIntent]:
        """The intent now, then every change to it, until the caller stops listening."""
        async with self.feed.subscribe(intent_id) as queue:
            current = await self._owned(merchant_id, intent_id)
            yield current
            last = current.version
            while True:
                intent = await queue.get()
                if intent.version > last:
                    last = intent.version
                    yield intent
