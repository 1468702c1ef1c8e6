"""Network round trips: the gateway's client against netsim over mutual TLS,
compared with a bare asyncio TLS echo of the same frames, in one run.

Both servers run in their own process (so each side has a core, as in
production); the load generator keeps ``--in-flight`` requests outstanding and
reports round trips per second and p50/p99 latency. The echo baseline sends
the very same encoded 0100 frames and waits for each to come back: transport
and framing only, no codec, no rules, no ledger.

    .venv/bin/python bench/network.py [--requests N] [--in-flight 64] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

# Keep this folder off the import path: bench/codec.py would shadow the codec package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from codec import dialect, encode, framing  # noqa: E402
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator  # noqa: E402
from gateway.pki import Authority, Credentials, client_context, server_context  # noqa: E402

GOAL = 0.5
TERMINAL = "BENCH001"


def _auth(trace: TraceAllocator) -> dict[str, str]:
    t = trace.allocate()
    return {
        "t": "0100", "2": "4242424242424242", "3": dialect.PURCHASE, "4": "000000001999",
        "7": t.transmitted, "11": t.stan, "12": t.local_time, "13": t.local_date,
        "14": "3012", "18": "5999", "22": "812", "25": "59", "32": "440001", "37": t.rrn,
        "41": TERMINAL, "42": "MERCHANT0000001", "49": "978",
    }


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


# ---------------------------------------------------------------- echo baseline

async def _echo_server(creds: Credentials, port_file: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (payload := await framing.read_frame(reader)) is not None:
                writer.write(framing.frame(payload))
        except (ConnectionError, framing.FramingError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_context(creds))
    port_file.write_text(str(server.sockets[0].getsockname()[1]))
    async with server:
        await server.serve_forever()


async def _echo_load(port: int, creds: Credentials, frames: list[bytes], in_flight: int
                     ) -> tuple[float, list[float]]:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(creds), server_hostname="localhost")
    waiters: dict[bytes, asyncio.Future[None]] = {}

    async def read_loop() -> None:
        while (payload := await framing.read_frame(reader)) is not None:
            waiters.pop(payload).set_result(None)

    reading = asyncio.create_task(read_loop())

    async def one(i: int) -> None:
        fut = asyncio.get_running_loop().create_future()
        waiters[frames[i]] = fut
        writer.write(framing.frame(frames[i]))
        await fut

    try:
        return await _drive(len(frames), in_flight, one)
    finally:
        reading.cancel()
        writer.close()


# ---------------------------------------------------------------- gateway client + netsim

async def _client_load(port: int, creds: Credentials, store: Path, n: int, in_flight: int
                       ) -> tuple[float, list[float]]:
    trace = TraceAllocator(SqliteStanStore(store), TERMINAL)
    docs = [_auth(trace) for _ in range(n)]
    client = NetworkClient("127.0.0.1", port, client_context(creds), terminal_id=TERMINAL,
                           acquirer_id="440001", trace=trace, deadline=10.0,
                           max_in_flight=in_flight)
    await client.start()

    async def one(i: int) -> None:
        reply = await client.request(docs[i])
        assert reply["39"] == "00"

    try:
        return await _drive(n, in_flight, one)
    finally:
        await client.close()


def _spawn(args: list[str], port_file: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    for _ in range(200):
        if port_file.exists() and port_file.read_text().strip():
            return proc
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"server failed: {err}")
        time.sleep(0.05)
    raise RuntimeError("server did not start")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    if proc.poll() is None:
        proc.kill()


def _summary(name: str, rps: float, lat: list[float]) -> str:
    q = statistics.quantiles(lat, n=100)
    return f"{name:22} {rps:10.0f} {q[49] * 1e3:9.2f} {q[98] * 1e3:9.2f}"


def main() -> int:
    parser = argparse.ArgumentParser(description="gateway client + netsim vs TLS echo")
    parser.add_argument("--requests", type=int, default=10000)
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--serve-echo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_echo:  # child process: the echo server
        folder = Path(args.serve_echo)
        creds = Credentials(folder / "netsim.crt", folder / "netsim.key", folder / "ca.crt")
        asyncio.run(_echo_server(creds, folder / "echo.port"))
        return 0

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        authority = Authority("bench CA")
        server = authority.write(folder, "netsim", server=True)
        client = authority.write(folder, "gateway")
        trace = TraceAllocator(SqliteStanStore(folder / "echo-stan.db"), TERMINAL)
        frames = [encode(_auth(trace), dialect.SPEC) for _ in range(args.requests)]
        paygate = str(Path(sys.executable).with_name("paygate"))
        echo = _spawn([sys.executable, __file__, "--serve-echo", str(folder)],
                      folder / "echo.port")
        sim = _spawn([paygate, "netsim", "serve", "--cert", str(server.cert), "--key",
                      str(server.key), "--ca", str(server.ca), "--port", "0",
                      "--ledger", str(folder / "ledger.db"), "--log-level", "warning",
                      "--port-file", str(folder / "netsim.port")], folder / "netsim.port")
        rounds: list[tuple[float, list[float], float, list[float]]] = []
        try:
            # Interleaved rounds, both servers up the whole time: noise hits both alike.
            for _ in range(args.rounds):
                echo_rps, echo_lat = asyncio.run(_echo_load(
                    int((folder / "echo.port").read_text()), client, frames, args.in_flight))
                ours_rps, ours_lat = asyncio.run(_client_load(
                    int((folder / "netsim.port").read_text()), client, folder / "stan.db",
                    args.requests, args.in_flight))
                rounds.append((ours_rps, ours_lat, echo_rps, echo_lat))
        finally:
            _stop(sim)
            _stop(echo)

    print(f"network benchmark: {args.requests} 0100/0110 round trips per round, "
          f"{args.in_flight} in flight, mutual TLS on loopback, {os.cpu_count()} cores, "
          f"median of {args.rounds} interleaved rounds")
    print(f"{'':22} {'rt/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
    mid = sorted(rounds, key=lambda r: r[0] / r[2])[len(rounds) // 2]
    print(_summary("client + netsim", mid[0], mid[1]))
    print(_summary("bare TLS echo", mid[2], mid[3]))
    ratios = ", ".join(f"{r[0] / r[2]:.2f}" for r in rounds)
    ratio = mid[0] / mid[2]
    print(f"ratio per round: {ratios}")
    print(f"median ratio: {ratio:.2f} of the echo's round trips per second "
          f"(goal >= {GOAL:.2f}: {'met' if ratio >= GOAL else 'NOT met'})")
    return 0 if ratio >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
