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
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from grpc_stack import tokenize_over_http
from paygate.v1 import payments_pb2 as pb

from gateway.api.server import client_channel
from gateway.devcerts import write_dev_certs
from gateway.pki import Credentials
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
          f"(the reconciler's job); {len(intents)} intents in the store")
    assert before_a_kill and interrupted
    # A create retried after a kill found the intent its lost call had committed (its id
    # derives from the claim): one intent per payment, none orphaned.
    assert len(intents) == len(payments), f"{len(intents) - len(payments)} orphaned intents"

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
