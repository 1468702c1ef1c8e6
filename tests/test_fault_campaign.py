"""Seeded fault campaign: a flaky network and a gateway killed (-9) under a mixed load.

netsim runs as a process of its own (``paygate netsim serve --faults-file``, its own
ledger): it drops a share of its responses, adds latency with jitter and resets
connections now and then, while ``paygate up --no-netsim`` (a short network deadline,
so drops become timeouts fast; the reconciler inside) is killed and restarted a few
times under a few hundred payments: manual capture, partial capture, automatic
capture, cancels, refunds, declines, and the lost-response and slow test cards.
Clients retry every call that got no definite answer with the same idempotency key.

Then the faults stop (the file is rewritten, SIGHUP) and the gateway runs until
quiescence: nothing ``processing``, no attempt ``unknown`` or ``recorded``, no refund
``pending``. Afterwards every intent agrees with netsim's ledger, the live holds at
netsim add up to paygate's ``amount_capturable``, no hold is released twice and no
intent is charged twice.

The run is seeded (``PAYGATE_CAMPAIGN_SEED``, else a fresh seed, printed): the flows,
cards, amounts, kill times and netsim's fault decisions follow from it; the
interleaving does not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from paygate.v1 import payments_pb2 as pb
from test_crash import PAYGATE, RETRY, SERVICE, START_LIMIT, Call, Gateway, start_and_tokenize

from gateway.devcerts import write_dev_certs
from netsim import Ledger

CLIENTS: Final = 24
#: How long the load runs (the kills fall inside it) and the most payments it makes.
LOAD_SECONDS: Final = 20.0
MAX_PAYMENTS: Final = 400
DEADLINE: Final = "0.4"
#: netsim answers the slow card after this long: past the deadline, so whether the
#: late approval or the reversal comes first is the race the policy decides.
SLOW_DELAY: Final = "0.55"
APPROVED: Final = "4242424242424242"
DECLINED: Final = "4000000000000002"
LOST: Final = "4000000000000259"
SLOW: Final = "4000000000000267"
#: How many payments use each of the two special cards (spread over the run).
SPECIAL: Final = 4
#: Flows and their weights; the card is APPROVED unless the flow says otherwise.
FLOWS: Final = {"capture": 25, "partial": 15, "automatic": 20, "cancel": 12, "refund": 15,
                "decline": 8}
QUIESCENCE_LIMIT: Final = 60.0
START_TRIES: Final = 8
#: A fixed bug, kept as the message of the assertion that guards against it.
SUPERSEDED: Final = (
    "fixed bug, regressed: the reconciler left superseded reversal tries unknown: a "
    "0420/0421 try whose 0430 was lost (or that was recorded when the process died, then "
    "settled unknown) stays `unknown` after a later try of the same advice was acknowledged "
    "and the authorization is `reversed`; nothing settles it (Reconciler._resolve handles "
    "only unknown authorizations and follow-ups; a dropped 0430 never comes late). Left:")
#: A fixed bug (reproduced when two kills fell close together), kept as the message of the
#: assertion that guards against it.
REFUSED_CONFIRM: Final = (
    "fixed bug, regressed: a confirm retried with its key after TWO kills is refused "
    "FAILED_PRECONDITION intent_unexpected_state (processing) instead of answered with the "
    "intent (the second takeover must still see when the key was first claimed, so that "
    "it finds the authorization the first lost call recorded). Intents (keys):")
#: A known bug, reproduced by the campaign when a kill falls in its window (so the test
#: xfails only when it happened, and only if every other assertion held).
UNRELEASED: Final = (
    "fixed bug, regressed: a remainder left held after a partial capture (the release must "
    "be recorded with the capture's outcome by the service, and checked from the queue for "
    "every approved capture the reconciler settles). Intents (amount held):")
#: How long a client waits for a processing intent to settle before giving up its
#: follow-up call (the reconciler settles it later).
SETTLE_WAIT: Final = 4.0
NO_FAULTS: Final = {"latency": 0.0, "jitter": 0.0, "drop_rate": 0.0, "reset_rate": 0.0}
FINAL: Final = ("requires_payment_method", "requires_capture", "succeeded", "canceled")


class FlakyStartGateway(Gateway):
    """A :class:`Gateway` started again when ``paygate up`` exits while starting: under
    the faults its first sign-on (0800) may go unanswered within one network deadline, and
    ``paygate up`` then gives up (counted in ``failed_starts``, reported in the summary)."""

    failed_starts = 0

    async def start(self) -> None:
        for _ in range(START_TRIES - 1):
            try:
                await super().start()
                return
            except AssertionError:
                if self.proc is None or self.proc.poll() is None:
                    raise
                self.failed_starts += 1
        await super().start()


@dataclass
class Payment:
    """One client's payment: its flow, card, and every mutating call it made."""

    flow: str
    pan: str
    intent_id: str = ""
    calls: list[Call] = field(default_factory=list)
    refused_confirm: Call | None = None


def campaign_faults(rng: random.Random) -> dict[str, float]:
    """The faults netsim applies during the load."""
    return {"latency": round(rng.uniform(0.005, 0.02), 3),
            "jitter": round(rng.uniform(0.1, 0.45), 3),
            "drop_rate": round(rng.uniform(0.10, 0.20), 3),
            "reset_rate": round(rng.uniform(0.005, 0.02), 3)}


@contextlib.asynccontextmanager
async def faulty_netsim(tmp: Path, pki: Path, faults: dict[str, float],
                        seed: int) -> AsyncIterator[tuple[int, Path, Path, int]]:
    """``paygate netsim serve`` with its own ledger and a faults file; (port, ledger path,
    faults file, pid)."""
    ledger, port_file, faults_file = tmp / "netsim.db", tmp / "netsim.port", tmp / "faults.json"
    faults_file.write_text(json.dumps(faults))
    with (tmp / "netsim.log").open("wb") as log:
        proc = subprocess.Popen(
            [PAYGATE, "netsim", "serve", "--cert", str(pki / "netsim.crt"),
             "--key", str(pki / "netsim.key"), "--ca", str(pki / "ca.crt"),
             "--ledger", str(ledger), "--port", "0", "--port-file", str(port_file),
             "--latency", str(faults["latency"]), "--jitter", str(faults["jitter"]),
             "--drop-rate", str(faults["drop_rate"]), "--reset-rate", str(faults["reset_rate"]),
             "--slow-delay", SLOW_DELAY, "--seed", str(seed), "--faults-file", str(faults_file),
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + START_LIMIT
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < end, "netsim did not start"
            await asyncio.sleep(0.02)
        yield int(port_file.read_text()), ledger, faults_file, proc.pid
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def get_intent(gateway: Gateway, intent_id: str) -> pb.PaymentIntent:
    """GetPaymentIntent, retried while there is no definite answer."""
    end = time.monotonic() + 30.0
    while True:
        assert time.monotonic() < end, f"no answer to GetPaymentIntent {intent_id}"
        await gateway.up.wait()
        channel = gateway.channel
        assert channel is not None
        method = channel.unary_unary(f"/{SERVICE}/GetPaymentIntent",
                                     request_serializer=pb.GetPaymentIntentRequest.
                                     SerializeToString,
                                     response_deserializer=pb.PaymentIntent.FromString)
        try:
            intent: pb.PaymentIntent = await method(pb.GetPaymentIntentRequest(id=intent_id),
                                                    timeout=10.0)
            return intent
        except grpc.aio.AioRpcError as err:
            if err.code() not in RETRY:
                raise
            await asyncio.sleep(0.05)


async def settled(gateway: Gateway, intent: pb.PaymentIntent) -> pb.PaymentIntent:
    """The intent once it is no longer processing, or as it stands after SETTLE_WAIT."""
    end = time.monotonic() + SETTLE_WAIT
    while intent.status == pb.PAYMENT_INTENT_STATUS_PROCESSING and time.monotonic() < end:
        await asyncio.sleep(0.1)                               # pacing only
        intent = await get_intent(gateway, intent.id)
    return intent


async def run_call(gateway: Gateway, payment: Payment, call: Call) -> pb.PaymentIntent | None:
    """Make ``call`` until it has a definite answer; the intent it answered, if any."""
    payment.calls.append(call)
    await gateway.call(call)
    assert call.answer is not None
    if call.answer.code != 0 or call.method == "CreateRefund":
        return None
    intent: pb.PaymentIntent = pb.PaymentIntent.FromString(call.answer.data)
    return intent


async def one_payment(gateway: Gateway, rng: random.Random, key: str, payment: Payment,
                      merchant: str, tokens: dict[str, str]) -> None:
    """Create, confirm and follow up one payment according to its flow."""
    automatic = payment.flow in ("automatic", "refund")
    create = await run_call(gateway, payment, Call(
        "CreatePaymentIntent", pb.CreatePaymentIntentRequest(
            merchant_id=merchant, amount=rng.randrange(100, 100_000), currency="eur",
            capture_method=pb.CAPTURE_METHOD_AUTOMATIC if automatic
            else pb.CAPTURE_METHOD_MANUAL, metadata={"key": key}), f"{key}-create"))
    assert create is not None, payment.calls[-1]
    payment.intent_id = create.id
    intent = await run_call(gateway, payment, Call(
        "ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
            id=create.id, payment_method=tokens[payment.pan]), f"{key}-confirm"))
    if intent is None:          # checked at the end (see REFUSED_CONFIRM), after the ledger
        payment.refused_confirm = payment.calls[-1]
        return
    intent = await settled(gateway, intent)
    if intent.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE:
        if payment.flow == "cancel":
            await run_call(gateway, payment, Call(
                "CancelPaymentIntent", pb.CancelPaymentIntentRequest(
                    id=intent.id, cancellation_reason="requested_by_customer"), f"{key}-cancel"))
        elif payment.flow in ("capture", "partial"):
            amount = 0
            if payment.flow == "partial" and intent.amount_capturable > 1:
                amount = rng.randrange(1, intent.amount_capturable)
            await run_call(gateway, payment, Call(
                "CapturePaymentIntent", pb.CapturePaymentIntentRequest(
                    id=intent.id, amount_to_capture=amount), f"{key}-capture"))
    elif intent.status == pb.PAYMENT_INTENT_STATUS_SUCCEEDED and payment.flow == "refund":
        amount = 0 if rng.random() < 0.4 else rng.randrange(1, intent.amount_received + 1)
        await run_call(gateway, payment, Call("CreateRefund", pb.CreateRefundRequest(
            payment_intent=intent.id, amount=amount, reason="requested_by_customer"),
            f"{key}-refund"))


async def client(gateway: Gateway, number: int, rng: random.Random, plan: list[str],
                 merchant: str, tokens: dict[str, str], stop: asyncio.Event,
                 payments: list[Payment]) -> None:
    """Payments one after another until told to stop; the special cards come from
    ``plan`` (shared by every client) first, then random flows."""
    flows, weights = list(FLOWS), list(FLOWS.values())
    n = 0
    while not stop.is_set() and len(payments) < MAX_PAYMENTS:
        if plan and rng.random() < 0.15:
            pan = plan.pop()
            payment = Payment("special", pan)
        else:
            flow = rng.choices(flows, weights)[0]
            payment = Payment(flow, DECLINED if flow == "decline" else APPROVED)
        payments.append(payment)
        await one_payment(gateway, rng, f"fc-{number}-{n}", payment, merchant, tokens)
        n += 1


@dataclass
class Records:
    """What the gateway's store holds after quiescence."""

    intents: dict[str, dict[str, Any]]
    attempts: list[dict[str, Any]]
    refunds: list[dict[str, Any]]
    attempt_statuses: dict[str, list[str]]     # every status an attempt's events gave it
    repeated: set[str]                         # attempts a repeat was recorded for


def read_store(path: Path) -> Records:
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        intents = {row["id"]: dict(row) for row in db.execute("SELECT * FROM payment_intents")}
        attempts = [dict(row) for row in db.execute("SELECT * FROM attempts")]
        refunds = [dict(row) for row in db.execute("SELECT * FROM refunds")]
        statuses: dict[str, list[str]] = collections.defaultdict(list)
        repeated: set[str] = set()
        for row in db.execute("SELECT type, aggregate_type, aggregate_id, payload FROM events "
                              "WHERE aggregate_type = 'attempt' ORDER BY seq"):
            if row["type"] == "attempt.repeated":
                repeated.add(row["aggregate_id"])
            else:
                status = json.loads(row["payload"]).get("status")
                if status:
                    statuses[row["aggregate_id"]].append(status)
    finally:
        db.close()
    return Records(intents, attempts, refunds, statuses, repeated)


#: Unknown or recorded attempts, less the superseded reversal tries (see SUPERSEDED).
OPEN_ATTEMPTS: Final = (
    "SELECT count(*) FROM attempts AS t WHERE t.status IN ('unknown', 'recorded') AND NOT ("
    " t.kind = 'timeout_reversal' AND EXISTS (SELECT 1 FROM attempts AS a WHERE"
    " a.id = t.original_attempt_id AND a.status = 'reversed') AND EXISTS (SELECT 1 FROM"
    " attempts AS r WHERE r.original_attempt_id = t.original_attempt_id AND"
    " r.kind = 'timeout_reversal' AND r.status = 'approved'))")


def unsettled(path: Path) -> tuple[int, int, int]:
    """(intents processing, attempts unknown or recorded other than superseded reversal
    tries, refunds pending) in the store."""
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    try:
        processing = db.execute("SELECT count(*) FROM payment_intents "
                                "WHERE status = 'processing'").fetchone()[0]
        open_attempts = db.execute(OPEN_ATTEMPTS).fetchone()[0]
        pending = db.execute("SELECT count(*) FROM refunds WHERE status = 'pending'").fetchone()[0]
    finally:
        db.close()
    return processing, open_attempts, pending


@dataclass
class Result:
    """What a campaign left behind, for the tests to check."""

    summary: str
    left: tuple[int, int, int]
    records: Records
    payments: list[Payment]
    authorizations: list[Any]
    releases: dict[tuple[str, str], list[Any]]


async def campaign(tmp: Path, seed: int) -> Result:
    rng = random.Random(seed)
    data = tmp / "gateway"
    pki = data / "pki"
    await asyncio.to_thread(write_dev_certs, pki)
    faults = campaign_faults(rng)
    store_path = data / "paygate.db"
    async with faulty_netsim(tmp, pki, faults, rng.randrange(2**31)) as (
            netsim_port, ledger_path, faults_file, netsim_pid):
        gateway = FlakyStartGateway(data, netsim_port, tmp / "gateway.log")
        clients: list[asyncio.Task[None]] = []
        try:
            merchant, tokens = await start_and_tokenize(gateway, (APPROVED, DECLINED, LOST, SLOW))
            plan = [LOST] * SPECIAL + [SLOW] * SPECIAL
            rng.shuffle(plan)
            stop = asyncio.Event()
            payments: list[Payment] = []
            clients = [asyncio.create_task(client(gateway, i, random.Random(rng.random()), plan,
                                                  merchant, tokens, stop, payments))
                       for i in range(CLIENTS)]
            kills = rng.randint(2, 4)
            kill_times = sorted(rng.uniform(1.0, LOAD_SECONDS - 3.0) for _ in range(kills))
            started = time.monotonic()
            for at in kill_times:
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))   # pacing
                await gateway.kill()
                await gateway.start()
            await asyncio.sleep(max(0.0, started + LOAD_SECONDS - time.monotonic()))
            stop.set()
            await asyncio.gather(*clients)

            # The faults stop; the reconciler brings everything to a final state.
            faults_file.write_text(json.dumps(NO_FAULTS))
            os.kill(netsim_pid, signal.SIGHUP)
            load_ended = time.monotonic()
            end = load_ended + QUIESCENCE_LIMIT
            left = unsettled(store_path)
            while left != (0, 0, 0) and time.monotonic() < end:
                await asyncio.sleep(0.5)                             # pacing only
                left = unsettled(store_path)
            quiesced_after = time.monotonic() - load_ended
            assert await gateway.stop() == 0, gateway.log_tail()
        finally:
            for task in clients:
                task.cancel()
            gateway.reap()
        ledger = Ledger(ledger_path, create=False)
        try:
            authorizations = ledger.authorizations()
            releases = {(a.terminal, a.stan): ledger.reversals_of(a.terminal, a.stan)
                        for a in authorizations}
        finally:
            ledger.close()

    records = read_store(store_path)
    summary = summarize(seed, faults, kills, payments, records, quiesced_after)
    summary += f"; {gateway.failed_starts} starts failed to sign on under the faults"
    print(summary)
    return Result(summary, left, records, payments, authorizations, releases)


def superseded(records: Records) -> list[dict[str, Any]]:
    """Reversal tries left ``unknown`` (their 0430 was lost, or they were recorded when the
    process died) although another try of the same advice was acknowledged and the
    authorization is ``reversed``."""
    by_id = {a["id"]: a for a in records.attempts}
    acknowledged = {a["original_attempt_id"] for a in records.attempts
                    if a["kind"] == "timeout_reversal" and a["status"] == "approved"}
    return [a for a in records.attempts
            if a["kind"] == "timeout_reversal" and a["status"] in ("unknown", "recorded")
            and a["original_attempt_id"] in acknowledged
            and by_id[a["original_attempt_id"]]["status"] == "reversed"]


def summarize(seed: int, faults: dict[str, float], kills: int, payments: list[Payment],
              records: Records, quiesced_after: float) -> str:
    auths = [a for a in records.attempts if a["kind"] == "authorization"]
    by_reversal = sum(a["status"] == "reversed" for a in auths)
    by_late_reply = sum("unknown" in records.attempt_statuses[a["id"]]
                        and a["status"] in ("approved", "declined") for a in auths)
    by_repeat = sum(a["id"] in records.repeated and a["status"] not in ("unknown", "recorded")
                    for a in records.attempts)
    retried = sum(bool(c.transient) for p in payments for c in p.calls)
    flows = collections.Counter(p.flow if p.flow != "special" else p.pan[-4:] for p in payments)
    finals = collections.Counter(i["status"] for i in records.intents.values())
    return (f"\nfault campaign PAYGATE_CAMPAIGN_SEED={seed}: {len(payments)} payments "
            f"{dict(flows)} by {CLIENTS} clients; {kills} kills; faults {faults}; "
            f"{retried} calls retried across a failure; final states {dict(finals)}; "
            f"resolved by reversal {by_reversal}, by late reply {by_late_reply}, by repeat "
            f"{by_repeat}; {len(superseded(records))} reversal tries left unknown though "
            f"superseded; quiescent {quiesced_after:.1f} s after the load")


def check_against_ledger(result: Result) -> None:
    """Every assertion of the campaign against netsim's ledger."""
    records, payments = result.records, result.payments
    authorizations, releases = result.authorizations, result.releases
    assert result.left == (0, 0, 0), (
        f"not quiescent after {QUIESCENCE_LIMIT} s: (processing, unknown/recorded attempts, "
        f"pending refunds) = {result.left}; {result.summary}")
    by_trace = {(a["terminal_id"], a["stan"]): a for a in records.attempts
                if a["kind"] == "authorization"}
    unrecorded = [(a.terminal, a.stan) for a in authorizations
                  if (a.terminal, a.stan) not in by_trace]
    assert unrecorded == [], f"0100s at netsim without an attempt row: {unrecorded}"
    sent = collections.Counter(by_trace[(a.terminal, a.stan)]["intent_id"]
                               for a in authorizations)
    twice = [intent for intent, n in sent.items() if n > 1]
    assert twice == [], f"intents with more than one 0100 at netsim: {twice}"
    at_network = {by_trace[(a.terminal, a.stan)]["intent_id"]: a for a in authorizations}

    ignored = {a["id"] for a in superseded(records)}      # see test_no_attempt_is_left_...
    left = [(a["id"], a["kind"], a["status"]) for a in records.attempts
            if a["status"] in ("unknown", "recorded") and a["id"] not in ignored]
    assert left == [], f"attempts left unresolved: {left}"
    pending = [r["id"] for r in records.refunds if r["status"] == "pending"]
    assert pending == [], f"refunds left pending: {pending}"

    for auth in authorizations:
        entries = releases[(auth.terminal, auth.stan)]
        changed = [e for e in entries if e.changed]
        owner = by_trace[(auth.terminal, auth.stan)]["intent_id"]
        where = f"authorization {auth.terminal}/{auth.stan} of {owner}"
        assert len(changed) <= 1, f"{where}: released twice: {changed}"
        assert 0 <= auth.reversed <= auth.amount, f"{where}: released {auth.reversed}"
        assert auth.captured + auth.reversed <= auth.amount, f"{where}: {auth}"
        assert auth.refunded <= auth.captured, f"{where}: {auth}"

    released = {a["intent_id"] for a in records.attempts if a["kind"] == "release"}
    unreleased: dict[str, int] = {}      # the known bug below: intent -> amount left held
    for intent_id, intent in records.intents.items():
        status = intent["status"]
        assert status in FINAL, f"{intent_id} left {status}"
        network = at_network.get(intent_id)
        held = network.held if network is not None else 0
        captured = network.captured if network is not None else 0
        refunded = network.refunded if network is not None else 0
        state = (f"{intent_id}: ours {status} capturable={intent['amount_capturable']} "
                 f"received={intent['amount_received']} refunded={intent['amount_refunded']}; "
                 f"netsim {network}")
        assert intent["amount_received"] == captured, state
        assert intent["amount_refunded"] == refunded, state
        if status == "requires_capture":
            assert network is not None and network.response_code in ("00", "10"), state
            assert held == intent["amount_capturable"] > 0, state
        elif (status == "succeeded" and held > 0 and intent_id not in released
              and network is not None and held == network.amount - captured):
            unreleased[intent_id] = held     # see UNRELEASED: reported as xfail at the end
        else:
            assert held == 0 == intent["amount_capturable"], state
        if status in ("requires_payment_method", "canceled"):
            assert captured == 0, state
        if status == "succeeded":
            assert captured > 0, state
    live = sum(a.held for a in authorizations)
    capturable = sum(i["amount_capturable"] for i in records.intents.values())
    assert live - sum(unreleased.values()) == capturable, (
        f"netsim holds {live}, paygate capturable {capturable}")

    lost_at_network = 0
    for payment in payments:
        if not payment.intent_id:
            continue
        intent = records.intents[payment.intent_id]
        network = at_network.get(payment.intent_id)
        state = f"{payment.pan[-4:]} {payment.intent_id}: {intent}; netsim {network}"
        error = json.loads(intent["last_payment_error"] or "null") or {}
        # A 0100 that never left (no connection: netsim has no record of it) is declined
        # 91 ``processing_error`` on the spot; a timed-out one ends ``network_timeout``.
        not_sent = network is None and error.get("network_response_code") == "91"
        failed = "processing_error" if not_sent else "network_timeout"
        if payment.pan == LOST:
            lost_at_network += network is not None
            assert intent["status"] == "requires_payment_method", state
            assert error.get("code") == failed, state
            assert network is None or (network.held == 0 and network.captured == 0
                                       and network.reversed == network.amount), state
        elif payment.pan == SLOW:
            if intent["status"] == "requires_payment_method":
                assert error.get("code") == failed, state
                assert network is None or network.held == 0, state
            else:
                assert intent["status"] in ("requires_capture", "succeeded"), state
                assert network is not None and network.response_code == "00", state
        elif payment.pan == DECLINED:
            assert intent["status"] == "requires_payment_method", state
            assert error.get("code") in ("card_declined", failed), state
    assert lost_at_network > 0, "no lost-response 0100 reached netsim: the case went untested"
    refused = [p for p in payments if p.refused_confirm is not None]
    unexplained = [(p.refused_confirm.key, p.intent_id, p.refused_confirm.answer)
                   for p in refused if p.refused_confirm is not None and not (
                       p.refused_confirm.answer is not None
                       and p.refused_confirm.answer.code == grpc.StatusCode.FAILED_PRECONDITION
                       .value[0] and b"intent_unexpected_state" in p.refused_confirm.answer.data
                       and p.refused_confirm.transient)]
    assert unexplained == [], f"confirms refused: {unexplained}"
    keys = [(p.intent_id, p.refused_confirm.key) for p in refused if p.refused_confirm]
    assert keys == [], f"{REFUSED_CONFIRM} {keys}; {result.summary}"
    assert not unreleased, f"{UNRELEASED} {unreleased}; {result.summary}"


@pytest.fixture(scope="module")
def campaign_result(tmp_path_factory: pytest.TempPathFactory) -> Result:
    """One campaign (seeded, the seed printed) shared by the tests below."""
    seed = int(os.environ.get("PAYGATE_CAMPAIGN_SEED")
               or random.SystemRandom().randrange(2**32))
    print(f"\nPAYGATE_CAMPAIGN_SEED={seed}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PAYGATE_NETWORK_DEADLINE_SECONDS", DEADLINE)
        return asyncio.run(campaign(tmp_path_factory.mktemp("campaign"), seed))


def test_fault_campaign_leaves_every_intent_final_and_in_agreement_with_the_network(
        campaign_result: Result) -> None:
    """Under dropped, delayed and reset responses and 2 to 4 kills of the gateway, a few
    hundred mixed payments all end final, in agreement with netsim's ledger, with no hold
    released twice and no intent charged twice."""
    check_against_ledger(campaign_result)


def test_no_attempt_is_left_unknown_or_recorded_after_quiescence(
        campaign_result: Result) -> None:
    """After quiescence no attempt of any kind is left unknown or recorded."""
    records = campaign_result.records
    left = [(a["id"], a["kind"], a["status"]) for a in records.attempts
            if a["status"] in ("unknown", "recorded")]
    assert left == [], (f"attempts left unknown or recorded ({SUPERSEDED}): {left}; "
                        f"{campaign_result.summary}")
