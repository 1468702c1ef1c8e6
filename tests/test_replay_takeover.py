"""Taking over an idempotency claim a crash left in progress (gateway.payments.replay):
what a retry with the same key gets, read from what the lost call recorded, never
guessed; and that nothing reaches the network twice."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import pytest
from paygate.v1 import payments_pb2 as pb

from gateway.payments import convert, idempotency, machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import AttemptTrace
from gateway.payments.model import Attempt, Change, IntentStatus, PaymentIntent, new_id
from gateway.payments.replay import (
    IdempotentCalls,
    ReplayedRefusal,
    claim_intent_id,
    created_id,
)
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.store.sqlite import SqliteDatabase

# -- taking over a claim a crash left in progress (gateway.payments.replay) ------------------

SCOPE: Final = "checkout-service"
STARTED: Final = 1_000_000          # when the process under test started (its clock, ms)
LEASE: Final = 60_000
Scenario = Callable[["Env"], Awaitable[None]]


class Ms:
    """A settable clock in milliseconds."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@dataclass
class Env:
    """A store, and the idempotency layer of a process that started at STARTED."""

    store: SqlitePaymentStore
    clock: Ms
    calls: IdempotentCalls
    stans: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    async def commit(self, change: Change) -> PaymentIntent:
        await self.store.commit(change)
        return change.intent

    def trace(self) -> AttemptTrace:
        stan = f"{next(self.stans):06d}"
        return AttemptTrace(stan, f"000000{stan}", "0102030405", "TERM0001")

    async def lost_claim(self, method: str, request: Any, created: int, key: str) -> None:
        """The claim of a call that started at ``created`` and never finished."""
        fingerprint = idempotency.request_fingerprint(
            method, request.SerializeToString(deterministic=True))
        assert await self.store.claim_idempotency(
            idempotency.new_record(SCOPE, key, fingerprint, created)) is None

    async def lost_create(self, created: int, key: str,
                          ) -> tuple[pb.CreatePaymentIntentRequest, str]:
        """A CreatePaymentIntent lost with its claim made at ``created``: the request
        and its fingerprint."""
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        await self.lost_claim("CreatePaymentIntent", request, created, key)
        return request, idempotency.request_fingerprint(
            "CreatePaymentIntent", request.SerializeToString(deterministic=True))

    async def run(self, method: str, request: Any, key: str,
                  call: Callable[[], Awaitable[bytes]] | None = None) -> bytes:
        """``request`` through the idempotency layer; without ``call``, running it fails."""
        async def must_not_run() -> bytes:
            raise AssertionError(f"{method} ran again")
        return await self.calls.run(SCOPE, key, method,
                                    request.SerializeToString(deterministic=True),
                                    call or must_not_run)


def run_scenario(tmp_path: Path, scenario: Scenario, *,
                 may_see: Callable[[str], bool] = lambda merchant: True) -> None:
    async def main() -> None:
        db = SqliteDatabase(tmp_path / "paygate.db")
        try:
            store = SqlitePaymentStore(db)
            clock = Ms(STARTED)
            calls = IdempotentCalls(store, clock=clock, lease_ms=LEASE, may_see=may_see)
            clock.now = STARTED + 1_000
            await scenario(Env(store, clock, calls))
        finally:
            db.close()
    asyncio.run(main())


async def new_intent(env: Env, created: int) -> PaymentIntent:
    return await env.commit(machine.create_intent("acme", 5000, "eur", "manual", "", None,
                                                  created))


async def succeeded_intent(env: Env, created: int) -> tuple[PaymentIntent, Attempt]:
    """An intent authorized and captured in full, and its authorization."""
    intent = await new_intent(env, created)
    change = machine.confirm(intent, "tok_visa", env.trace(), created + 1)
    intent = await env.commit(change)
    change = machine.authorization_outcome(intent, change.attempts[0], machine.Approved(),
                                           created + 2)
    intent, auth = await env.commit(change), change.attempts[0]
    change = machine.capture(intent, auth, 0, env.trace(), created + 3)
    intent = await env.commit(change)
    return await env.commit(machine.capture_outcome(intent, auth, change.attempts[0],
                                                    machine.Approved(), created + 4)), auth


def confirm_request(intent: PaymentIntent) -> pb.ConfirmPaymentIntentRequest:
    return pb.ConfirmPaymentIntentRequest(id=intent.id, payment_method="tok_visa")


def intent_bytes(intent: PaymentIntent | None) -> bytes:
    assert intent is not None
    data: bytes = convert.intent_to_proto(intent).SerializeToString(deterministic=True)
    return data


async def refused(coro: Awaitable[object], reason: str) -> None:
    try:
        await coro
    except DomainError as exc:
        assert exc.reason == reason, exc
        return
    raise AssertionError(f"not refused ({reason} expected)")


def test_a_claim_from_before_the_process_started_is_taken_over_and_run_once(
        tmp_path: Path) -> None:
    """A claim left in progress by a process that is gone is taken over at once: the
    call runs, and from then on its answer is replayed for the key."""
    async def scenario(env: Env) -> None:
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        await env.lost_claim("CreatePaymentIntent", request, STARTED - 5, "k")

        async def call() -> bytes:
            return b"ran"
        assert await env.run("CreatePaymentIntent", request, "k", call) == b"ran"
        env.clock.now += 10
        assert await env.run("CreatePaymentIntent", request, "k") == b"ran"
    run_scenario(tmp_path, scenario)


def test_a_claim_of_this_process_is_in_use_until_its_lease_runs_out(tmp_path: Path) -> None:
    """A claim made since the process started is ABORTED idempotency_key_in_use for the
    lease, and taken over once the lease has run out."""
    async def scenario(env: Env) -> None:
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        await env.lost_claim("CreatePaymentIntent", request, env.clock.now, "k")
        env.clock.now += LEASE - 1
        await refused(env.run("CreatePaymentIntent", request, "k"), "idempotency_key_in_use")

        async def call() -> bytes:
            return b"ran"
        env.clock.now += 1
        assert await env.run("CreatePaymentIntent", request, "k", call) == b"ran"
    run_scenario(tmp_path, scenario)


def test_a_takeover_leaves_other_requests_and_finished_calls_alone(tmp_path: Path) -> None:
    """A stale claim of other parameters is still idempotency_key_reused, and the store
    takes over neither a finished record nor another request's claim."""
    async def scenario(env: Env) -> None:
        create = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        other = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=101, currency="eur")
        await env.lost_claim("CreatePaymentIntent", create, STARTED - 5, "k")
        await refused(env.run("CreatePaymentIntent", other, "k"), "idempotency_key_reused")
        fingerprint = idempotency.request_fingerprint(
            "CreatePaymentIntent", other.SerializeToString(deterministic=True))
        claim = idempotency.new_record(SCOPE, "k", fingerprint, env.clock.now)
        assert await env.store.takeover_idempotency(claim, STARTED) is None
        assert await env.store.complete_idempotency(SCOPE, "k", b"first", 0, b"")
        claim = replace(claim, fingerprint=idempotency.request_fingerprint(
            "CreatePaymentIntent", create.SerializeToString(deterministic=True)))
        assert await env.store.takeover_idempotency(claim, env.clock.now) is None
        assert await env.run("CreatePaymentIntent", create, "k") == b"first"
    run_scenario(tmp_path, scenario)


def test_a_create_lost_after_committing_its_intent_answers_that_intent(
        tmp_path: Path) -> None:
    """A CreatePaymentIntent lost after it committed its intent (whose id derives from its
    claim) is not run again: the retry gets that intent, and no second one exists."""
    async def scenario(env: Env) -> None:
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        await env.lost_claim("CreatePaymentIntent", request, STARTED - 5, "k")
        lost_id = claim_intent_id(SCOPE, "k", STARTED - 5)
        committed = await env.commit(machine.create_intent(
            "acme", 100, "eur", "manual", "", None, STARTED - 4,
            lambda prefix: lost_id if prefix == "pi" else new_id(prefix)))
        answer = await env.run("CreatePaymentIntent", request, "k")
        assert answer == intent_bytes(committed)
        env.clock.now += 10
        assert await env.run("CreatePaymentIntent", request, "k") == answer
        listed, _more = await env.store.list_intents("acme", limit=10)
        assert [i.id for i in listed] == [lost_id]
    run_scenario(tmp_path, scenario)


def test_a_create_run_under_a_key_gives_its_intent_the_id_of_its_claim(
        tmp_path: Path) -> None:
    """Inside a CreatePaymentIntent run under a key, created_id() is the id derived from
    that call's claim (a lost claim's retry runs under its own, new claim); other methods
    and calls without a key see None."""
    async def scenario(env: Env) -> None:
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        seen: list[str | None] = []

        async def call() -> bytes:
            seen.append(created_id())
            return b"ran"
        await env.run("CreatePaymentIntent", request, "k1", call)
        await env.lost_claim("CreatePaymentIntent", request, STARTED - 5, "k2")
        await env.run("CreatePaymentIntent", request, "k2", call)
        intent = await new_intent(env, STARTED)
        await env.run("ConfirmPaymentIntent", confirm_request(intent), "k3", call)
        await env.calls.run(SCOPE, None, "CreatePaymentIntent",
                            request.SerializeToString(deterministic=True), call)
        assert seen == [claim_intent_id(SCOPE, "k1", env.clock.now),
                        claim_intent_id(SCOPE, "k2", env.clock.now), None, None]
        assert seen[0] != seen[1] and seen[0] is not None and seen[0].startswith("pi_")
    run_scenario(tmp_path, scenario)


def test_of_two_retries_taking_over_one_claim_one_runs(tmp_path: Path) -> None:
    """Two retries racing for one stale claim: one takes it over and runs, the other is
    ABORTED idempotency_key_in_use while the first runs."""
    async def scenario(env: Env) -> None:
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        await env.lost_claim("CreatePaymentIntent", request, STARTED - 5, "k")
        release = asyncio.Event()
        runs = 0

        async def call() -> bytes:
            nonlocal runs
            runs += 1
            await release.wait()
            return b"ran"
        first = asyncio.create_task(env.run("CreatePaymentIntent", request, "k", call))
        second = asyncio.create_task(env.run("CreatePaymentIntent", request, "k", call))
        done, _pending = await asyncio.wait((first, second), return_when="FIRST_COMPLETED")
        loser = done.pop()
        await refused(loser, "idempotency_key_in_use")
        release.set()
        winner = second if loser is first else first
        assert await winner == b"ran" and runs == 1
    run_scenario(tmp_path, scenario)


def test_a_confirm_whose_attempt_was_recorded_answers_the_intent_without_sending_again(
        tmp_path: Path) -> None:
    """A confirm lost after recording its authorization is not run again: the retry gets
    the intent as it stands (processing, the attempt's outcome unknown), stored for the
    key."""
    async def scenario(env: Env) -> None:
        intent = await new_intent(env, STARTED - 100)
        await env.lost_claim("ConfirmPaymentIntent", confirm_request(intent), STARTED - 50, "k")
        await env.commit(machine.confirm(intent, "tok_visa", env.trace(), STARTED - 49))
        stored = await env.store.get_intent(intent.id)
        assert stored is not None and stored.status is IntentStatus.PROCESSING
        answer = await env.run("ConfirmPaymentIntent", confirm_request(intent), "k")
        assert answer == intent_bytes(stored)
        env.clock.now += 10
        assert await env.run("ConfirmPaymentIntent", confirm_request(intent), "k") == answer
    run_scenario(tmp_path, scenario)


def test_a_confirm_lost_before_recording_anything_runs_again(tmp_path: Path) -> None:
    """A confirm whose intent did not change after the lost claim sent nothing, so the
    retry runs it."""
    async def scenario(env: Env) -> None:
        intent = await new_intent(env, STARTED - 100)
        await env.lost_claim("ConfirmPaymentIntent", confirm_request(intent), STARTED - 50, "k")

        async def call() -> bytes:
            return b"confirmed"
        assert await env.run("ConfirmPaymentIntent", confirm_request(intent), "k",
                             call) == b"confirmed"
    run_scenario(tmp_path, scenario)


def test_a_caller_who_may_not_see_the_intent_gets_nothing_from_the_store(
        tmp_path: Path) -> None:
    """For a caller not allowed the intent's merchant the retry runs the call (which
    answers NOT_FOUND) instead of answering from the store."""
    async def scenario(env: Env) -> None:
        intent = await new_intent(env, STARTED - 100)
        await env.lost_claim("ConfirmPaymentIntent", confirm_request(intent), STARTED - 50, "k")
        await env.commit(machine.confirm(intent, "tok_visa", env.trace(), STARTED - 49))

        async def call() -> bytes:
            raise DomainError("NOT_FOUND", "payment_intent_not_found", "no such intent")
        await refused(env.run("ConfirmPaymentIntent", confirm_request(intent), "k", call),
                      "payment_intent_not_found")
    run_scenario(tmp_path, scenario, may_see=lambda merchant: False)


def test_a_rerun_refused_because_the_lost_call_moved_the_intent_answers_the_intent(
        tmp_path: Path) -> None:
    """A cancel lost after committing (no network message) is run again; its refusal
    intent_unexpected_state is replaced by the canceled intent; a refusal for an intent
    that was canceled before the claim stays the stored answer."""
    async def scenario(env: Env) -> None:
        def wrong_state(intent_id: str) -> Callable[[], Awaitable[bytes]]:
            async def call() -> bytes:
                raise DomainError("FAILED_PRECONDITION", "intent_unexpected_state",
                                  "the payment intent is canceled", {"id": intent_id})
            return call
        intent = await new_intent(env, STARTED - 100)
        cancel = pb.CancelPaymentIntentRequest(id=intent.id)
        await env.lost_claim("CancelPaymentIntent", cancel, STARTED - 50, "k")
        await env.commit(machine.cancel(intent, None, "", None, STARTED - 49))
        answer = await env.run("CancelPaymentIntent", cancel, "k", wrong_state(intent.id))
        assert answer == intent_bytes(await env.store.get_intent(intent.id))

        earlier = await new_intent(env, STARTED - 100)
        await env.commit(machine.cancel(earlier, None, "", None, STARTED - 90))
        cancel = pb.CancelPaymentIntentRequest(id=earlier.id)
        await env.lost_claim("CancelPaymentIntent", cancel, STARTED - 50, "k2")
        await refused(env.run("CancelPaymentIntent", cancel, "k2", wrong_state(earlier.id)),
                      "intent_unexpected_state")
        with pytest.raises(ReplayedRefusal):
            await env.run("CancelPaymentIntent", cancel, "k2")
    run_scenario(tmp_path, scenario)


def test_a_refund_recorded_by_the_lost_call_is_the_answer_and_not_made_twice(
        tmp_path: Path) -> None:
    """A refund lost after recording its refund answers that refund without running;
    a refund whose lost call recorded nothing (another amount since) runs again."""
    async def scenario(env: Env) -> None:
        intent, auth = await succeeded_intent(env, STARTED - 100)
        request = pb.CreateRefundRequest(payment_intent=intent.id, amount=1000)
        await env.lost_claim("CreateRefund", request, STARTED - 50, "k")
        change = machine.refund(intent, auth, [], 1000, "", env.trace(), STARTED - 49)
        intent = await env.commit(change)
        answer = await env.run("CreateRefund", request, "k")
        assert answer == convert.refund_to_proto(change.refunds[0]).SerializeToString(
            deterministic=True)

        other = pb.CreateRefundRequest(payment_intent=intent.id, amount=2000)
        await env.lost_claim("CreateRefund", other, STARTED - 40, "k2")

        async def call() -> bytes:
            return b"refunded"
        assert await env.run("CreateRefund", other, "k2", call) == b"refunded"
    run_scenario(tmp_path, scenario)


def test_a_second_takeover_still_sees_the_first_claims_time(tmp_path: Path) -> None:
    """A takeover that itself dies re-dates the claim for its lease, but the next takeover
    still learns when the key was first claimed (so what the first lost call recorded is
    found, and it is not run again)."""
    async def scenario(env: Env) -> None:
        first = STARTED - 50
        _request, fingerprint = await env.lost_create(first, "k")
        retry = idempotency.new_record(SCOPE, "k", fingerprint, STARTED - 10)
        lost = await env.store.takeover_idempotency(retry, STARTED - 5)
        assert lost is not None and lost.created == first
        again = idempotency.new_record(SCOPE, "k", fingerprint, env.clock.now)
        lost = await env.store.takeover_idempotency(again, STARTED)
        assert lost is not None and lost.created == first
    run_scenario(tmp_path, scenario)


def test_a_call_whose_claim_was_taken_over_cannot_finish_or_release_it(tmp_path: Path) -> None:
    """After a takeover, the first (slow) call can neither complete nor release the key:
    only the call that holds the claim now decides its answer."""
    async def scenario(env: Env) -> None:
        first = STARTED - 50
        request, fingerprint = await env.lost_create(first, "k")
        taker = idempotency.new_record(SCOPE, "k", fingerprint, env.clock.now)
        assert await env.store.takeover_idempotency(taker, STARTED) is not None
        assert not await env.store.release_idempotency(SCOPE, "k", first)
        assert not await env.store.complete_idempotency(SCOPE, "k", b"slow", 0, b"", first)
        assert await env.store.complete_idempotency(SCOPE, "k", b"taker", 0, b"",
                                                    taker.created)
        assert await env.run("CreatePaymentIntent", request, "k") == b"taker"
    run_scenario(tmp_path, scenario)
