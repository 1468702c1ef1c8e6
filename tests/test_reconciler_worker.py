"""The reconciler's worker against real parts (SQLite store, netsim over mutual TLS, the
network client, the payments service, all in one event loop, tiny deadlines and
backoffs): every unknown attempt ends as the policy says, and netsim agrees."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from conftest import Pki

from gateway.cards import Card, brand_of
from gateway.config import load_config
from gateway.devcerts import write_dev_certs
from gateway.merchants import DEMO, MerchantDirectory
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator
from gateway.payments import machine, messages
from gateway.payments.messages import Acceptor
from gateway.payments.model import (
    Attempt,
    AttemptKind,
    AttemptStatus,
    IntentStatus,
    PaymentIntent,
    RefundStatus,
)
from gateway.payments.service import PaymentService, _with_request
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.pki import Credentials, client_context, server_context
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim import SoftwareHsm
from netsim import EntryKind, Faults, Ledger, NetSim
from reconciler import rules
from reconciler.queue import ReconcilerQueue
from reconciler.worker import Backoff, LateReplies, Reconciler

TERMINAL = "TERM0001"
ACQUIRER = "440001"
APPROVE = "4242424242424242"
LOST = "4000000000000259"
SLOW = "4000000000000267"
DEADLINE = 0.3
MERCHANTS = MerchantDirectory.from_data(DEMO)
PAYGATE = str(Path(sys.executable).with_name("paygate"))


@dataclass
class Rig:
    service: PaymentService
    store: SqlitePaymentStore
    queue: ReconcilerQueue
    reconciler: Reconciler
    ledger: Ledger
    vault: Vault
    trace: TraceAllocator
    faults: Faults

    async def token(self, pan: str) -> str:
        card = Card(pan, 12, 2034, brand_of(pan) or "visa")
        return (await self.vault.tokenize("acme", card, cvc="123")).token

    async def attempts(self, intent_id: str, kind: AttemptKind) -> list[Attempt]:
        return [a for a in await self.store.attempts_for_intent(intent_id) if a.kind is kind]

    async def auth(self, intent_id: str) -> Attempt:
        return (await self.attempts(intent_id, AttemptKind.AUTHORIZATION))[-1]

    async def intent(self, intent_id: str) -> PaymentIntent:
        return await self.service.get_intent("acme", intent_id)

    async def passes_until(self, done: Callable[[], Awaitable[bool]],
                           timeout: float = 15.0) -> None:
        """Run reconciler passes until ``done()``; fail after ``timeout`` seconds."""
        end = time.monotonic() + timeout
        while not await done():
            assert time.monotonic() < end, "the reconciler did not get there in time"
            await self.reconciler.run_once()
            await asyncio.sleep(0.01)


async def wait_until(done: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < end, "timed out waiting"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def rig(pki: Pki, data_dir: Path, *, faults: Faults | None = None,
              stale_after: float = 30.0) -> AsyncIterator[Rig]:
    """Everything up on the files under ``data_dir`` (created, or reopened)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    faults = faults if faults is not None else Faults()
    hsm = SoftwareHsm(data_dir / "hsm", environ={})
    db = SqliteDatabase(data_dir / "paygate.db")
    store = SqlitePaymentStore(db)
    vault = Vault(hsm, SqliteVaultStore(db))
    ledger = Ledger(data_dir / "netsim.db")
    stans = SqliteStanStore(data_dir / "stan.db")
    trace = TraceAllocator(stans, TERMINAL)
    late = LateReplies()
    try:
        async with NetSim(server_context(pki.netsim), ledger, faults=faults,
                          slow_delay=DEADLINE * 3) as sim, \
                NetworkClient("127.0.0.1", sim.port, client_context(pki.gateway),
                              terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                              deadline=DEADLINE, on_late_response=late) as client:
            service = PaymentService(store, vault, client, trace, MERCHANTS,
                                     acquirer_id=ACQUIRER)
            queue = ReconcilerQueue(db)
            reconciler = Reconciler(store, queue, client, trace, MERCHANTS,
                                    acquirer_id=ACQUIRER, backoff=Backoff(0.01, 0.05),
                                    locks=service.locks, feed=service.feed,
                                    stale_after=stale_after)
            late.target = reconciler.on_late_response
            yield Rig(service, store, queue, reconciler, ledger, vault, trace, faults)
    finally:
        db.close()
        ledger.close()
        stans.close()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


async def confirmed(r: Rig, pan: str, amount: int = 2500,
                    capture: str = "manual") -> PaymentIntent:
    intent = await r.service.create_intent("acme", amount, "eur", capture)
    return await r.service.confirm("acme", intent.id, await r.token(pan))


def timed_out(intent: PaymentIntent) -> bool:
    return (intent.status is IntentStatus.REQUIRES_PAYMENT_METHOD
            and intent.last_payment_error is not None
            and intent.last_payment_error.code == "network_timeout")


def test_a_lost_response_is_reversed_once_and_the_intent_can_be_paid_again(
        pki: Pki, tmp_path: Path) -> None:
    """Card …0259: a 0420 releases the hold once, the intent ends requires_payment_method
    with network_timeout, further passes send nothing, and a new card then pays."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, LOST)
            assert intent.status is IntentStatus.PROCESSING
            await r.passes_until(lambda: _is(r, intent.id, timed_out))
            auth = await r.auth(intent.id)
            (reversal,) = await r.attempts(intent.id, AttemptKind.TIMEOUT_REVERSAL)
            assert auth.status is AttemptStatus.REVERSED
            assert (reversal.status, reversal.request["t"]) == (AttemptStatus.APPROVED, "0420")
            assert reversal.request["90"][:10] == "0100" + auth.stan
            for _ in range(3):
                await r.reconciler.run_once()
            assert len(r.ledger.reversals_of(TERMINAL, auth.stan)) == 1
            network = r.ledger.find_authorization(TERMINAL, auth.stan)
            assert network is not None and (network.held, network.reversed) == (0, 2500)
            assert await r.queue.entries() == []
            again = await r.service.confirm("acme", intent.id, await r.token(APPROVE))
            assert again.status is IntentStatus.REQUIRES_CAPTURE
    run(scenario)


async def _is(r: Rig, intent_id: str, check: Callable[[PaymentIntent], bool]) -> bool:
    return check(await r.intent(intent_id))


def test_a_slow_reply_before_any_reversal_makes_the_intent_capturable(
        pki: Pki, tmp_path: Path) -> None:
    """Card …0267 with the worker idle until the late 0110 arrived: the reply is the
    outcome (requires_capture), the worker then reverses nothing, and capture works."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, SLOW)
            assert intent.status is IntentStatus.PROCESSING
            await wait_until(lambda: r.reconciler.stats.late_accepted == 1)
            assert (await r.intent(intent.id)).status is IntentStatus.REQUIRES_CAPTURE
            for _ in range(3):
                await r.reconciler.run_once()
            auth = await r.auth(intent.id)
            assert auth.status is AttemptStatus.APPROVED
            assert await r.attempts(intent.id, AttemptKind.TIMEOUT_REVERSAL) == []
            assert r.ledger.reversals_of(TERMINAL, auth.stan) == []
            assert await r.queue.entries() == []
            done = await r.service.capture("acme", intent.id, 0)
            assert done.status is IntentStatus.SUCCEEDED and done.amount_received == 2500
    run(scenario)


def test_a_reversal_recorded_first_wins_over_the_slow_reply(pki: Pki, tmp_path: Path) -> None:
    """Card …0267 with the worker running at once: the reversal is recorded before the
    late 0110 arrives, so that reply is ignored and the hold stays released."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, SLOW)
            await r.passes_until(lambda: _is(r, intent.id, timed_out))
            await wait_until(lambda: r.reconciler.stats.late_ignored == 1)
            assert timed_out(await r.intent(intent.id))
            auth = await r.auth(intent.id)
            assert auth.status is AttemptStatus.REVERSED
            assert r.reconciler.stats.late_accepted == 0
            network = r.ledger.find_authorization(TERMINAL, auth.stan)
            assert network is not None and (network.held, network.reversed) == (0, 2500)
    run(scenario)


def test_a_late_approval_of_an_automatic_capture_is_captured(pki: Pki, tmp_path: Path) -> None:
    """An automatic-capture intent approved late is captured by the reconciler (0220
    recorded, then sent) and ends succeeded, captured once at netsim."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, SLOW, 1800, "automatic")
            assert intent.status is IntentStatus.PROCESSING
            await wait_until(lambda: r.reconciler.stats.late_accepted == 1)
            final = await r.intent(intent.id)
            assert final.status is IntentStatus.SUCCEEDED and final.amount_received == 1800
            (capture,) = await r.attempts(intent.id, AttemptKind.CAPTURE)
            assert capture.status is AttemptStatus.APPROVED and capture.request["t"] == "0220"
            network = r.ledger.find_authorization(TERMINAL, (await r.auth(intent.id)).stan)
            assert network is not None and (network.captured, network.held) == (1800, 0)
    run(scenario)


def test_dropped_0430s_are_repeated_as_0421_until_one_is_acknowledged(
        pki: Pki, tmp_path: Path) -> None:
    """While netsim drops every response the worker keeps trying (0420, then 0421s, each
    recorded with its own STAN); once a 0430 gets through it stops, and the hold was
    released exactly once."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, LOST)
            r.faults.drop_rate = 1.0

            async def three_tries() -> bool:
                return len(await r.attempts(intent.id, AttemptKind.TIMEOUT_REVERSAL)) >= 3
            await r.passes_until(three_tries)
            assert (await r.intent(intent.id)).status is IntentStatus.PROCESSING
            r.faults.drop_rate = 0.0
            await r.passes_until(lambda: _is(r, intent.id, timed_out))
            tries = await r.attempts(intent.id, AttemptKind.TIMEOUT_REVERSAL)
            assert [t.request["t"] for t in tries] == ["0420"] + ["0421"] * (len(tries) - 1)
            assert len({t.stan for t in tries}) == len(tries)
            assert [t.status for t in tries] == (
                [AttemptStatus.SUPERSEDED] * (len(tries) - 1) + [AttemptStatus.APPROVED])
            auth = await r.auth(intent.id)
            advices = r.ledger.reversals_of(TERMINAL, auth.stan)
            assert len(advices) == len(tries) and sum(e.changed for e in advices) == 1
            network = r.ledger.find_authorization(TERMINAL, auth.stan)
            assert network is not None and (network.held, network.reversed) == (0, 2500)
    run(scenario)


def test_a_restart_resumes_from_the_durable_queue_and_never_double_reverses(
        pki: Pki, tmp_path: Path) -> None:
    """A try whose 0430 was lost and a try recorded but never sent, then everything
    closed and reopened on the same files: the queue still holds the authorization, the
    unsent try is settled unknown, a 0421 is acknowledged, netsim released once."""
    data = tmp_path / "var"

    async def before() -> tuple[str, str]:
        async with rig(pki, data) as r:
            intent = await confirmed(r, LOST)
            r.faults.drop_rate = 1.0

            async def one_try() -> bool:
                return bool(await r.attempts(intent.id, AttemptKind.TIMEOUT_REVERSAL))
            await r.passes_until(one_try)
            auth = await r.auth(intent.id)
            current = await r.intent(intent.id)
            trace = await asyncio.to_thread(r.trace.allocate)
            change = rules.timeout_reversal(current, auth, trace, current.updated + 1)
            await r.store.commit(change)     # recorded; the process "dies" before sending
            return intent.id, change.attempts[0].id

    async def after(intent_id: str, unsent_id: str) -> None:
        async with rig(pki, data) as r:
            auth = await r.auth(intent_id)
            entry = await r.queue.get(auth.id)
            assert entry is not None and entry.tries >= 1
            await r.passes_until(lambda: _is(r, intent_id, timed_out))
            tries = {t.id: t for t in await r.attempts(intent_id, AttemptKind.TIMEOUT_REVERSAL)}
            assert tries[unsent_id].status is AttemptStatus.SUPERSEDED
            assert [t.request.get("t") for t in tries.values()][-1] == "0421"
            advices = r.ledger.reversals_of(TERMINAL, auth.stan)
            assert len(advices) == len(tries) - 1      # the unsent try never reached netsim
            assert sum(e.changed for e in advices) == 1
            network = r.ledger.find_authorization(TERMINAL, auth.stan)
            assert network is not None and (network.held, network.reversed) == (0, 2500)
            assert await r.queue.entries() == []

    intent_id, unsent_id = asyncio.run(before())
    asyncio.run(after(intent_id, unsent_id))


def test_an_authorization_left_recorded_by_a_dead_process_is_reversed(
        pki: Pki, tmp_path: Path) -> None:
    """An 0100 recorded but never sent (the process died) is marked unknown once stale
    and reversed; netsim, which never saw it, holds nothing."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var", stale_after=0.0) as r:
            intent = await r.service.create_intent("acme", 900, "eur", "manual")
            trace = await asyncio.to_thread(r.trace.allocate)
            merchant = MERCHANTS.get("acme")
            assert merchant is not None
            change = machine.confirm(intent, "tok", trace, intent.updated + 1)
            doc = messages.authorization(change.attempts[0], Card(APPROVE, 12, 2034, "visa"),
                                         trace, Acceptor(ACQUIRER, merchant.card_acceptor_id))
            await r.store.commit(_with_request(change, change.attempts[0].id, doc))
            await r.passes_until(lambda: _is(r, intent.id, timed_out))
            assert r.reconciler.stats.stale_marked == 1
            assert (await r.auth(intent.id)).status is AttemptStatus.REVERSED
            assert r.ledger.find_authorization(TERMINAL, trace.stan) is None
    run(scenario)


def test_ingest_advances_the_checkpoint_and_queues_each_attempt_once(
        pki: Pki, tmp_path: Path) -> None:
    """Ingest queues the unknown authorization and moves the checkpoint to the last
    event; ingesting or sweeping again adds nothing."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, LOST)
            assert await r.queue.ingest(r.store, 0) == 1
            last = await r.store.last_event()
            assert last is not None and await r.queue.checkpoint() == last.seq
            assert await r.queue.ingest(r.store, 0) == 0
            assert await r.queue.sweep(r.store, 0) == 0
            entries = await r.queue.entries()
            assert [(e.attempt_id, e.kind) for e in entries] == [
                ((await r.auth(intent.id)).id, AttemptKind.AUTHORIZATION)]
    run(scenario)


def test_an_unknown_capture_is_settled_by_a_0221_repeat(pki: Pki, tmp_path: Path) -> None:
    """The 0230 is dropped: the capture is unknown and the intent processing; the 0221
    repeat's answer makes it succeeded, and netsim captured exactly once."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, APPROVE, 4000)
            r.faults.drop_rate = 1.0
            intent = await r.service.capture("acme", intent.id, 0)
            assert intent.status is IntentStatus.PROCESSING
            r.faults.drop_rate = 0.0
            await r.passes_until(
                lambda: _is(r, intent.id, lambda i: i.status is IntentStatus.SUCCEEDED))
            (capture,) = await r.attempts(intent.id, AttemptKind.CAPTURE)
            assert capture.status is AttemptStatus.APPROVED
            auth = await r.auth(intent.id)
            network = r.ledger.find_authorization(TERMINAL, auth.stan)
            assert network is not None and (network.captured, network.held) == (4000, 0)
            entries = [e for e in r.ledger.entries(EntryKind.CAPTURE)
                       if e.authorization_id == network.id]
            assert sorted(e.mti for e in entries) == ["0220", "0221"]
            assert sum(e.changed for e in entries) == 1
    run(scenario)


def test_an_unknown_refund_is_settled_by_a_0201_repeat(pki: Pki, tmp_path: Path) -> None:
    """The 0210 is dropped: the refund stays pending until the 0201 repeat's answer
    makes it succeeded, refunded once at netsim."""
    async def scenario() -> None:
        async with rig(pki, tmp_path / "var") as r:
            intent = await confirmed(r, APPROVE, 3000)
            await r.service.capture("acme", intent.id, 0)
            r.faults.drop_rate = 1.0
            refund = await r.service.create_refund("acme", intent.id, 1000)
            assert refund.status is RefundStatus.PENDING
            r.faults.drop_rate = 0.0

            async def refunded() -> bool:
                record = await r.store.get_refund(refund.id)
                return record is not None and record.status is RefundStatus.SUCCEEDED
            await r.passes_until(refunded)
            assert (await r.intent(intent.id)).amount_refunded == 1000
            network = r.ledger.find_authorization(TERMINAL, (await r.auth(intent.id)).stan)
            assert network is not None and network.refunded == 1000
            assert [e.mti for e in r.ledger.entries(EntryKind.REFUND)] == ["0200", "0201"]
    run(scenario)


def test_reconcile_run_once_resolves_what_a_stopped_gateway_left(tmp_path: Path) -> None:
    """`paygate reconcile run --once` (its own process, netsim running) reverses the
    authorization a gateway left unknown, then exits 0 with nothing pending."""
    data = tmp_path / "var"
    write_dev_certs(data / "pki")
    config = load_config(None, {"PAYGATE_DATA_DIR": str(data)})
    merchant = next(iter(config.merchant_directory()))
    net = config.network
    server = Credentials(data / "pki" / "netsim.crt", data / "pki" / "netsim.key",
                         data / "pki" / "ca.crt")

    async def scenario() -> None:
        ledger = Ledger(data / "netsim.db")
        try:
            async with NetSim(server_context(server), ledger) as sim:
                db = SqliteDatabase(data / "paygate.db")
                store = SqlitePaymentStore(db)
                vault = Vault(SoftwareHsm(data / "hsm", environ={}), SqliteVaultStore(db))
                with SqliteStanStore(data / "stan.db") as stans:
                    trace = TraceAllocator(stans, net.terminal_id)
                    async with NetworkClient("127.0.0.1", sim.port,
                                             client_context(net.tls.credentials()),
                                             terminal_id=net.terminal_id,
                                             acquirer_id=net.acquirer_id, trace=trace,
                                             deadline=DEADLINE) as client:
                        service = PaymentService(store, vault, client, trace,
                                                 config.merchant_directory(),
                                                 acquirer_id=net.acquirer_id)
                        intent = await service.create_intent(merchant.id, 700, "eur", "manual")
                        token = (await vault.tokenize(merchant.id, Card(LOST, 12, 2034, "visa"),
                                                      cvc="123")).token
                        intent = await service.confirm(merchant.id, intent.id, token)
                        assert intent.status is IntentStatus.PROCESSING
                db.close()
                proc = await asyncio.create_subprocess_exec(
                    PAYGATE, "reconcile", "run", "--once", "--data-dir", str(data),
                    "--netsim-port", str(sim.port), stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT)
                out, _ = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode == 0, out.decode()
                summary = json.loads(out.decode().strip().splitlines()[-1])
                assert (summary["reversal_tries"], summary["pending"]) == (1, 0)
                db = SqliteDatabase(data / "paygate.db")
                final = await SqlitePaymentStore(db).get_intent(intent.id)
                db.close()
                assert final is not None and timed_out(final)
                (network,) = ledger.authorizations()
                assert (network.held, network.reversed) == (0, 700)
        finally:
            ledger.close()
    run(scenario)
