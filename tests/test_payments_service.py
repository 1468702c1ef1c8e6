"""The payments service against real parts (vault, SQLite store, netsim over mutual
TLS): what it answers agrees with netsim's ledger, and every attempt is recorded."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import payments_stack
import pytest
from conftest import Pki

from gateway.payments.errors import DomainError
from gateway.payments.model import AttemptKind, AttemptStatus, IntentStatus, RefundStatus

APPROVE = "4242424242424242"
DECLINE = "4000000000000002"
NO_FUNDS = "4000000000009995"
LOST = "4000000000000259"

Scenario = Callable[[payments_stack.PaymentsStack], Awaitable[Any]]


def run(pki: Pki, tmp_path: Path, scenario: Scenario, **options: Any) -> Any:
    async def main() -> Any:
        async with payments_stack.running(pki, tmp_path / "var", **options) as stack:
            return await scenario(stack)
    return asyncio.run(main())


def test_manual_capture_partial_then_refunds(pki: Pki, tmp_path: Path) -> None:
    """Authorize 50.00, capture 30.00 (the rest released), refund 10.00 twice, and the
    third refund above what remains is refused; netsim agrees at every step."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        intent = await svc.create_intent("acme", 5000, "eur", "manual", "order 1")
        intent = await svc.confirm("acme", intent.id, await stack.token(APPROVE))
        assert intent.status is IntentStatus.REQUIRES_CAPTURE
        assert intent.amount_capturable == 5000
        auth = next(a for a in await stack.store.attempts_for_intent(intent.id)
                    if a.kind is AttemptKind.AUTHORIZATION)
        held = stack.ledger.find_authorization(payments_stack.TERMINAL, auth.stan)
        assert held is not None and held.held == 5000 and held.approval_code
        intent = await svc.capture("acme", intent.id, 3000)
        assert intent.status is IntentStatus.SUCCEEDED and intent.amount_received == 3000
        for _ in range(2):
            refund = await svc.create_refund("acme", intent.id, 1000, "requested_by_customer")
            assert refund.status is RefundStatus.SUCCEEDED
        with pytest.raises(DomainError) as info:
            await svc.create_refund("acme", intent.id, 1001)
        assert info.value.reason == "amount_too_large"
        final = await svc.get_intent("acme", intent.id)
        assert final.amount_refunded == 2000
        network = stack.ledger.find_authorization(payments_stack.TERMINAL, auth.stan)
        assert network is not None
        assert (network.captured, network.refunded, network.held) == (3000, 2000, 0)
        kinds = {a.kind: a for a in await stack.store.attempts_for_intent(intent.id)}
        assert kinds[AttemptKind.RELEASE].amount == 2000
        assert kinds[AttemptKind.RELEASE].status is AttemptStatus.APPROVED
    run(pki, tmp_path, scenario)


def test_automatic_capture_succeeds_in_one_confirm(pki: Pki, tmp_path: Path) -> None:
    """With automatic capture, confirm sends the 0100 and the 0220 and ends succeeded."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        intent = await stack.service.create_intent("acme", 1999, "usd", "automatic")
        intent = await stack.service.confirm("acme", intent.id, await stack.token(APPROVE))
        assert intent.status is IntentStatus.SUCCEEDED and intent.amount_received == 1999
        kinds = sorted(a.kind.value for a in await stack.store.attempts_for_intent(intent.id))
        assert kinds == ["authorization", "capture"]
    run(pki, tmp_path, scenario)


@pytest.mark.parametrize(("pan", "decline_code", "network_code"), [
    (DECLINE, "generic_decline", "05"), (NO_FUNDS, "insufficient_funds", "51")])
def test_a_decline_is_data_and_the_intent_can_be_retried(
        pki: Pki, tmp_path: Path, pan: str, decline_code: str, network_code: str) -> None:
    """A declined card leaves the intent requiring a payment method with the decline in
    last_payment_error; confirming again with a good card succeeds."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        intent = await stack.service.create_intent("acme", 1200, "eur", "manual")
        intent = await stack.service.confirm("acme", intent.id, await stack.token(pan))
        assert intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD
        error = intent.last_payment_error
        assert error is not None and error.code == "card_declined"
        assert (error.decline_code, error.network_response_code) == (decline_code, network_code)
        intent = await stack.service.confirm("acme", intent.id, await stack.token(APPROVE))
        assert intent.status is IntentStatus.REQUIRES_CAPTURE
        assert intent.last_payment_error is None
    run(pki, tmp_path, scenario)


def test_cancel_of_a_hold_voids_it_at_the_network(pki: Pki, tmp_path: Path) -> None:
    """Canceling an authorized intent sends a 0400; the intent is canceled and netsim no
    longer holds the amount."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        intent = await svc.create_intent("acme", 700, "eur", "manual")
        intent = await svc.confirm("acme", intent.id, await stack.token(APPROVE))
        intent = await svc.cancel("acme", intent.id, "requested_by_customer")
        assert intent.status is IntentStatus.CANCELED and intent.amount_capturable == 0
        auth = next(a for a in await stack.store.attempts_for_intent(intent.id)
                    if a.kind is AttemptKind.AUTHORIZATION)
        network = stack.ledger.find_authorization(payments_stack.TERMINAL, auth.stan)
        assert network is not None and network.held == 0 and network.reversed == 700
        with pytest.raises(DomainError) as info:
            await svc.capture("acme", intent.id, 0)
        assert info.value.reason == "intent_unexpected_state"
    run(pki, tmp_path, scenario)


def test_a_lost_response_leaves_processing_and_an_unknown_attempt(
        pki: Pki, tmp_path: Path) -> None:
    """When the reply never comes the caller gets PROCESSING (never a failure) and the
    recorded attempt is unknown, while netsim did approve it."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        intent = await stack.service.create_intent("acme", 2500, "eur", "manual")
        intent = await stack.service.confirm("acme", intent.id, await stack.token(LOST))
        assert intent.status is IntentStatus.PROCESSING and intent.last_payment_error is None
        (attempt,) = await stack.store.attempts_for_intent(intent.id)
        assert attempt.status is AttemptStatus.UNKNOWN and attempt.request["t"] == "0100"
        network = stack.ledger.find_authorization(payments_stack.TERMINAL, attempt.stan)
        assert network is not None and network.held == 2500
        unknown = await stack.store.attempts_with_status(AttemptStatus.UNKNOWN)
        assert [a.id for a in unknown] == [attempt.id]
    run(pki, tmp_path, scenario, deadline=0.3)


def test_intents_and_tokens_of_other_merchants_are_invisible(pki: Pki, tmp_path: Path) -> None:
    """Another merchant's intent is NOT_FOUND, and another merchant's token is an invalid
    payment method."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        intent = await svc.create_intent("acme", 100, "eur", "manual")
        for call in (svc.get_intent("globex", intent.id),
                     svc.confirm("globex", intent.id, await stack.token(APPROVE, "globex")),
                     svc.cancel("globex", intent.id, "")):
            with pytest.raises(DomainError) as info:
                await call
            assert info.value.status == "NOT_FOUND"
        with pytest.raises(DomainError) as info:
            await svc.confirm("acme", intent.id, await stack.token(APPROVE, "globex"))
        assert info.value.reason == "payment_method_invalid"
        assert (await svc.get_intent("acme", intent.id)).status is \
            IntentStatus.REQUIRES_PAYMENT_METHOD
    run(pki, tmp_path, scenario)


def test_the_store_never_holds_the_pan(pki: Pki, tmp_path: Path) -> None:
    """Attempts keep the sent message without fields 2 and 14, and no file of the store
    contains the PAN."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        intent = await stack.service.create_intent("acme", 100, "eur", "automatic")
        await stack.service.confirm("acme", intent.id, await stack.token(APPROVE))
        for attempt in await stack.store.attempts_for_intent(intent.id):
            assert "2" not in attempt.request and "14" not in attempt.request
    run(pki, tmp_path, scenario)
    for path in (tmp_path / "var").rglob("paygate.db*"):
        assert APPROVE.encode() not in path.read_bytes()
    conn = sqlite3.connect(tmp_path / "var" / "paygate.db")
    dump = "\n".join(conn.iterdump())
    conn.close()
    assert APPROVE not in dump


def test_watch_streams_the_current_state_then_every_change(pki: Pki, tmp_path: Path) -> None:
    """A watcher sees requires_payment_method, then processing, then requires_capture."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        intent = await svc.create_intent("acme", 100, "eur", "manual")
        seen: list[IntentStatus] = []
        started = asyncio.Event()

        async def watch() -> None:
            async for state in svc.watch("acme", intent.id):
                seen.append(state.status)
                started.set()
                if state.status is IntentStatus.REQUIRES_CAPTURE:
                    return
        watcher = asyncio.create_task(watch())
        await started.wait()
        await svc.confirm("acme", intent.id, await stack.token(APPROVE))
        await asyncio.wait_for(watcher, 5)
        assert seen == [IntentStatus.REQUIRES_PAYMENT_METHOD, IntentStatus.PROCESSING,
                        IntentStatus.REQUIRES_CAPTURE]
    run(pki, tmp_path, scenario)


def test_concurrent_confirms_of_one_intent_send_one_authorization(
        pki: Pki, tmp_path: Path) -> None:
    """Twenty confirms at once: one succeeds, the others are refused for the state, and
    netsim saw exactly one 0100."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        intent = await svc.create_intent("acme", 100, "eur", "manual")
        token = await stack.token(APPROVE)
        results = await asyncio.gather(*(svc.confirm("acme", intent.id, token)
                                         for _ in range(20)), return_exceptions=True)
        ok = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, DomainError)]
        assert len(ok) == 1 and len(refused) == 19
        assert all(r.reason == "intent_unexpected_state" for r in refused)
        assert len(stack.ledger.authorizations()) == 1
    run(pki, tmp_path, scenario)


def test_the_cvc_reaches_the_network_once(pki: Pki, tmp_path: Path) -> None:
    """The first authorization carries the vault's CVC in field 48 (netsim declines the
    test code 000 with N7, incorrect_cvc); the CVC is then gone, so the retry with the
    same token goes without it and is approved; no stored message holds field 48."""
    async def scenario(stack: payments_stack.PaymentsStack) -> None:
        svc = stack.service
        token = await stack.token(APPROVE, cvc="000")
        intent = await svc.create_intent("acme", 1500, "eur", "manual")
        intent = await svc.confirm("acme", intent.id, token)
        error = intent.last_payment_error
        assert intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD and error is not None
        assert (error.code, error.decline_code, error.network_response_code) == (
            "incorrect_cvc", "incorrect_cvc", "N7")
        intent = await svc.confirm("acme", intent.id, token)
        assert intent.status is IntentStatus.REQUIRES_CAPTURE
        for attempt in await stack.store.attempts_for_intent(intent.id):
            assert "48" not in attempt.request
    run(pki, tmp_path, scenario)
