"""A caller that goes away, or a call that fails after recording, never leaves a key with
the wrong answer (gateway.payments.replay): real payments service, SQLite store, netsim."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from conftest import Pki
from paygate.v1 import payments_pb2 as pb
from payments_stack import PaymentsStack, running

from gateway.payments import convert
from gateway.payments.model import AttemptKind, AttemptStatus, IntentStatus, PaymentIntent
from gateway.payments.replay import IdempotentCalls
from netsim import Faults

APPROVED = "4242424242424242"
SCOPE = "checkout-service"


async def _manual_intent(stack: PaymentsStack, amount: int,
                         ) -> tuple[IdempotentCalls, PaymentIntent, str, bytes]:
    """An idempotency layer, a new manual-capture intent, a token of the approving card,
    and the serialized ConfirmPaymentIntent request for them."""
    calls = IdempotentCalls(stack.store, may_see=lambda merchant: True)
    intent = await stack.service.create_intent("acme", amount, "eur", "manual")
    token = await stack.token(APPROVED)
    request: bytes = pb.ConfirmPaymentIntentRequest(
        id=intent.id, payment_method=token).SerializeToString(deterministic=True)
    return calls, intent, token, request


def _confirm(stack: PaymentsStack, intent: PaymentIntent, token: str,
             then: Callable[[], None] | None = None) -> Callable[[], Awaitable[bytes]]:
    async def call() -> bytes:
        done = await stack.service.confirm("acme", intent.id, token)
        if then is not None:
            then()
        data: bytes = convert.intent_to_proto(done).SerializeToString(deterministic=True)
        return data
    return call


async def _must_not_run() -> bytes:
    raise AssertionError("the call ran again")


def test_a_confirm_whose_caller_goes_away_finishes_and_its_answer_is_kept(
        pki: Pki, tmp_path: Path) -> None:
    """The caller is cancelled while the 0100 waits for its 0110: the confirm still
    records the approval, and the retry with the same key gets that answer without a
    second 0100."""
    async def main() -> None:
        async with running(pki, tmp_path, deadline=3.0, faults=Faults(latency=0.6)) as stack:
            calls, intent, token, request = await _manual_intent(stack, 2500)
            first = asyncio.ensure_future(calls.run(
                SCOPE, "k-confirm", "ConfirmPaymentIntent", request,
                _confirm(stack, intent, token)))
            await asyncio.sleep(0.2)                  # the 0100 is out, its 0110 is not
            first.cancel()
            with pytest.raises(asyncio.CancelledError):
                await first
            assert await calls.drain(5.0) == 0
            stored = await stack.store.get_intent(intent.id)
            assert stored is not None and stored.status is IntentStatus.REQUIRES_CAPTURE
            again = await calls.run(SCOPE, "k-confirm", "ConfirmPaymentIntent", request,
                                    _must_not_run)
            answer = pb.PaymentIntent.FromString(again)
            assert answer.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE
            assert answer.amount_capturable == 2500
            assert len(stack.ledger.authorizations()) == 1
    asyncio.run(main())


def test_a_call_that_fails_after_recording_answers_retries_with_what_it_recorded(
        pki: Pki, tmp_path: Path) -> None:
    """A confirm that raises an unexpected error after its attempt was recorded answers
    INTERNAL once; the retry gets the intent as recorded (not FAILED_PRECONDITION from
    running again), and the network saw one 0100."""
    def boom() -> None:
        raise RuntimeError("a bug after the outcome was committed")

    async def main() -> None:
        async with running(pki, tmp_path) as stack:
            calls, intent, token, request = await _manual_intent(stack, 1800)
            with pytest.raises(RuntimeError):
                await calls.run(SCOPE, "k-bug", "ConfirmPaymentIntent", request,
                                _confirm(stack, intent, token, then=boom))
            again = pb.PaymentIntent.FromString(await calls.run(
                SCOPE, "k-bug", "ConfirmPaymentIntent", request, _must_not_run))
            assert again.id == intent.id
            assert again.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE
            attempts = await stack.store.attempts_for_intent(intent.id)
            assert [(a.kind, a.status) for a in attempts] == [
                (AttemptKind.AUTHORIZATION, AttemptStatus.APPROVED)]
            assert len(stack.ledger.authorizations()) == 1
    asyncio.run(main())


def test_a_call_that_fails_before_recording_anything_runs_again_on_retry(
        pki: Pki, tmp_path: Path) -> None:
    """An unexpected error before anything was recorded releases the claim: the retry
    runs the confirm, which authorizes once."""
    async def fails_early() -> bytes:
        raise RuntimeError("failed before recording")

    async def main() -> None:
        async with running(pki, tmp_path) as stack:
            calls, intent, token, request = await _manual_intent(stack, 1700)
            with pytest.raises(RuntimeError):
                await calls.run(SCOPE, "k-early", "ConfirmPaymentIntent", request,
                                fails_early)
            again = pb.PaymentIntent.FromString(await calls.run(
                SCOPE, "k-early", "ConfirmPaymentIntent", request,
                _confirm(stack, intent, token)))
            assert again.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE
            assert len(stack.ledger.authorizations()) == 1
    asyncio.run(main())
