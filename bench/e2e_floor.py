"""The floor under ``bench/e2e.py``: what the e2e goal's mandatory work alone costs
against the same bare ``grpc.aio`` mutual-TLS echo, with the same client, in one run.

The floor server does, per payment, only what issue 5 requires of any gateway and
nothing of ours: two unary calls over mutual TLS (``grpc.aio``, the stack's
``gateway-server`` certificate, client certificates required); for the first, one
durable write (the intent); for the second, one durable write (the attempt,
committed *before* sending), one request/answer round trip of a 200-byte message over
a mutual-TLS connection to an in-process "network" that answers it (netsim runs inside
``paygate up`` too), then one durable write (the outcome, committed *before*
answering). The writes go through the gateway's own group-committing store
(:class:`gateway.store.sqlite.SqliteDatabase`: SQLite WAL, ``synchronous=FULL``),
one small row each. No interceptor, identity, rate limit, idempotency, state machine,
events, hash chain, vault, HSM, STAN or ISO 8583 codec, no protobuf parsing.

If this floor's ratio to the echo is below the e2e goal (0.60), the goal cannot be met
by any gateway built on this stack on these cores, whatever its own code costs.

    .venv/bin/python bench/e2e_floor.py [--payments 2000] [--in-flight 64] [--rounds 5]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder must leave the import path (bench/codec.py would shadow the codec
# package and bench/tokenize.py the standard library's tokenize).
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import collections  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import grpc  # noqa: E402

from gateway.api.server import client_channel, server_credentials  # noqa: E402
from gateway.pki import Credentials, client_context, server_context  # noqa: E402
from gateway.store.sqlite import SqliteDatabase  # noqa: E402

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS intents (id INTEGER PRIMARY KEY, body BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS attempts (id INTEGER PRIMARY KEY, intent INTEGER NOT NULL, "
    "status TEXT NOT NULL, body BLOB NOT NULL)",
)
MESSAGE = 200          # bytes of an 0100 on the wire, about
TIMEOUT = 30.0


def _e2e() -> ModuleType:
    """``bench/e2e.py``, for its echo server, process helpers, driver and report."""
    spec = importlib.util.spec_from_file_location("e2e_bench", _HERE / "e2e.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["e2e_bench"] = module
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the floor server

class Network:
    """One mutual-TLS connection to the in-process network; answers come back in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self._waiting: collections.deque[asyncio.Future[bytes]] = collections.deque()
        self._task = asyncio.create_task(self._receive(reader))

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        while True:
            head = await reader.readexactly(2)
            body = await reader.readexactly(int.from_bytes(head, "big"))
            self._waiting.popleft().set_result(body)

    async def exchange(self, message: bytes) -> bytes:
        answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._waiting.append(answer)
        self._writer.write(len(message).to_bytes(2, "big") + message)
        return await answer


async def _answer_messages(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The network: answers every framed message with one of the same size."""
    try:
        while True:
            head = await reader.readexactly(2)
            body = await reader.readexactly(int.from_bytes(head, "big"))
            writer.write(head + b"\x01" + body[1:])
    except asyncio.IncompleteReadError:
        writer.close()


async def _floor_server(pki: Path, data: Path, port_file: Path) -> None:
    db = SqliteDatabase(data / "floor.db", schema=SCHEMA)
    network_tls = Credentials(pki / "netsim.crt", pki / "netsim.key", pki / "ca.crt")
    gateway_tls = Credentials(pki / "gateway.crt", pki / "gateway.key", pki / "ca.crt")
    listener = await asyncio.start_server(_answer_messages, "127.0.0.1", 0,
                                          ssl=server_context(network_tls))
    network_port = listener.sockets[0].getsockname()[1]
    network = Network(*await asyncio.open_connection(
        "127.0.0.1", network_port, ssl=client_context(gateway_tls),
        server_hostname="localhost"))
    ids = iter(range(1, 1 << 62))

    async def create(request: bytes, context: Any) -> bytes:
        intent = next(ids)
        await db.write(lambda c: c.execute("INSERT INTO intents VALUES (?, ?)",
                                           (intent, request)))
        return intent.to_bytes(8, "big") + request

    async def confirm(request: bytes, context: Any) -> bytes:
        attempt = next(ids)
        message = os.urandom(MESSAGE)

        def record(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO attempts VALUES (?, ?, 'pending', ?)",
                      (attempt, attempt, message))

        def outcome(c: sqlite3.Connection) -> None:
            c.execute("UPDATE attempts SET status = 'approved' WHERE id = ?", (attempt,))

        await db.write(record)                  # durable before it is sent
        answer = await network.exchange(message)
        if answer[1:] != message[1:]:
            raise RuntimeError("the network answered another message")
        await db.write(outcome)                 # durable before the caller hears of it
        return request

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Floor", {
        "Create": grpc.unary_unary_rpc_method_handler(create),
        "Confirm": grpc.unary_unary_rpc_method_handler(confirm)}),))
    tls = Credentials(pki / "gateway-server.crt", pki / "gateway-server.key", pki / "ca.crt")
    await _e2e().serve_until_signalled(server, server_credentials(tls), port_file)
    listener.close()
    db.close()


# ---------------------------------------------------------------- the load

async def _run(e2e: ModuleType, pki: Path, targets: tuple[str, str], pids: tuple[int, int],
               args: argparse.Namespace) -> list[Any]:
    creds = Credentials(pki / "checkout-service.crt", pki / "checkout-service.key",
                        pki / "ca.crt")
    floor_channel = client_channel(targets[0], creds)
    echo_channel = client_channel(targets[1], creds)
    create, confirm = (floor_channel.unary_unary(f"/bench.Floor/{m}")
                       for m in ("Create", "Confirm"))
    echo = echo_channel.unary_unary(e2e.ECHO_METHOD)
    # About the sizes of a serialized CreatePaymentIntentRequest and a Confirm.
    first, second = b"c" * 60, b"p" * 50
    failures: list[str] = []

    async def floor_pair(_: int) -> None:
        intent = await create(first, metadata=e2e._key(), timeout=TIMEOUT)
        done = await confirm(intent[:8] + second, metadata=e2e._key(), timeout=TIMEOUT)
        if done != intent[:8] + second:
            failures.append("floor mismatch")

    async def echo_pair(_: int) -> None:
        a = await echo(first, metadata=e2e._key(), timeout=TIMEOUT)
        b = await echo(second, metadata=e2e._key(), timeout=TIMEOUT)
        if (a, b) != (first, second):
            failures.append("echo mismatch")

    async def floor(n: int) -> tuple[float, list[float]]:
        result: tuple[float, list[float]] = await e2e._drive(n, args.in_flight, floor_pair)
        return result

    async def echoes(n: int) -> tuple[float, list[float]]:
        result: tuple[float, list[float]] = await e2e._drive(n, args.in_flight, echo_pair)
        return result

    rounds = []
    try:
        await floor(4 * args.in_flight)
        await echoes(4 * args.in_flight)
        for i in range(args.rounds):
            ours = await e2e._phase(floor, args.payments, pids[0])
            peer = await e2e._phase(echoes, args.payments, pids[1])
            rounds.append(e2e.Round(ours, peer))
            print(f"round {i + 1}: floor {ours.rps:.0f} payments/s, echo {peer.rps:.0f} "
                  f"pairs/s", file=sys.stderr)
    finally:
        await floor_channel.close()
        await echo_channel.close()
    if failures:
        raise SystemExit(f"{len(failures)} calls failed, e.g. {failures[0]}")
    return rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--payments", type=int, default=2000, help="payments per round")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--loop", choices=["auto", "uvloop", "asyncio"], default="auto")
    parser.add_argument("--serve-floor", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    from gateway.loops import run
    if args.serve_floor:     # child process: the floor server
        run(_floor_server(args.serve_floor, args.data, args.port_file), args.loop)
        return 0
    e2e = _e2e()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki = folder / "pki"
        subprocess.run([str(Path(sys.executable).with_name("paygate")), "dev-certs", "--out",
                        str(pki)], check=True, stdout=subprocess.DEVNULL)
        floor = e2e._spawn([sys.executable, __file__, "--serve-floor", str(pki), "--data",
                            str(folder), "--port-file", str(folder / "floor.port"),
                            "--loop", args.loop],
                           folder / "floor.port", folder / "floor.log")
        try:
            echo = e2e._spawn([sys.executable, e2e.__file__, "--serve-echo", str(pki),
                               "--port-file", str(folder / "echo.port"), "--loop", args.loop],
                              folder / "echo.port", folder / "echo.log")
            try:
                targets = tuple(f"127.0.0.1:{(folder / f).read_text().strip()}"
                                for f in ("floor.port", "echo.port"))
                rounds = asyncio.run(_run(e2e, pki, (targets[0], targets[1]),
                                          (floor.pid, echo.pid), args))
            finally:
                e2e._stop(echo)
        finally:
            e2e._stop(floor)
        with sqlite3.connect(folder / "floor.db") as db:
            approved = db.execute("SELECT count(*) FROM attempts WHERE status = 'approved'"
                                  ).fetchone()[0]
    print(f"e2e floor: {args.payments} payments per round (two calls; three durable writes "
          f"and one mutual-TLS network round trip each), {args.in_flight} in flight, "
          f"{os.cpu_count()} cores, median of {args.rounds} interleaved rounds")
    print(f"{'':32} {'per s':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/p50':>8} "
          f"{'server ms':>10} {'client ms':>10}")
    mid = sorted(rounds, key=lambda r: r.ratio)[len(rounds) // 2]
    print(e2e._row("floor: payments", mid.ours))
    print(e2e._row("bare grpc.aio mTLS echo: pairs", mid.echo))
    print("ratio per round: " + ", ".join(f"{r.ratio:.2f}" for r in rounds))
    print(f"{approved} attempts approved and durable")
    print(f"median ratio: {mid.ratio:.2f} of the echo's pairs per second: the ceiling of "
          f"bench/e2e.py's ratio (goal {e2e.GOAL:.2f}) on this stack")
    return 0


if __name__ == "__main__":
    sys.exit(main())
