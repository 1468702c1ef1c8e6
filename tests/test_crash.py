"""Crash test: ``kill -9`` the gateway at random moments under a load of confirmations.

netsim runs in a process of its own (``paygate netsim serve``, its own ledger: the
network's truth survives the gateway); the gateway is ``paygate up --no-netsim``,
restarted on the same data directory after every kill. Clients retry every call that
got no definite answer with the same idempotency key until one comes. Afterwards:
every 0100 the network saw has its attempt row in the store (record before send), no
intent holds two approved authorizations, every answer agrees with the network, a
repeat of every call gets exactly the stored answer, and the audit chain verifies.

The run is seeded (``PAYGATE_CRASH_SEED``, else a fresh seed, printed): the kill
times, the cards and the amounts follow from it; the interleaving does not.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

import grpc
import pytest
from grpc_stack import tokenize_over_http
from paygate.v1 import payments_pb2 as pb

from gateway.api.server import client_channel
from gateway.devcerts import write_dev_certs
from gateway.payments import convert, idempotency, machine
from gateway.payments.errors import DomainError
from gateway.payments.machine import AttemptTrace
from gateway.payments.model import Attempt, Change, IntentStatus, PaymentIntent
from gateway.payments.replay import IdempotentCalls, ReplayedRefusal
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.pki import Credentials
from gateway.store.sqlite import SqliteDatabase
from netsim import Ledger
from netsim.rules import Status

PAYGATE: Final = str(Path(sys.executable).with_name("paygate"))
SERVICE: Final = "paygate.v1.Payments"
CLIENTS: Final = 8
#: Cards and how often each is used: approved, declined, and two whose answer never
#: comes in time (netsim records and approves them: the attempt stays unknown).
DECLINED: Final = "4000000000000002"
CARDS: Final = {"4242424242424242": 80, DECLINED: 10, "4000000000000267": 5,
                "4000000000000259": 5}
APPROVED_CODES: Final = frozenset({"00", "10"})
#: Codes that are no answer: the call is retried with the same key.
RETRY: Final = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                          grpc.StatusCode.CANCELLED, grpc.StatusCode.ABORTED,
                          grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL,
                          grpc.StatusCode.UNKNOWN})
#: Safety nets against hangs (never asserted on as timings).
START_LIMIT: Final = 30.0
CALL_LIMIT: Final = 30.0
RPC_TIMEOUT: Final = 10.0
DETAILS_KEY: Final = "grpc-status-details-bin"


@dataclass
class Answer:
    """A definite answer: OK with the response bytes, or a refusal with its details."""

    code: int
    data: bytes
    incarnation: int          # which gateway process gave it


@dataclass
class Call:
    """One mutating call as the client made it, with every try and the answer."""

    method: str
    request: Any
    key: str
    answer: Answer | None = None
    transient: list[str] = field(default_factory=list)   # codes of tries that got no answer


@dataclass
class Payment:
    pan: str
    create: Call
    confirm: Call | None = None


class Gateway:
    """``paygate up --no-netsim`` on a data directory: started, killed, started again."""

    def __init__(self, data: Path, netsim_port: int, log: Path) -> None:
        self.data = data
        self.netsim_port = netsim_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.aio.Channel | None = None
        self.old_channels: list[grpc.aio.Channel] = []
        self.info: dict[str, Any] = {}
        self.incarnation = 0
        self.up = asyncio.Event()

    async def start(self) -> None:
        stack_json = self.data / "stack.json"
        stack_json.unlink(missing_ok=True)
        env = {**os.environ, "PAYGATE_LOGGING_LEVEL": "warning",
               "PAYGATE_RATE_LIMIT_RATE": "100000", "PAYGATE_RATE_LIMIT_BURST": "100000"}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [PAYGATE, "up", "--no-netsim", "--data-dir", str(self.data),
                 "--grpc", "127.0.0.1:0", "--http", "127.0.0.1:0",
                 "--netsim-port", str(self.netsim_port)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        end = time.monotonic() + START_LIMIT
        while not stack_json.exists():
            assert self.proc.poll() is None, f"paygate up exited: {self.log_tail()}"
            assert time.monotonic() < end, f"paygate up did not start: {self.log_tail()}"
            await asyncio.sleep(0.02)
        self.info = json.loads(stack_json.read_text())
        tls = self.info["tls"]
        self.channel = client_channel(self.info["grpc"], Credentials(
            Path(tls["client_cert"]), Path(tls["client_key"]), Path(tls["ca"])))
        self.incarnation += 1
        self.up.set()

    async def kill(self) -> None:
        """SIGKILL: no drain, no cleanup, whatever was in flight stays as it was (calls
        in flight fail UNAVAILABLE; their channel is closed at the end)."""
        assert self.proc is not None and self.channel is not None
        self.up.clear()
        self.proc.kill()
        await asyncio.to_thread(self.proc.wait)
        self.old_channels.append(self.channel)

    async def stop(self) -> int:
        """SIGTERM: the graceful way; the exit status."""
        assert self.proc is not None and self.channel is not None
        self.up.clear()
        for channel in (*self.old_channels, self.channel):
            await channel.close()
        self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, 60)

    def reap(self) -> None:
        """Kill the process if it still runs (a failed test must not leave it behind)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    async def call(self, call: Call) -> None:
        """Send ``call`` until it gets a definite answer (same key every time)."""
        end = time.monotonic() + CALL_LIMIT
        while True:
            assert time.monotonic() < end, (
                f"no definite answer to {call.method} {call.key}: {call.transient[-5:]}")
            await self.up.wait()
            channel, incarnation = self.channel, self.incarnation
            assert channel is not None
            method = channel.unary_unary(f"/{SERVICE}/{call.method}",
                                         request_serializer=_serialize,
                                         response_deserializer=None)
            try:
                data = await method(call.request, metadata=(("idempotency-key", call.key),),
                                    timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as err:
                if err.code() in RETRY:
                    call.transient.append(err.code().name)
                    await asyncio.sleep(0.05)
                    continue
                call.answer = Answer(err.code().value[0], _details(err), incarnation)
                return
            call.answer = Answer(0, bytes(data), incarnation)
            return


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


def _details(err: grpc.aio.AioRpcError) -> bytes:
    for key, value in err.trailing_metadata() or ():
        if key == DETAILS_KEY:
            return bytes(value)
    return b""


@contextlib.asynccontextmanager
async def netsim_process(tmp: Path, pki: Path) -> AsyncIterator[tuple[int, Path]]:
    """``paygate netsim serve`` with its own ledger; (port, ledger path)."""
    ledger, port_file = tmp / "netsim.db", tmp / "netsim.port"
    with (tmp / "netsim.log").open("wb") as log:
        proc = subprocess.Popen(
            [PAYGATE, "netsim", "serve", "--cert", str(pki / "netsim.crt"),
             "--key", str(pki / "netsim.key"), "--ca", str(pki / "ca.crt"),
             "--ledger", str(ledger), "--port", "0", "--port-file", str(port_file),
             "--log-level", "warning"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        end = time.monotonic() + START_LIMIT
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < end, "netsim did not start"
            await asyncio.sleep(0.02)
        yield int(port_file.read_text()), ledger
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 30)


async def pay(gateway: Gateway, client: int, rng: random.Random, tokens: dict[str, str],
              merchant: str, stop: asyncio.Event, payments: list[Payment]) -> None:
    """One client: create (manual capture) then confirm, until told to stop."""
    pans, weights = list(CARDS), list(CARDS.values())
    n = 0
    while not stop.is_set():
        pan = rng.choices(pans, weights)[0]
        key = f"crash-{client}-{n}"
        create = Call("CreatePaymentIntent", pb.CreatePaymentIntentRequest(
            merchant_id=merchant, amount=rng.randrange(100, 100_000), currency="eur",
            capture_method=pb.CAPTURE_METHOD_MANUAL, metadata={"key": key}), f"{key}-create")
        payment = Payment(pan, create)
        payments.append(payment)
        await gateway.call(create)
        assert create.answer is not None and create.answer.code == 0, create
        intent = pb.PaymentIntent.FromString(create.answer.data)
        payment.confirm = Call("ConfirmPaymentIntent", pb.ConfirmPaymentIntentRequest(
            id=intent.id, payment_method=tokens[pan]), f"{key}-confirm")
        await gateway.call(payment.confirm)
        n += 1


async def start_and_tokenize(gateway: Gateway, pans: Iterable[str]) -> tuple[str, dict[str, str]]:
    """Start ``gateway`` and tokenize ``pans`` through its HTTP edge: (merchant id, tokens)."""
    await gateway.start()
    merchant = str(gateway.info["merchant"]["id"])
    publishable_key = gateway.info["merchant"]["publishable_key"]
    tokens = {pan: str((await tokenize_over_http(gateway.info["http"], pan,
                                                 publishable_key))["token"])
              for pan in pans}
    return merchant, tokens


async def crash_run(tmp: Path, seed: int) -> None:
    rng = random.Random(seed)
    data = tmp / "gateway"
    pki = data / "pki"
    await asyncio.to_thread(write_dev_certs, pki)
    async with netsim_process(tmp, pki) as (netsim_port, ledger_path):
        gateway = Gateway(data, netsim_port, tmp / "gateway.log")
        clients: list[asyncio.Task[None]] = []
        try:
            merchant, tokens = await start_and_tokenize(gateway, CARDS)
            stop = asyncio.Event()
            payments: list[Payment] = []
            clients = [asyncio.create_task(pay(gateway, i, random.Random(rng.random()),
                                               tokens, merchant, stop, payments))
                       for i in range(CLIENTS)]
            kills = rng.randint(3, 5)
            for _ in range(kills):
                await asyncio.sleep(rng.uniform(0.3, 2.5))     # schedules the kill only
                await gateway.kill()
                await gateway.start()
            await asyncio.sleep(1.0)                           # load on the last process too
            stop.set()
            await asyncio.gather(*clients)

            # Every call again, same key: exactly the stored answer, from the last process.
            calls = [c for p in payments for c in (p.create, p.confirm) if c is not None]
            repeats = [Call(c.method, c.request, c.key) for c in calls]
            for batch in range(0, len(repeats), 32):
                await asyncio.gather(*(gateway.call(r) for r in repeats[batch:batch + 32]))
            assert await gateway.stop() == 0, gateway.log_tail()
        finally:
            for task in clients:
                task.cancel()
            gateway.reap()
        ledger = Ledger(ledger_path, create=False)
        try:
            authorizations = ledger.authorizations()
        finally:
            ledger.close()

    for call, repeat in zip(calls, repeats, strict=True):
        assert call.answer is not None and repeat.answer is not None
        assert (repeat.answer.code, repeat.answer.data) == (call.answer.code, call.answer.data), (
            f"{call.method} {call.key}: the repeat differs from the stored answer")
    before_a_kill = [c for c in calls
                     if c.answer is not None and c.answer.incarnation < gateway.incarnation]
    interrupted = [c for c in calls if c.transient]
    aborted = sum(c.transient.count("ABORTED") for c in calls)

    db = sqlite3.connect(f"{(data / 'paygate.db').as_uri()}?mode=ro", uri=True)
    try:
        attempts = db.execute("SELECT intent_id, kind, status, stan, terminal_id, amount "
                              "FROM attempts").fetchall()
        intents = dict(db.execute("SELECT id, status FROM payment_intents").fetchall())
    finally:
        db.close()
    by_trace = {(terminal, stan): (intent_id, amount)
                for intent_id, kind, _status, stan, terminal, amount in attempts
                if kind == "authorization"}

    # Record before send: every 0100 the network saw has its attempt row.
    unrecorded = [(a.terminal, a.stan) for a in authorizations
                  if (a.terminal, a.stan) not in by_trace]
    assert unrecorded == [], f"sent without a record: {unrecorded}"
    assert all(by_trace[(a.terminal, a.stan)][1] == a.amount for a in authorizations)
    at_network = {by_trace[(a.terminal, a.stan)][0]: a for a in authorizations}
    # No double charge: one confirm key per intent, so at most one 0100 per intent (a
    # retry after a crash never sends another), let alone two approved ones.
    sent = collections.Counter(by_trace[(a.terminal, a.stan)][0] for a in authorizations)
    assert all(n == 1 for n in sent.values()), f"two 0100s for one intent: {sent.most_common(3)}"

    # Every confirm got a definite answer (no refusal: each was valid) that agrees with
    # the network.
    outcomes: collections.Counter[str] = collections.Counter()
    for payment in payments:
        assert payment.confirm is not None and payment.confirm.answer is not None
        answer = payment.confirm.answer
        assert answer.code == 0, f"{payment.confirm.key} refused: {answer}"
        intent = pb.PaymentIntent.FromString(answer.data)
        outcomes[pb.PaymentIntentStatus.Name(intent.status)] += 1
        network = at_network.get(intent.id)
        if payment.pan == DECLINED:
            assert intent.status != pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE, intent.id
        if intent.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE:
            assert network is not None and network.response_code in APPROVED_CODES
            assert network.held == intent.amount_capturable == intent.amount, intent.id
        elif intent.status == pb.PAYMENT_INTENT_STATUS_REQUIRES_PAYMENT_METHOD:
            assert intent.last_payment_error.code, intent.id
            if network is not None and network.response_code in APPROVED_CODES:
                # Approved while the gateway was being killed: the reconciler reversed it
                # (0430 acknowledged) before the intent went back, so nothing stays held.
                assert intent.last_payment_error.code == "network_timeout", intent
                assert network.status is Status.REVERSED and network.held == 0, network
        else:
            assert intent.status == pb.PAYMENT_INTENT_STATUS_PROCESSING, intent

    log = gateway.log.read_text(errors="replace")
    takeovers = {answer: log.count(f"answer={answer}") for answer in ("recorded", "run_again")
                 if "idempotency_claim_taken_over" in log}
    unknown = [a for a in attempts if a[2] in ("unknown", "recorded")]
    processing = [i for i, status in intents.items() if status == "processing"]
    recorded_not_sent = len(by_trace) - len(authorizations)
    print(f"\ncrash test seed={seed}: {len(payments)} payments by {CLIENTS} clients, "
          f"{kills} kills; confirm answers {dict(outcomes)}; {len(interrupted)} calls "
          f"retried across a failure ({aborted} ABORTED tries; stale claims taken over, "
          f"answered from the store or run again: {takeovers}), {len(before_a_kill)} answered "
          f"by a process killed later and replayed; {len(authorizations)} authorizations at "
          f"netsim, {recorded_not_sent} attempts recorded but never seen by netsim; "
          f"{len(processing)} intents left processing with {len(unknown)} unknown attempts "
          f"(the reconciler's job); {len(intents) - len(payments)} intents orphaned by a "
          f"retried create")
    assert before_a_kill and interrupted

    verify = subprocess.run([PAYGATE, "audit", "verify", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_kill_9_under_load_loses_nothing_and_charges_nothing_twice(tmp_path: Path) -> None:
    """Killing the gateway (-9) 3 to 5 times under concurrent confirmations leaves no 0100
    without its attempt row, no intent charged twice, and every retried call with one
    definite answer that a repeat returns byte for byte."""
    seed = int(os.environ.get("PAYGATE_CRASH_SEED") or random.SystemRandom().randrange(2**32))
    print(f"PAYGATE_CRASH_SEED={seed}")
    asyncio.run(crash_run(tmp_path, seed))


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
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        first = STARTED - 50
        await env.lost_claim("CreatePaymentIntent", request, first, "k")
        fingerprint = idempotency.request_fingerprint(
            "CreatePaymentIntent", request.SerializeToString(deterministic=True))
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
        request = pb.CreatePaymentIntentRequest(merchant_id="acme", amount=100, currency="eur")
        first = STARTED - 50
        await env.lost_claim("CreatePaymentIntent", request, first, "k")
        fingerprint = idempotency.request_fingerprint(
            "CreatePaymentIntent", request.SerializeToString(deterministic=True))
        taker = idempotency.new_record(SCOPE, "k", fingerprint, env.clock.now)
        assert await env.store.takeover_idempotency(taker, STARTED) is not None
        assert not await env.store.release_idempotency(SCOPE, "k", first)
        assert not await env.store.complete_idempotency(SCOPE, "k", b"slow", 0, b"", first)
        assert await env.store.complete_idempotency(SCOPE, "k", b"taker", 0, b"",
                                                    taker.created)
        assert await env.run("CreatePaymentIntent", request, "k") == b"taker"
    run_scenario(tmp_path, scenario)
