"""The reconciler's worker: every attempt left ``unknown`` ends in a final state that
agrees with the card network. It carries out ``reconciler.rules``; read its docstring
for the policy (late replies, reversal advices, repeats).

One pass (:meth:`Reconciler.run_once`):

1. on the first pass, queue every attempt the store has ``unknown`` (``queue.sweep``);
2. settle as ``unknown`` the attempts left ``recorded`` for longer than
   ``stale_after`` (their process died between record and reply); their
   ``attempt.unknown`` events are then ingested like any other;
3. ingest the outbox after the checkpoint (``queue.ingest``);
4. for each due entry, under the same per-intent lock as the payments service:

   * unknown **authorization**: record a reversal try (0420 first, 0421 after),
     durable before it is sent, send it, apply the 0430 (``rules.reversal_outcome``).
     Acknowledged: done; otherwise the entry is due again after a capped exponential
     backoff with jitter (:class:`Backoff`);
   * unknown **capture, void, release, refund**: record the repeat (an
     ``attempt.repeated`` event), send it (0221, 0401, 0201) and settle the original
     attempt with its answer through the state machine; no answer: backoff.

Late replies (:meth:`Reconciler.on_late_response`, the network client's
``on_late_response``): a late 0110 is the authorization's outcome only while no
reversal try is recorded (``rules.late_reply_accepted``); after that *the reversal
wins* and the reply is ignored. A late approval of an **automatic-capture** intent is
captured at once, as the payments service would have (the 0220 is recorded, then
sent; if its reply is lost, the capture is queued like any unknown capture). Late
0230 / 0410 / 0210 / 0430 settle their attempt if it still waits for an outcome.

A network request that was **not sent** (no connection, no slot) is not an answer:
a repeat stays unknown and is tried again; a reversal try is recorded as declined
``91`` (it never left) and another follows.

Every commit that meets a :class:`~gateway.payments.store.VersionConflict` (another
process changed the intent) re-reads and decides again. Nothing here logs card data:
replies are named by MTI, terminal and STAN only.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Mapping
from typing import Final

import structlog

from codec import dialect
from gateway import metrics
from gateway.merchants import MerchantDirectory
from gateway.network import NetworkClient, NotSent, OutcomeUnknown, Trace, TraceAllocator
from gateway.payments import machine, messages, money, release
from gateway.payments.errors import DomainError
from gateway.payments.machine import Approved, Declined, Outcome, Unknown
from gateway.payments.messages import Acceptor
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    CaptureMethod,
    Change,
    PaymentIntent,
    new_id,
)
from gateway.payments.service import IntentFeed, IntentLocks, _with_request
from gateway.payments.store import PaymentStore, VersionConflict
from reconciler import rules
from reconciler.queue import QueueEntry, ReconcilerQueue
from reconciler.support import Backoff, LateReplies, PassResult, Stats

__all__ = ["Backoff", "LateReplies", "PassResult", "Reconciler", "Stats"]

log = structlog.get_logger("reconciler")
Ids = Callable[[str], str]

#: How often one decision is retried after a VersionConflict before the pass gives up.
_CONFLICT_RETRIES: Final = 8
#: Which attempt kinds a late reply of each MTI can answer.
_LATE_KINDS: Final[Mapping[str, frozenset[AttemptKind]]] = {
    "0110": frozenset({AttemptKind.AUTHORIZATION}),
    "0230": frozenset({AttemptKind.CAPTURE}),
    "0410": frozenset({AttemptKind.VOID, AttemptKind.RELEASE}),
    "0210": frozenset({AttemptKind.REFUND}),
    "0430": frozenset({AttemptKind.TIMEOUT_REVERSAL}),
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pending(change: Change, kind: AttemptKind) -> Attempt | None:
    return next((a for a in change.attempts
                 if a.kind is kind and a.status is AttemptStatus.RECORDED), None)


def _merged(attempts: list[Attempt], change: Change) -> list[Attempt]:
    """``attempts`` as they are once ``change`` is committed (upserted by id)."""
    new = {a.id: a for a in change.attempts}
    merged = [new.pop(a.id, a) for a in attempts]
    return merged + list(new.values())


def _describe(outcome: Outcome | None) -> str:
    if outcome is None:
        return "not sent"
    if isinstance(outcome, Unknown):
        return "no reply"
    return f"answered {outcome.code}"


class Reconciler:
    """Resolves unknown attempts from the durable queue; see the module docstring."""

    def __init__(self, store: PaymentStore, queue: ReconcilerQueue, network: NetworkClient,
                 trace: TraceAllocator, merchants: MerchantDirectory, *, acquirer_id: str,
                 clock: Callable[[], int] = _now_ms, backoff: Backoff | None = None,
                 locks: IntentLocks | None = None, feed: IntentFeed | None = None,
                 ids: Ids = new_id, stale_after: float = 30.0, batch: int = 2000,
                 concurrency: int = 128, rng: random.Random | None = None) -> None:
        if batch < 1 or concurrency < 1 or stale_after < 0:
            raise ValueError("batch and concurrency must be positive, stale_after >= 0")
        self._store = store
        self.queue = queue
        self._network = network
        self._trace = trace
        self._merchants = merchants
        self._acquirer_id = acquirer_id
        self._clock = clock
        self._backoff = backoff or Backoff()
        self._locks = locks if locks is not None else IntentLocks()
        self._feed = feed
        self._ids = ids
        self._stale_after_ms = int(stale_after * 1000)
        self._batch = batch
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = rng or random.Random()
        self._swept = False
        self.stats = Stats()

    # -- the loop ------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event, interval: float = 0.5) -> None:
        """Pass after pass until ``stop`` is set; a full batch is followed at once."""
        while not stop.is_set():
            busy = False
            try:
                result = await self.run_once()
                busy = result.due >= self._batch
            except Exception as exc:   # a failing pass must not end the worker
                log.error("reconciler pass failed", error=type(exc).__name__,
                          reason=str(exc)[:200])
            if not busy:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(interval):
                        await stop.wait()

    async def run_once(self) -> PassResult:
        """Sweep (first pass), mark stale attempts, ingest, then work the due entries."""
        now = self._clock()
        if not self._swept:
            await self.queue.sweep(self._store, now)
            self._swept = True
        await self._mark_stale(now)
        ingested = await self.queue.ingest(self._store, now)
        due = await self.queue.due(self._clock(), self._batch)
        results = await asyncio.gather(*(self._guarded(entry) for entry in due))
        # Resolved entries leave the queue together. Dropping one is idempotent and
        # needs no ordering with the outcome's commit: an entry still queued whose
        # attempt is final is simply done again on the next pass.
        done = [entry.attempt_id for entry, resolved in zip(due, results, strict=True)
                if resolved]
        if done:
            await self.queue.done_many(done)
        self.stats.resolved += len(done)
        self.stats.queued = await self.queue.size()
        return PassResult(ingested, len(due), len(done), len(due) - len(done))

    async def _guarded(self, entry: QueueEntry) -> bool:
        async with self._slots:
            try:
                resolved, error = await self._resolve(entry)
            except Exception as exc:
                log.error("reconciling an attempt failed", attempt=entry.attempt_id,
                          kind=entry.kind.value, error=type(exc).__name__,
                          reason=str(exc)[:200])
                resolved, error = False, type(exc).__name__
            try:
                if not resolved:
                    now = self._clock()
                    delay = self._backoff.delay(entry.tries + 1, self._rng)
                    await self.queue.reschedule(entry.attempt_id, now + int(delay * 1000),
                                                error, now)
                    self.stats.rescheduled += 1
                    log.info("attempt still unresolved", attempt=entry.attempt_id,
                             kind=entry.kind.value, tries=entry.tries + 1, error=error,
                             retry_in=round(delay, 3))
            except Exception as exc:
                log.error("queue update failed", attempt=entry.attempt_id,
                          error=type(exc).__name__)
            return resolved

    async def _resolve(self, entry: QueueEntry) -> tuple[bool, str]:
        async with self._locks.hold(entry.intent_id):
            state = await self._store.intent_with_attempts(entry.intent_id)
            attempt = None if state is None else next(
                (a for a in state[1] if a.id == entry.attempt_id), None)
            if (attempt is not None and attempt.kind is AttemptKind.CAPTURE
                    and attempt.status is AttemptStatus.APPROVED):
                await self._after_capture(attempt, Approved())   # idempotent
                return True, ""
            if attempt is None or attempt.status is not AttemptStatus.UNKNOWN:
                return True, ""
            if attempt.kind is AttemptKind.AUTHORIZATION and state is not None:
                return await self._reverse(attempt, state)
            if attempt.kind in rules.REPEAT_MTI:
                return await self._repeat(attempt, entry.tries + 1)
            log.error("unknown attempt of a kind the reconciler does not resolve",
                      attempt=attempt.id, kind=attempt.kind.value)
            return True, ""

    # -- unknown authorizations: reversal advice -----------------------------------------
    async def _reverse(self, auth: Attempt,
                       state: tuple[PaymentIntent, list[Attempt]]) -> tuple[bool, str]:
        """One reversal try for ``auth`` (the caller holds the intent's lock and read
        ``state``, the intent and its attempts; a retry reads them again)."""
        known: tuple[PaymentIntent, list[Attempt]] | None = state
        for _ in range(_CONFLICT_RETRIES):
            intent, attempts = known or await self._state(auth.intent_id)
            known = None
            auth = next(a for a in attempts if a.id == auth.id)
            if not rules.needs_reversal(auth, attempts):
                return True, ""
            tries = rules.reversals_of(auth, attempts)
            stale = [t for t in tries if t.status is AttemptStatus.RECORDED]
            if stale:   # recorded, then the process died: the try may or may not have left
                for attempt in stale:
                    await self._settle(attempt.id, Unknown())
                continue
            if auth.terminal_id != self._trace.terminal_id:
                return False, f"authorized from terminal {auth.terminal_id}, not ours"
            trace = await self._trace.allocate_async()
            change = rules.timeout_reversal(intent, auth, trace, self._clock(), self._ids)
            reversal = change.attempts[0]
            doc = self._advice(intent, auth, trace, first=not tries)
            change = _with_request(change, reversal.id, doc)
            try:
                await self._commit(change)
            except VersionConflict:
                continue
            break
        else:
            return False, "version conflicts"
        self.stats.reversal_tries += 1
        outcome = await self._exchange(doc)
        metrics.count_attempt(AttemptKind.TIMEOUT_REVERSAL.value,
                              type(outcome).__name__.lower(), getattr(outcome, "code", ""))
        # We hold the lock, so the state is what our commit left, unless another process
        # wrote meanwhile: then the commit below meets a VersionConflict and re-reads.
        settled = await self._settle(reversal.id, outcome or Declined(messages.NOT_SENT),
                                     known=(change.intent, _merged(attempts, change)))
        current = (next((a for a in settled.attempts if a.id == auth.id), None)
                   if settled is not None else None) or await self._store.get_attempt(auth.id)
        if current is not None and current.status is not AttemptStatus.UNKNOWN:
            log.info("authorization reversed", attempt=auth.id, intent=auth.intent_id,
                     mti=doc["t"], stan=trace.stan, original_stan=auth.stan)
            return True, ""
        return False, f"{doc['t']} {_describe(outcome)}"

    def _advice(self, intent: PaymentIntent, auth: Attempt, trace: Trace, *,
                first: bool) -> dict[str, str]:
        """The 0420 (``first``) or 0421 for ``auth``, from the stored 0100."""
        sent = auth.request
        acceptor = self._acceptor(intent.merchant_id)
        return {
            "t": "0420" if first else "0421",
            "3": sent.get("3", dialect.PURCHASE), "4": sent.get("4", f"{auth.amount:012d}"),
            "7": trace.transmitted, "11": trace.stan, "32": self._acquirer_id,
            "37": sent.get("37", auth.rrn), "41": trace.terminal_id,
            "42": sent.get("42", acceptor.card_acceptor_id),
            "49": sent.get("49", money.numeric_code(auth.currency)),
            "90": dialect.original_data("0100", auth.stan, auth.transmitted,
                                        self._acquirer_id),
        }

    # -- unknown captures, voids, releases, refunds: repeats -----------------------------
    async def _repeat(self, attempt: Attempt, tries: int) -> tuple[bool, str]:
        """One repeat of ``attempt`` (the caller holds the intent's lock)."""
        try:
            doc = rules.repeat_message(attempt)
        except ValueError:
            return False, "no stored message to repeat"
        for _ in range(_CONFLICT_RETRIES):
            intent = await self._intent(attempt.intent_id)
            current = await self._store.get_attempt(attempt.id)
            if current is None or current.status is not AttemptStatus.UNKNOWN:
                return True, ""
            try:
                await self._commit(rules.repeat_recorded(intent, current, tries,
                                                         self._clock()))
            except VersionConflict:
                continue
            break
        else:
            return False, "version conflicts"
        self.stats.repeats += 1
        outcome = await self._exchange(doc)
        metrics.count_attempt(attempt.kind.value, type(outcome).__name__.lower(),
                              getattr(outcome, "code", ""))
        if outcome is None or isinstance(outcome, Unknown):
            return False, f"{doc['t']} {_describe(outcome)}"
        await self._settle(attempt.id, outcome)
        await self._after_capture(attempt, outcome)
        current = await self._store.get_attempt(attempt.id)
        if current is not None and current.status is not AttemptStatus.UNKNOWN:
            log.info("attempt resolved by a repeat", attempt=attempt.id,
                     kind=attempt.kind.value, mti=doc["t"], stan=attempt.stan,
                     code=getattr(outcome, "code", ""))
            return True, ""
        return False, f"{doc['t']} {_describe(outcome)} did not apply"

    # -- attempts left recorded -----------------------------------------------------------
    async def _mark_stale(self, now: int) -> None:
        """Attempts ``recorded`` for longer than ``stale_after`` got no outcome: the process
        that sent them is gone. Settle them ``unknown`` (their event queues them)."""
        cutoff = now - self._stale_after_ms
        recorded = await self._store.attempts_with_status(AttemptStatus.RECORDED,
                                                          limit=self._batch)
        for attempt in recorded:
            if attempt.created >= cutoff:
                break
            async with self._locks.hold(attempt.intent_id):
                current = await self._store.get_attempt(attempt.id)
                if current is None or current.status is not AttemptStatus.RECORDED:
                    continue
                log.warning("attempt left recorded: now unknown", attempt=attempt.id,
                            kind=attempt.kind.value, stan=attempt.stan)
                await self._settle(attempt.id, Unknown())
                self.stats.stale_marked += 1

    # -- late replies ----------------------------------------------------------------------
    async def on_late_response(self, doc: dict[str, str]) -> None:
        """A reply that came after its request's deadline (``NetworkClient`` hook)."""
        mti = doc.get("t", "")
        terminal, stan = dialect.match_key(doc)
        kinds = _LATE_KINDS.get(mti)
        if kinds is None:
            log.info("late reply of no interest", mti=mti, terminal=terminal, stan=stan)
            return
        found = await self._store.attempt_by_trace(terminal, stan)
        # Field 7 of a reply is the network's own time; field 37 is the request's.
        if (found is None or found.kind not in kinds
                or doc.get("37", "") != found.request.get("37", doc.get("37", ""))):
            log.warning("late reply matches no attempt", mti=mti, terminal=terminal, stan=stan)
            return
        outcome = messages.outcome(doc)
        if isinstance(outcome, Unknown):  # no field 39 (or 38 on an approval): no answer
            log.warning("late reply without a usable outcome ignored", mti=mti,
                        terminal=terminal, stan=stan)
            return
        async with self._locks.hold(found.intent_id):
            attempt = await self._store.get_attempt(found.id)
            if attempt is None:
                return
            attempts = await self._store.attempts_for_intent(attempt.intent_id)
            if attempt.kind is AttemptKind.AUTHORIZATION:
                accepted = rules.late_reply_accepted(attempt, attempts)
            else:
                accepted = attempt.status in (AttemptStatus.UNKNOWN, AttemptStatus.RECORDED)
            if not accepted:
                self.stats.late_ignored += 1
                if (attempt.kind is AttemptKind.AUTHORIZATION
                        and rules.reversals_of(attempt, attempts)):
                    log.info("late reply ignored, the reversal wins", mti=mti,
                             terminal=terminal, stan=stan, attempt=attempt.id)
                else:
                    log.info("late reply ignored: the attempt is final", mti=mti,
                             terminal=terminal, stan=stan, attempt=attempt.id,
                             status=attempt.status.value)
                return
            change = await self._settle(attempt.id, outcome)
            if change is None:
                return
            log.info("late reply accepted", mti=mti, terminal=terminal, stan=stan,
                     attempt=attempt.id, code=getattr(outcome, "code", ""))
            capture = _pending(change, AttemptKind.CAPTURE)
            if capture is not None:
                await self._send_capture(capture)
            await self._after_capture(attempt, outcome)
            self.stats.late_accepted += 1
        settled = attempt.original_attempt_id if (
            attempt.kind is AttemptKind.TIMEOUT_REVERSAL) else attempt.id
        current = await self._store.get_attempt(settled)
        if current is not None and current.status is not AttemptStatus.UNKNOWN:
            await self.queue.done(settled)

    async def _send_capture(self, capture: Attempt) -> None:
        """Send the 0220 that a late approval of an automatic-capture intent recorded."""
        outcome = await self._exchange(capture.request)
        metrics.count_attempt(AttemptKind.CAPTURE.value, type(outcome).__name__.lower(),
                              getattr(outcome, "code", ""))
        await self._settle(capture.id, outcome or Declined(messages.NOT_SENT))
        await self._after_capture(capture, outcome)

    async def _after_capture(self, attempt: Attempt, outcome: Outcome | None) -> None:
        """After an approved capture of less than the hold, give the rest back (0400 of
        the remainder), as the payments service does; once per authorization."""
        if attempt.kind is not AttemptKind.CAPTURE or not isinstance(outcome, Approved):
            return
        for _ in range(_CONFLICT_RETRIES):
            intent = await self._intent(attempt.intent_id)
            attempts = await self._store.attempts_for_intent(intent.id)
            auth = next((a for a in attempts if a.id == attempt.original_attempt_id), None)
            if auth is None or release.remainder(intent, auth) == 0 or any(
                    a.kind is AttemptKind.RELEASE and a.original_attempt_id == auth.id
                    and a.status is not AttemptStatus.DECLINED for a in attempts):
                return
            trace = await self._trace.allocate_async()
            change = release.release(intent, auth, trace, self._clock(), self._ids)
            if change is None:
                return
            rest = change.attempts[0]
            doc = messages.void(rest, auth, trace, self._acceptor(intent.merchant_id))
            try:
                await self._commit(_with_request(change, rest.id, doc))
            except VersionConflict:
                continue
            answer = await self._exchange(doc)
            # Not sent: unknown, so that it is repeated (0401) until the network answers;
            # a release settled declined would leave the rest of the hold on forever.
            await self._settle(rest.id, answer or Unknown())
            return

    # -- settling an attempt through the state machine ------------------------------------
    async def _settle(self, attempt_id: str, outcome: Outcome,
                      known: tuple[PaymentIntent, list[Attempt]] | None = None,
                      ) -> Change | None:
        """Apply ``outcome`` to the attempt and commit, re-deciding on a VersionConflict;
        ``None`` when the machine refuses it (the attempt is final, the intent moved).
        ``known``: the intent and its attempts as the caller last wrote them (under the
        intent's lock), used for the first decision instead of reading them."""
        capture_trace: Trace | None = None
        for _ in range(_CONFLICT_RETRIES):
            attempts: list[Attempt] | None = None
            if known is not None:
                intent, attempts = known
                known = None
                attempt = next((a for a in attempts if a.id == attempt_id), None)
            else:
                attempt = await self._store.get_attempt(attempt_id)
                if attempt is not None:
                    intent = await self._intent(attempt.intent_id)
            if attempt is None:
                return None
            if (capture_trace is None and attempt.kind is AttemptKind.AUTHORIZATION
                    and isinstance(outcome, Approved)
                    and intent.capture_method is CaptureMethod.AUTOMATIC):
                capture_trace = await self._trace.allocate_async()
            try:
                change = await self._decide(intent, attempt, outcome, capture_trace, attempts)
            except (DomainError, ValueError) as exc:
                log.warning("outcome not applied", attempt=attempt_id, kind=attempt.kind.value,
                            status=attempt.status.value, error=type(exc).__name__,
                            reason=str(exc)[:200])
                return None
            try:
                await self._commit(change)
            except VersionConflict:
                continue
            return change
        raise RuntimeError(f"{attempt_id}: the intent kept changing")

    async def _decide(self, intent: PaymentIntent, attempt: Attempt, outcome: Outcome,
                      capture_trace: Trace | None,
                      attempts: list[Attempt] | None = None) -> Change:
        now = self._clock()
        kind = attempt.kind
        if kind is AttemptKind.AUTHORIZATION:
            change = machine.authorization_outcome(intent, attempt, outcome, now, self._ids,
                                                   capture_trace=capture_trace)
            capture = _pending(change, AttemptKind.CAPTURE)
            if capture is None or capture_trace is None:
                return change
            settled = next(a for a in change.attempts if a.id == attempt.id)
            doc = messages.capture(capture, settled, capture_trace,
                                   self._acceptor(intent.merchant_id))
            return _with_request(change, capture.id, doc)
        if kind is AttemptKind.RELEASE:
            return release.release_outcome(intent, attempt, outcome, now)
        if kind is AttemptKind.REFUND:
            refund = await self._store.get_refund(attempt.refund_id)
            if refund is None:
                raise ValueError(f"{attempt.id}: its refund {attempt.refund_id} is missing")
            return machine.refund_outcome(intent, refund, attempt, outcome, now, self._ids)
        if attempts is None:
            attempts = await self._store.attempts_for_intent(intent.id)
        original = next((a for a in attempts if a.id == attempt.original_attempt_id), None)
        if original is None:
            raise ValueError(f"{attempt.id}: its authorization is missing")
        if kind is AttemptKind.TIMEOUT_REVERSAL:
            tries = rules.reversals_of(original, attempts)
            return rules.reversal_outcome(intent, original, attempt, outcome, now, tries)
        if kind is AttemptKind.CAPTURE:
            return machine.capture_outcome(intent, original, attempt, outcome, now, self._ids)
        if kind is AttemptKind.VOID:
            return machine.void_outcome(intent, original, attempt, outcome, now, self._ids)
        raise ValueError(f"no outcome for a {kind} attempt")

    # -- helpers ---------------------------------------------------------------------------
    async def _state(self, intent_id: str) -> tuple[PaymentIntent, list[Attempt]]:
        state = await self._store.intent_with_attempts(intent_id)
        if state is None:
            raise LookupError(f"intent {intent_id} is missing")
        return state

    async def _intent(self, intent_id: str) -> PaymentIntent:
        intent = await self._store.get_intent(intent_id)
        if intent is None:
            raise LookupError(f"intent {intent_id} is missing")
        return intent

    async def _commit(self, change: Change) -> None:
        await self._store.commit(change)
        if self._feed is not None:
            self._feed.publish(change.intent)

    def _acceptor(self, merchant_id: str) -> Acceptor:
        merchant = self._merchants.get(merchant_id)
        if merchant is None:
            raise LookupError(f"merchant {merchant_id} is not configured")
        return Acceptor(self._acquirer_id, merchant.card_acceptor_id, merchant.mcc)

    async def _exchange(self, doc: Mapping[str, str]) -> Outcome | None:
        """Send one request: its answer, Unknown without one, None if it was not sent."""
        try:
            reply = await self._network.request(doc)
        except OutcomeUnknown:
            return Unknown()
        except (NotSent, ValueError) as exc:
            log.warning("reconciler request not sent", mti=doc.get("t"), stan=doc.get("11"),
                        error=type(exc).__name__)
            return None
        return messages.outcome(reply)

