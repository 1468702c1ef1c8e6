"""Payments per second end to end through ``paygate up``, against pairs of unary calls per
second to a bare ``grpc.aio`` mutual-TLS echo server, with the same client, in one run.

``paygate up`` (gRPC with mutual TLS, the payments service, the store, the vault, the HTTP
edge and the embedded netsim, all in one process) runs as a subprocess on a temporary data
dir. A pool of distinct cards is tokenized through the HTTP edge beforehand (one token per
payment: each confirm is the first authorization of its token, so it also consumes the
CVC held in memory). The load generator (this process) keeps ``--in-flight`` payments
outstanding on one ``client_channel`` (the gateway's own mutual-TLS ``grpc.aio``
channel); one payment is CreatePaymentIntent (manual capture) then ConfirmPaymentIntent
(an approved card), each with its own idempotency key; latency is per payment, end to end.

The peer is a bare ``grpc.aio`` server in its own process with the stack's certificates
(``gateway-server``, client certificates required) and one generic unary method that
answers the request bytes; each of its "payments" is two sequential calls with the
serialized Create and Confirm requests and the same metadata, through the same client.

Every network attempt is fsync-durable before it is sent: the service commits the attempt
(row + event) through the group-committing store (SQLite WAL, ``synchronous=FULL``) and
awaits the commit before writing the 0100 to netsim, and the STAN is committed (and
fsynced) in its own SQLite file before that. Rounds alternate (ours, echo, ...) with both
servers up the whole time; the median ratio is reported.

    .venv/bin/python bench/e2e.py [--payments 2000] [--in-flight 64] [--rounds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# First of all: this file's folder must leave the import path (bench/codec.py would shadow
# the codec package and bench/tokenize.py the standard library's tokenize).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import signal  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Awaitable, Callable, Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

import aiohttp  # noqa: E402
import grpc  # noqa: E402
from paygate.v1 import payments_pb2 as pb  # noqa: E402
from paygate.v1 import payments_pb2_grpc  # noqa: E402

from gateway.api.server import client_channel, server_credentials  # noqa: E402
from gateway.cards import luhn_digit  # noqa: E402
from gateway.jwe import encrypt_compact  # noqa: E402
from gateway.pki import Credentials  # noqa: E402

GOAL = 0.60
TAIL = 2.5            # p99 <= TAIL x p50 (ours)
ECHO_METHOD = "/bench.Echo/Echo"
AMOUNT = 1999
TIMEOUT = 30.0
# Raised so that the bench measures the gateway, not the token bucket (100/s by default).
STACK_ENV = {"PAYGATE_RATE_LIMIT_RATE": "1000000000", "PAYGATE_RATE_LIMIT_BURST": "1000000000"}


@dataclass
class Phase:
    """One side's share of a round: rate, latencies, CPU seconds per payment or pair."""

    rps: float
    lat: list[float]
    server_cpu: float
    client_cpu: float


@dataclass
class Round:
    ours: Phase
    echo: Phase

    @property
    def ratio(self) -> float:
        return self.ours.rps / self.echo.rps


def _cpu(pid: int | None) -> float:
    """CPU seconds (user + system, all threads) of process ``pid``, or of this one."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _quantiles(lat: list[float]) -> tuple[float, float]:
    q = statistics.quantiles(lat, n=100)
    return q[49], q[98]


def _tail(lat: list[float]) -> float:
    p50, p99 = _quantiles(lat)
    return p99 / p50


async def _drive(n: int, in_flight: int,
                 one: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            start = time.perf_counter()
            await one(i)
            latencies.append(time.perf_counter() - start)

    begin = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    return n / (time.perf_counter() - begin), latencies


def _key() -> tuple[tuple[str, str]]:
    return (("idempotency-key", uuid.uuid4().hex),)


# ---------------------------------------------------------------- the echo peer

async def _echo_server(pki: Path, port_file: Path) -> None:
    async def echo(request: bytes, context: Any) -> bytes:
        return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}),))
    tls = Credentials(pki / "gateway-server.crt", pki / "gateway-server.key", pki / "ca.crt")
    await serve_until_signalled(server, server_credentials(tls), port_file)


async def serve_until_signalled(server: grpc.aio.Server, credentials: grpc.ServerCredentials,
                                port_file: Path) -> None:
    """Start ``server`` on a free loopback port, write the port to ``port_file``
    (atomically) and serve until SIGINT/SIGTERM."""
    port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    tmp = port_file.with_suffix(".tmp")
    tmp.write_text(str(port))
    tmp.replace(port_file)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


# ---------------------------------------------------------------- processes

def _spawn(args: list[str], ready: Path, log: Path,
           env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, **(env or {})})
    for _ in range(1200):
        if ready.exists():
            return proc
        if proc.poll() is not None:
            raise SystemExit(f"{args[1]} exited during start-up:\n{log.read_text()[-2000:]}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{args[1]} did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------- tokens

def _cards(n: int) -> Iterator[str]:
    base = int.from_bytes(os.urandom(6), "big") % 10**9
    for i in range(n):
        head = f"411111{(base + i) % 10**9:09d}"
        yield head + luhn_digit(head)


async def _tokenize(info: dict[str, Any], n: int, concurrency: int = 32) -> list[str]:
    """``n`` distinct cards through the HTTP edge, as the iframe SDK sends them."""
    base = info["http"]
    headers = {"Authorization": f"Bearer {info['merchant']['publishable_key']}"}
    tokens: list[str] = []
    async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency)) as http:
        async with http.get(base + "/v1/keys") as response:
            jwk = (await response.json(content_type=None))["keys"][0]
        pans = iter(_cards(n))

        async def worker() -> None:
            for pan in pans:
                card = json.dumps({"number": pan, "exp_month": 12, "exp_year": 2034,
                                   "cvc": "123", "iat": int(time.time())}).encode()
                async with http.post(base + "/v1/tokens", headers=headers,
                                     json={"encrypted_card": encrypt_compact(card, jwk)}) as r:
                    body = await r.json(content_type=None)
                    if r.status != 200:
                        raise SystemExit(f"tokenization refused: {body}")
                    tokens.append(str(body["token"]))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    if len(set(tokens)) != n:
        raise SystemExit("the tokens are not distinct")
    return tokens


# ---------------------------------------------------------------- the load

class Load:
    """Both sides' payments, on one channel each (opened once, reused by every round)."""

    def __init__(self, info: dict[str, Any], echo_target: str, tokens: list[str],
                 in_flight: int) -> None:
        creds = Credentials(Path(info["tls"]["client_cert"]), Path(info["tls"]["client_key"]),
                            Path(info["tls"]["ca"]))
        self._ours = client_channel(info["grpc"], creds)
        self._echo = client_channel(echo_target, creds)
        self._stub = payments_pb2_grpc.PaymentsStub(self._ours)  # type: ignore[no-untyped-call]
        self._call = self._echo.unary_unary(ECHO_METHOD)
        self._merchant = str(info["merchant"]["id"])
        self._tokens = iter(tokens)
        self._in_flight = in_flight
        self.failures: list[str] = []
        self.payments = 0
        # The echo's two requests: the same sizes as a real Create and Confirm.
        create = self._create_request().SerializeToString()
        confirm = pb.ConfirmPaymentIntentRequest(id="pi_" + "x" * 24,
                                                 payment_method=tokens[0]).SerializeToString()
        self._echo_requests = (create, confirm)

    def _create_request(self) -> Any:
        return pb.CreatePaymentIntentRequest(
            merchant_id=self._merchant, amount=AMOUNT, currency="eur",
            capture_method=pb.CAPTURE_METHOD_MANUAL, description="bench e2e")

    async def close(self) -> None:
        await self._ours.close()
        await self._echo.close()

    async def ours(self, n: int) -> tuple[float, list[float]]:
        tokens = [next(self._tokens) for _ in range(n)]
        stub = self._stub

        async def one(i: int) -> None:
            intent = await stub.CreatePaymentIntent(self._create_request(), metadata=_key(),
                                                    timeout=TIMEOUT)
            intent = await stub.ConfirmPaymentIntent(pb.ConfirmPaymentIntentRequest(
                id=intent.id, payment_method=tokens[i]), metadata=_key(), timeout=TIMEOUT)
            if intent.status != pb.PAYMENT_INTENT_STATUS_REQUIRES_CAPTURE:
                self.failures.append(f"{intent.id}: status {intent.status}")
            self.payments += 1

        return await _drive(n, self._in_flight, one)

    async def echo(self, n: int) -> tuple[float, list[float]]:
        call = self._call
        create, confirm = self._echo_requests

        async def one(i: int) -> None:
            first = await call(create, metadata=_key(), timeout=TIMEOUT)
            second = await call(confirm, metadata=_key(), timeout=TIMEOUT)
            if first != create or second != confirm:
                self.failures.append("echo mismatch")

        return await _drive(n, self._in_flight, one)


async def _phase(run: Callable[[int], Awaitable[tuple[float, list[float]]]], n: int,
                 server: int) -> Phase:
    server_cpu, client_cpu = _cpu(server), _cpu(None)
    rps, lat = await run(n)
    return Phase(rps, lat, (_cpu(server) - server_cpu) / n, (_cpu(None) - client_cpu) / n)


async def _run(info: dict[str, Any], echo_target: str, pids: tuple[int, int],
               args: argparse.Namespace) -> tuple[list[Round], int, tuple[float, float]]:
    warmup = min(args.payments, 4 * args.in_flight)
    started = time.perf_counter()
    tokens = await _tokenize(info, warmup + args.rounds * args.payments)
    print(f"tokenized {len(tokens)} distinct cards through the HTTP edge in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    load = Load(info, echo_target, tokens, args.in_flight)
    rounds: list[Round] = []
    try:
        await load.ours(warmup)      # connections, TLS, caches, SQLite pages
        await load.echo(warmup)
        # The yardstick (blocking, nothing in flight): just before the first round.
        yardstick = _yardstick()
        before: float = yardstick.rsa_rate()
        for i in range(args.rounds):
            # Interleaved rounds, both servers up the whole time: noise hits both alike.
            ours = await _phase(load.ours, args.payments, pids[0])
            echo = await _phase(load.echo, args.payments, pids[1])
            rounds.append(Round(ours, echo))
            print(f"round {i + 1}: {ours.rps:.0f} payments/s, echo {echo.rps:.0f} pairs/s",
                  file=sys.stderr)
        after: float = yardstick.rsa_rate()          # and just after the last one
    finally:
        await load.close()
    if load.failures:
        raise SystemExit(f"{len(load.failures)} payments failed, e.g. {load.failures[0]}")
    return rounds, load.payments, (before, after)


def _approved_authorizations(data: Path) -> tuple[int, int]:
    """(approved authorization attempts in the gateway's store, approved 0100s in netsim's
    ledger), read after the stack stopped."""
    with contextlib.closing(sqlite3.connect(f"file:{data / 'paygate.db'}?mode=ro",
                                            uri=True)) as db:
        ours = db.execute("SELECT count(*) FROM attempts WHERE kind = 'authorization' "
                          "AND status = 'approved'").fetchone()[0]
    with contextlib.closing(sqlite3.connect(f"file:{data / 'netsim.db'}?mode=ro",
                                            uri=True)) as db:
        network = db.execute("SELECT count(*) FROM authorizations "
                             "WHERE status = 'approved'").fetchone()[0]
    return int(ours), int(network)


def _row(name: str, phase: Phase) -> str:
    p50, p99 = _quantiles(phase.lat)
    return (f"{name:32} {phase.rps:8.0f} {p50 * 1e3:8.1f} {p99 * 1e3:8.1f} {p99 / p50:8.2f} "
            f"{phase.server_cpu * 1e3:10.2f} {phase.client_cpu * 1e3:10.2f}")


def _yardstick() -> Any:
    """bench/yardstick.py's functions (run by path: this folder is off the import path)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("yardstick.py"))))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--payments", type=int, default=2000, help="payments per round")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                        help="the event loop of paygate up and of the echo server alike "
                             "(default: paygate up's own, uvloop when installed)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-level", default="warning",
                        help="the stack's log level (info logs one line per RPC)")
    parser.add_argument("--keep", type=Path, help="use this data dir and keep it")
    parser.add_argument("--serve-echo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:  # child process: the echo server, on the same loop as ours
        from gateway.loops import run

        run(_echo_server(args.serve_echo, args.port_file), args.loop)
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        data = args.keep or Path(tmp) / "data"
        paygate = str(Path(sys.executable).with_name("paygate"))
        up = _spawn([paygate, "up", "--data-dir", str(data), "--grpc", "127.0.0.1:0",
                     "--http", "127.0.0.1:0", "--netsim-port", "0", "--loop", args.loop],
                    data / "stack.json", Path(tmp) / "up.log",
                    {**STACK_ENV, "PAYGATE_LOGGING_LEVEL": args.log_level})
        try:
            info = json.loads((data / "stack.json").read_text())
            echo = _spawn([sys.executable, __file__, "--serve-echo", str(data / "pki"),
                           "--port-file", str(Path(tmp) / "echo.port"), "--loop", args.loop],
                          Path(tmp) / "echo.port", Path(tmp) / "echo.log")
            try:
                target = f"127.0.0.1:{(Path(tmp) / 'echo.port').read_text().strip()}"
                print(f"paygate up pid {up.pid}, echo pid {echo.pid}", file=sys.stderr)
                rounds, payments, marks = asyncio.run(_run(info, target, (up.pid, echo.pid), args))
            finally:
                _stop(echo)
        finally:
            _stop(up)
        stored, network = _approved_authorizations(data)

    print(f"e2e benchmark: {args.payments} payments per round (CreatePaymentIntent manual + "
          f"ConfirmPaymentIntent, approved card, one fresh token each), {args.in_flight} in "
          f"flight, one mutual-TLS grpc.aio channel, {os.cpu_count()} cores, median of "
          f"{args.rounds} interleaved rounds")
    print(_yardstick().bracket(*marks))
    print(f"{'':32} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} "
          f"{'server ms':>10} {'client ms':>10}")
    mid = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    print(_row("paygate up: payments", mid.ours))
    print(_row("bare grpc.aio mTLS echo: pairs", mid.echo))
    print("(server ms, client ms: CPU milliseconds per payment or pair, all threads, of the "
          "server process and of the load generator)")
    print("ratio per round: " + ", ".join(f"{r.ratio:.2f}" for r in rounds))
    tails = [_tail(r.ours.lat) for r in rounds]
    print("ours p99/p50 per round: " + ", ".join(f"{t:.2f}" for t in tails))
    ratio = mid.ratio
    p50, p99 = _quantiles(mid.ours.lat)
    tail_ok = p99 <= TAIL * p50
    print(f"durability: every authorization attempt committed (SQLite WAL, synchronous=FULL, "
          f"fsync) before its 0100 was sent; {stored} approved authorizations in the store, "
          f"{network} in netsim's ledger, {payments} payments confirmed by the bench")
    print(f"median ratio: {ratio:.2f} of the echo's pairs per second "
          f"(goal >= {GOAL:.2f}: {'met' if ratio >= GOAL else 'NOT met'})")
    print(f"tail: p99 {p99 * 1e3:.2f} ms = {p99 / p50:.2f} x p50 {p50 * 1e3:.2f} ms "
          f"(goal <= {TAIL:.1f}x: {'met' if tail_ok else 'NOT met'})")
    return 0 if ratio >= GOAL and tail_ok and stored == network == payments else 1


if __name__ == "__main__":
    sys.exit(main())
