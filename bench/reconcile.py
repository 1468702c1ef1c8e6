"""Reconciliation: how long the reconciler takes to resolve 10,000 unknown authorizations
against netsim (reversal advices until each hold is released), goal <= 15 s.

Setup, not timed, per round, on fresh files: netsim runs in its own process
(``paygate netsim serve``, mutual TLS on loopback, its own ledger). In the bench
process, the payments service (SQLite store, software HSM and vault, network
client) creates ``--intents`` manual-capture intents and confirms each with the
lost-response card 4000000000000259, ``--setup-in-flight`` at a time with a
``--setup-deadline`` second deadline: netsim approves and records every 0100 (a real
hold) and drops the 0110, so every authorization ends ``unknown`` and every intent
``processing``, exactly as after a real timeout.

Timed: a fresh reconciler, configured as ``paygate up`` configures it (network
client deadline 2 s, 256 in flight, one connection; ``Reconciler`` defaults
``--batch`` 2000 and ``--concurrency`` 128; passes every 0.2 s, a full batch followed at
once), runs from its start (the first pass sweeps the store and ingests the outbox)
until its queue is empty. Then, untimed, every intent must be
``requires_payment_method`` with ``network_timeout``, every authorization
``reversed``, and netsim's ledger must show no money held and exactly one reversal
that changed something per authorization.

    .venv/bin/python bench/reconcile.py [--intents 10000] [--rounds 3]
        [--batch 2000] [--concurrency 128]
"""

from __future__ import annotations

import os.path
import sys

# First of all: this file's folder must leave the import path (bench/codec.py would
# shadow the codec package, bench/tokenize.py the standard library's tokenize).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import inspect  # noqa: E402
import logging  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import structlog  # noqa: E402

from gateway.cards import Card  # noqa: E402
from gateway.loops import LOOPS, run  # noqa: E402
from gateway.merchants import DEMO, MerchantDirectory  # noqa: E402
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator  # noqa: E402
from gateway.payments.model import AttemptKind, AttemptStatus, IntentStatus  # noqa: E402
from gateway.payments.service import PaymentService  # noqa: E402
from gateway.payments.sqlite_store import SqlitePaymentStore  # noqa: E402
from gateway.pki import Authority, Credentials, client_context  # noqa: E402
from gateway.store.sqlite import SqliteDatabase  # noqa: E402
from gateway.vault import SqliteVaultStore, Vault  # noqa: E402
from hsm_sim import SoftwareHsm  # noqa: E402
from netsim import Ledger  # noqa: E402
from reconciler.queue import ReconcilerQueue  # noqa: E402
from reconciler.worker import Reconciler  # noqa: E402

GOAL = 15.0
LOST = "4000000000000259"
MERCHANT = "acme"
TERMINAL = "TERM0001"
ACQUIRER = "440001"
MERCHANTS = MerchantDirectory.from_data(DEMO)
#: As ``paygate up`` runs the reconciler (gateway.stack): its pass interval, and the
#: network client's defaults (gateway.config).
INTERVAL = 0.2
DEADLINE = 2.0
MAX_IN_FLIGHT = 256


@dataclass(frozen=True)
class Round:
    seconds: float
    first_pass: float          # until the sweep + ingest of the first pass had queued all
    advices: int               # 0420 + 0421 sent
    repeats: int               # of which 0421


# ---------------------------------------------------------------- netsim process

def _spawn(args: list[str], port_file: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(400):
        if port_file.exists() and port_file.read_text().strip():
            return proc
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"netsim failed: {err}")
        time.sleep(0.05)
    raise RuntimeError("netsim did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- the parts

async def _setup(folder: Path, port: int, creds: Credentials, n: int, in_flight: int,
                 deadline: float) -> None:
    """``n`` intents, each confirmed with the lost-response card: ``n`` unknown
    authorizations whose 0100 netsim approved and recorded."""
    db = SqliteDatabase(folder / "paygate.db")
    stans = SqliteStanStore(folder / "stan.db", reserve=100)
    try:
        store = SqlitePaymentStore(db)
        vault = Vault(SoftwareHsm(folder / "hsm", environ={}), SqliteVaultStore(db))
        trace = TraceAllocator(stans, TERMINAL)
        token = (await vault.tokenize(MERCHANT, Card(LOST, 12, 2034, "visa"))).token
        async with NetworkClient("127.0.0.1", port, client_context(creds),
                                 terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                                 deadline=deadline, max_in_flight=in_flight) as client:
            service = PaymentService(store, vault, client, trace, MERCHANTS,
                                     acquirer_id=ACQUIRER)
            slots = asyncio.Semaphore(in_flight)

            async def one(i: int) -> None:
                async with slots:
                    intent = await service.create_intent(MERCHANT, 1000 + i % 9000, "eur",
                                                         "manual", f"bench {i}")
                    intent = await service.confirm(MERCHANT, intent.id, token)
                    if intent.status is not IntentStatus.PROCESSING:
                        raise RuntimeError(f"setup: intent {intent.status.value}")

            await asyncio.gather(*(one(i) for i in range(n)))
        unknown = await store.attempts_with_status(AttemptStatus.UNKNOWN, limit=2 * n)
        if len(unknown) != n:
            raise RuntimeError(f"setup: {len(unknown)} unknown authorizations, not {n}")
    finally:
        db.close()
        stans.close()


async def _reconcile(folder: Path, port: int, creds: Credentials, n: int, batch: int,
                     concurrency: int) -> Round:
    """The timed part: a fresh reconciler until its queue is empty; then the checks
    on our side."""
    db = SqliteDatabase(folder / "paygate.db")
    stans = SqliteStanStore(folder / "stan.db", reserve=100)
    try:
        store = SqlitePaymentStore(db)
        trace = TraceAllocator(stans, TERMINAL)
        async with NetworkClient("127.0.0.1", port, client_context(creds),
                                 terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                                 deadline=DEADLINE, max_in_flight=MAX_IN_FLIGHT) as client:
            queue = ReconcilerQueue(db)
            reconciler = Reconciler(store, queue, client, trace, MERCHANTS,
                                    acquirer_id=ACQUIRER, stale_after=max(30.0, 5 * DEADLINE),
                                    batch=batch, concurrency=concurrency)
            stop = asyncio.Event()
            begin = time.perf_counter()
            worker = asyncio.create_task(reconciler.run(stop, INTERVAL))
            first_pass = 0.0
            while True:
                await asyncio.sleep(0.01)
                if not first_pass and (len(await queue.due(2**62, n)) == n
                                       or reconciler.stats.resolved):
                    first_pass = time.perf_counter() - begin
                if reconciler.stats.resolved >= n and not await queue.due(2**62, 1):
                    break
                if worker.done():
                    raise RuntimeError("the reconciler stopped")
            seconds = time.perf_counter() - begin
            stop.set()
            await worker
        stats = reconciler.stats
        reversals = await store.attempts_with_status(AttemptStatus.REVERSED, limit=2 * n)
        if len(reversals) != n or stats.resolved != n:
            raise RuntimeError(f"{len(reversals)} authorizations reversed, "
                               f"{stats.resolved} resolved, of {n}")
        if await store.attempts_with_status(AttemptStatus.UNKNOWN,
                                            AttemptKind.AUTHORIZATION, limit=1):
            raise RuntimeError("an authorization is still unknown")
        for auth in reversals:
            intent = await store.get_intent(auth.intent_id)
            if (intent is None or intent.status is not IntentStatus.REQUIRES_PAYMENT_METHOD
                    or intent.last_payment_error is None
                    or intent.last_payment_error.code != "network_timeout"):
                raise RuntimeError(f"intent {auth.intent_id} did not end as expected")
        tries = await store.attempts_with_status(AttemptStatus.APPROVED,
                                                 AttemptKind.TIMEOUT_REVERSAL, limit=4 * n)
        repeats = stats.reversal_tries - n
        if len(tries) != n:
            raise RuntimeError(f"{len(tries)} acknowledged reversal tries, not {n}")
        return Round(seconds, first_pass, stats.reversal_tries, repeats)
    finally:
        db.close()
        stans.close()


def _check_netsim(ledger_path: Path, n: int) -> str:
    """Netsim's side: ``n`` approved authorizations, nothing held, and exactly one
    reversal that changed something per authorization."""
    ledger = Ledger(ledger_path)
    try:
        auths = ledger.authorizations()
        reversals = ledger.entries("reversal")
    finally:
        ledger.close()
    approved = [a for a in auths if a.response_code == "00"]
    held = sum(a.held for a in auths)
    released = sum(a.reversed for a in approved)
    changed = Counter(e.authorization_id for e in reversals if e.changed)
    ids = {a.id for a in approved}
    if len(approved) != n or held != 0:
        raise RuntimeError(f"netsim: {len(approved)} approved, {held} still held")
    if set(changed) != ids or any(c != 1 for c in changed.values()):
        raise RuntimeError("netsim: not exactly one effective reversal per authorization")
    if released != sum(a.amount for a in approved):
        raise RuntimeError("netsim: released amount differs from the authorized amount")
    return (f"netsim: {len(approved)} authorizations, held 0 of {released} released, "
            f"{len(reversals)} reversal advices journaled, {sum(changed.values())} changed "
            f"a hold (one each)")


def _round(args: argparse.Namespace) -> tuple[Round, str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        authority = Authority("bench CA")
        server = authority.write(folder, "netsim", server=True)
        creds = authority.write(folder, "gateway")
        paygate = str(Path(sys.executable).with_name("paygate"))
        sim = _spawn([paygate, "netsim", "serve", "--cert", str(server.cert), "--key",
                      str(server.key), "--ca", str(server.ca), "--port", "0",
                      "--ledger", str(folder / "ledger.db"), "--log-level", "warning",
                      "--port-file", str(folder / "netsim.port")], folder / "netsim.port")
        try:
            port = int((folder / "netsim.port").read_text())
            start = time.perf_counter()
            asyncio.run(_setup(folder, port, creds, args.intents, args.setup_in_flight,
                               args.setup_deadline))
            setup = time.perf_counter() - start
            result = run(_reconcile(folder, port, creds, args.intents, args.batch,
                                    args.concurrency), args.loop)
        finally:
            _stop(sim)
        return result, _check_netsim(folder / "ledger.db", args.intents), setup


def _yardstick() -> Any:
    """bench/yardstick.py's functions (run by path: this folder is off the import path)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("yardstick.py"))))


def main() -> int:
    parser = argparse.ArgumentParser(description="reconciler: resolve unknown authorizations")
    parser.add_argument("--intents", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    # The reconciler's own defaults, as `paygate up` runs it.
    defaults = inspect.signature(Reconciler).parameters
    parser.add_argument("--batch", type=int, default=defaults["batch"].default)
    parser.add_argument("--concurrency", type=int, default=defaults["concurrency"].default)
    parser.add_argument("--setup-in-flight", type=int, default=1000)
    parser.add_argument("--setup-deadline", type=float, default=0.5)
    parser.add_argument("--loop", choices=LOOPS, default="auto",
                        help="the reconciler's event loop, as `paygate up --loop` (default: "
                             "uvloop when installed)")
    args = parser.parse_args()
    # The setup logs every lost 0110, the reconciler every reversal: errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))

    print(f"reconcile benchmark: {args.intents} unknown authorizations (lost-response card), "
          f"netsim in its own process, batch {args.batch}, concurrency {args.concurrency}, "
          f"client deadline {DEADLINE:g} s / {MAX_IN_FLIGHT} in flight, pass interval "
          f"{INTERVAL:g} s, {os.cpu_count()} cores, {args.rounds} round(s)")
    rounds: list[Round] = []
    yardstick = _yardstick()
    before: float = yardstick.rsa_rate()
    for i in range(args.rounds):
        result, netsim, setup = _round(args)
        rounds.append(result)
        print(f"round {i + 1}: {result.seconds:6.2f} s  {args.intents / result.seconds:7.0f} "
              f"attempts/s  (first pass queued all after {result.first_pass:.2f} s; "
              f"{result.advices} advices, {result.repeats} of them 0421; setup {setup:.1f} s)")
        print(f"         {netsim}; every intent requires_payment_method/network_timeout")
    after: float = yardstick.rsa_rate()
    print(yardstick.bracket(before, after))
    seconds = statistics.median(r.seconds for r in rounds)
    verdict = "met" if seconds <= GOAL else "NOT met"
    print(f"median: {seconds:.2f} s, {args.intents / seconds:.0f} attempts/s "
          f"(goal <= {GOAL:g} s for {args.intents}: {verdict})")
    return 0 if seconds <= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
