"""Idempotent calls: the stored answer of a mutating RPC, replayed for its key.

The rules are ``gateway.payments.idempotency`` (pure); this module carries them
out against the store. Scope is the caller's identity. A call with a key
claims it (``in_progress``), runs, and stores what it answered: the serialized
response, or, for a definitive refusal (INVALID_ARGUMENT, FAILED_PRECONDITION,
NOT_FOUND, PERMISSION_DENIED), the serialized ``google.rpc.Status``. A
transient failure (UNAVAILABLE, INTERNAL, RESOURCE_EXHAUSTED, ABORTED, or an
unexpected exception) releases the claim so that the retry runs again.

**Claims orphaned by a crash.** A process killed while running a call leaves
its claim ``in_progress`` for good; a retry would be ABORTED
``idempotency_key_in_use`` until the record expires (24 h). So a claim is
*stale*, and the next call with the same key and parameters takes it over
(atomically, :meth:`~gateway.payments.store.PaymentStore.takeover_idempotency`:
one of two racing retries wins, the other is ABORTED), when it was made

* before this process started (:class:`IdempotentCalls` is created once, at
  start-up: a claim older than that belongs to a process that is gone — this
  assumes one gateway process per store, as with the SQLite store); or
* more than ``lease_ms`` ago (default :data:`DEFAULT_LEASE_MS`, 60 s: well over
  twice the longest call, whose network exchange is bounded by the network
  deadline), which also covers several processes sharing a store.

What the lost call did is read from the store, never guessed. Record-before-send
means any message it put on the wire has its attempt row, committed before
sending, so after a takeover (``lost`` is the stale claim):

1. Calls on an existing intent (Confirm, Capture, Cancel, CreateRefund), when
   the caller may see the intent and the lost call recorded something on it: an
   attempt created at or after ``lost.created`` (for CreateRefund: a refund of
   the requested amount — any amount if 0 — created since then) — the call is
   **not run again** (that could put a second message on the wire). The answer
   is the current intent (Confirm, Capture, Cancel; possibly still
   ``processing`` with the attempt ``unknown``: the reconciler's job, exactly
   what the lost call would have answered on a timeout) or that refund.
2. Otherwise nothing of the lost call reached the network, and the call runs
   again. If it is refused FAILED_PRECONDITION ``intent_unexpected_state`` while
   the intent changed after ``lost.created`` (a cancel that needed no network
   message, or another call in between), the intent moved on as asked and the
   answer is the current intent, not the refusal.
3. CreatePaymentIntent: the intent a call creates under a key takes an id
   derived from its claim (:func:`claim_intent_id`: scope, key and the claim's
   time; read by the servicer through :func:`created_id`). So the retry looks the
   lost call's intent up by that id: if it was committed, it is the answer (one
   intent per key, never an orphan left behind); if not, the call runs again.

No double charge either way: besides rule 1, the state machine refuses a second
confirm, capture or cancel of an intent that moved on, and the store's version
check refuses a change decided on a stale read. The answer, whichever rule gave
it, is stored and replayed for the key from then on.

**A caller that goes away** (cancelled, or its deadline passed) does not cut a call
short: every mutating call runs in a task of its own that the caller's cancellation
does not reach (:meth:`IdempotentCalls.run` awaits it through ``asyncio.shield``). A
confirm whose 0100 is on the wire still records the network's answer, and the answer
is stored for the key, so the caller's retry gets it, not a second run.

**A call that fails unexpectedly** (an exception that is not a ``DomainError``: a
bug, a store that failed to commit the outcome) after it recorded something on the
intent releases nothing: what it recorded is read back as in rule 1 (with its own
claim as the lost one), stored for the key and answered to retries (the intent, very
likely ``processing`` with the attempt left for the reconciler), never a
FAILED_PRECONDITION from running it again. The failing call itself still answers
INTERNAL. Without anything recorded, the claim is released and the retry runs again.

What the rules cannot fully cover is taking over a call that is in fact still
running (slower than the lease, or a second process on the same store started
after it): confirm, capture and cancel stay safe through the state machine and
the version check, but a refund could be made twice if the live call records it
between the retry's look at the store and its own run — hence the generous lease.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Final

import grpc
import structlog
from paygate.v1 import payments_pb2

from gateway.payments import convert, idempotency
from gateway.payments.errors import DomainError
from gateway.payments.model import PaymentIntent, new_id
from gateway.payments.store import IdempotencyRecord, PaymentStore

log = structlog.get_logger("gateway.payments.replay")

#: Refusals that are final for these parameters, so they are stored and replayed.
DEFINITIVE: Final = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND",
                               "PERMISSION_DENIED", "OUT_OF_RANGE"})
#: How long a claim may stay ``in_progress`` before another call may take it over.
DEFAULT_LEASE_MS: Final = 60_000
_DETAILS_KEY: Final = "grpc-status-details-bin"
#: Mutating calls on an existing intent: the intent's id from the serialized request.
_ON_INTENT: Final[dict[str, Callable[[bytes], str]]] = {
    "ConfirmPaymentIntent":
        lambda r: str(payments_pb2.ConfirmPaymentIntentRequest.FromString(r).id),
    "CapturePaymentIntent":
        lambda r: str(payments_pb2.CapturePaymentIntentRequest.FromString(r).id),
    "CancelPaymentIntent":
        lambda r: str(payments_pb2.CancelPaymentIntentRequest.FromString(r).id),
}
MaySee = Callable[[str], bool]
#: The id the intent created by the running CreatePaymentIntent must take (rule 3).
_CREATED_ID: ContextVar[str | None] = ContextVar("paygate_created_intent_id", default=None)


def claim_intent_id(scope: str, key: str, claimed: int) -> str:
    """The id of the intent a CreatePaymentIntent creates under the claim of ``key``
    by ``scope`` made at ``claimed`` (ms): derived from them, so that a retry after a
    crash finds what the lost call committed. Shaped as every id (``pi_`` + 24
    base32 characters); not a secret, as no id is."""
    digest = hashlib.sha256("\x1f".join(("paygate.create", scope, key, str(claimed)))
                            .encode()).digest()
    return new_id("pi", digest[:15])


def created_id() -> str | None:
    """Inside a CreatePaymentIntent run under an idempotency key: the id its intent must
    take (:func:`claim_intent_id`); ``None`` without a key (a random id then)."""
    return _CREATED_ID.get()


class ReplayedRefusal(Exception):
    """The key's first call was refused; this is that refusal, to be sent again."""

    def __init__(self, status: grpc.Status) -> None:
        super().__init__("replayed refusal")
        self.status = status


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _status_bytes(status: grpc.Status) -> bytes:
    for key, value in status.trailing_metadata:
        if key == _DETAILS_KEY:
            return bytes(value)
    return b""


def _status_from_bytes(code: int, details: bytes) -> grpc.Status:
    from google.rpc import status_pb2
    from grpc_status import rpc_status

    status = status_pb2.Status.FromString(details)
    status.code = code
    return rpc_status.to_status(status)


def _caller_may_see(merchant_id: str) -> bool:
    """Whether the caller of the RPC being served may act for ``merchant_id``."""
    from gateway.api.context import current_caller
    from gateway.api.identity import merchant_allowed

    try:
        return merchant_allowed(current_caller().merchants, merchant_id)
    except RuntimeError:  # not inside an RPC: reveal nothing
        return False


class IdempotentCalls:
    """Run mutating calls at most once per (identity, idempotency key)."""

    def __init__(self, store: PaymentStore, *, clock: Callable[[], int] = _now_ms,
                 lease_ms: int = DEFAULT_LEASE_MS, may_see: MaySee = _caller_may_see) -> None:
        if lease_ms <= 0:
            raise ValueError("lease_ms must be positive")
        self._store = store
        self._clock = clock
        self._lease_ms = lease_ms
        self._may_see = may_see
        self._started = clock()
        self._running: set[asyncio.Task[bytes]] = set()   # detached calls still running

    def _stale_before(self, now: int) -> int:
        """Claims created before this are stale: made before this process started, or
        more than the lease ago."""
        return max(self._started, now - self._lease_ms + 1)

    async def run(self, scope: str, key: str | None, method: str, request: bytes,
                  call: Callable[[], Awaitable[bytes]]) -> bytes:
        """The serialized response of ``call`` (run now, or stored from the first time).

        Raises :class:`DomainError` (the call's own, or ``idempotency_key_reused`` /
        ``idempotency_key_in_use`` / ``idempotency_key_invalid``) or
        :class:`ReplayedRefusal`.
        """
        if key is None:
            return await self._detached(call())
        idempotency.validate_key(key)
        fingerprint = idempotency.request_fingerprint(method, request)
        now = self._clock()
        claim = idempotency.new_record(scope, key, fingerprint, now)
        existing = await self._store.claim_idempotency(claim)
        lost: IdempotencyRecord | None = None
        if (existing is not None and existing.state == "in_progress"
                and existing.fingerprint == fingerprint
                and existing.created < self._stale_before(now)):
            lost = await self._store.takeover_idempotency(claim, self._stale_before(now))
            if lost is None:  # another call took it over, or it completed: look again
                existing = await self._store.claim_idempotency(claim)
            else:
                existing = None
        if existing is not None and idempotency.decide(existing, fingerprint, now) == "replay":
            if existing.code == 0:
                return existing.response
            raise ReplayedRefusal(_status_from_bytes(existing.code, existing.details))
        return await self._detached(self._run_claimed(scope, key, method, request, claim,
                                                      lost, call))

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for the calls still running (a stopping server's
        last ones, and those whose callers went away); how many are still running."""
        running = set(self._running)
        if running:
            await asyncio.wait(running, timeout=timeout)
        return sum(not task.done() for task in running)

    async def _detached(self, coro: Awaitable[bytes]) -> bytes:
        """``coro`` run to its end in a task of its own, whatever happens to the caller
        (module docstring); the caller gets its result if it is still waiting."""
        task = asyncio.ensure_future(coro)
        self._running.add(task)
        task.add_done_callback(_forget(self._running))
        return await asyncio.shield(task)

    async def _run_claimed(self, scope: str, key: str, method: str, request: bytes,
                           claim: IdempotencyRecord, lost: IdempotencyRecord | None,
                           call: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run the call under its claim (or answer from what a lost one recorded) and
        store the answer for the key; release the claim when the failure is transient."""
        try:
            if lost is not None:
                recovered = await self._recorded_answer(scope, key, method, request, lost)
                log.warning("idempotency_claim_taken_over", method=method,
                            claimed_ms_ago=claim.created - lost.created,
                            answer="recorded" if recovered is not None else "run_again")
                if recovered is not None:
                    await self._store.complete_idempotency(scope, key, recovered, 0, b"",
                                                           claim.created)
                    return recovered
            token = _CREATED_ID.set(claim_intent_id(scope, key, claim.created)
                                    if method == "CreatePaymentIntent" else None)
            try:
                response = await self._call(method, request, lost, call)
            finally:
                _CREATED_ID.reset(token)
        except DomainError as exc:
            if exc.status in DEFINITIVE:
                status = convert.rich_status(exc.status, exc.reason, exc.message, exc.metadata)
                await self._store.complete_idempotency(scope, key, b"", status.code.value[0],
                                                       _status_bytes(status), claim.created)
            else:
                await self._store.release_idempotency(scope, key, claim.created)
            raise
        except Exception as exc:
            recorded = await self._recorded_after_failure(scope, key, method, request, claim)
            if recorded is None:
                await self._store.release_idempotency(scope, key, claim.created)
            else:
                log.error("idempotent_call_failed_after_recording", method=method,
                          error=type(exc).__name__)
                await self._store.complete_idempotency(scope, key, recorded, 0, b"",
                                                       claim.created)
            raise
        except BaseException:
            await self._store.release_idempotency(scope, key, claim.created)
            raise
        await self._store.complete_idempotency(scope, key, response, 0, b"", claim.created)
        return response

    async def _recorded_after_failure(self, scope: str, key: str, method: str,
                                      request: bytes, claim: IdempotencyRecord,
                                      ) -> bytes | None:
        """What a call that failed unexpectedly had recorded (rules 1 and 3, its own claim
        as the lost one), or ``None``; a store that cannot tell is taken as ``None``."""
        try:
            return await self._recorded_answer(scope, key, method, request, claim)
        except Exception:
            return None

    async def _call(self, method: str, request: bytes, lost: IdempotencyRecord | None,
                    call: Callable[[], Awaitable[bytes]]) -> bytes:
        """Run ``call``; after a takeover, rule 2 of the module docstring."""
        try:
            return await call()
        except DomainError as exc:
            if lost is None or exc.reason != "intent_unexpected_state":
                raise
            intent_of = _ON_INTENT.get(method)
            if intent_of is None:
                raise
            intent = await self._store.get_intent(intent_of(request))
            if (intent is None or intent.updated < lost.created
                    or not self._may_see(intent.merchant_id)):
                raise
            log.info("idempotency_rerun_found_intent_moved", method=method,
                     status=intent.status.value)
            return _intent_bytes(intent)

    async def _recorded_answer(self, scope: str, key: str, method: str, request: bytes,
                               lost: IdempotencyRecord) -> bytes | None:
        """Rules 1 and 3 of the module docstring: the answer from what the lost call
        recorded, or ``None`` if it recorded nothing (then the call runs again)."""
        if method == "CreatePaymentIntent":
            created = await self._store.get_intent(claim_intent_id(scope, key, lost.created))
            if created is None or not self._may_see(created.merchant_id):
                return None
            return _intent_bytes(created)
        if method == "CreateRefund":
            refund_request = payments_pb2.CreateRefundRequest.FromString(request)
            intent_id = refund_request.payment_intent
        elif (intent_of := _ON_INTENT.get(method)) is not None:
            intent_id = intent_of(request)
        else:
            return None
        intent = await self._store.get_intent(intent_id) if intent_id else None
        if intent is None or intent.updated < lost.created:
            return None
        if not self._may_see(intent.merchant_id):
            return None  # the call runs again and answers NOT_FOUND
        if method == "CreateRefund":
            asked = refund_request.amount
            for refund in await self._store.refunds_for_intent(intent.id):
                if refund.created >= lost.created and asked in (0, refund.amount):
                    data: bytes = convert.refund_to_proto(refund).SerializeToString(
                        deterministic=True)
                    return data
            return None
        attempts = await self._store.attempts_for_intent(intent.id)
        if any(a.created >= lost.created for a in attempts):
            return _intent_bytes(intent)
        return None


def _forget(running: set[asyncio.Task[bytes]]) -> Callable[[asyncio.Task[bytes]], None]:
    """A done callback: drop the task, and take its exception so that a call whose caller
    went away does not log "exception was never retrieved" (it logged its own failure)."""
    def done(task: asyncio.Task[bytes]) -> None:
        running.discard(task)
        if not task.cancelled():
            task.exception()
    return done


def _intent_bytes(intent: PaymentIntent) -> bytes:
    data: bytes = convert.intent_to_proto(intent).SerializeToString(deterministic=True)
    return data
