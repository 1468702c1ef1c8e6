"""The HTTP floor under the tokenization edge: server CPU per request of an aiohttp app
on uvloop, pinned to one core as ``bench/tokenize.py`` pins the edge, that answers
``POST /v1/tokens`` with a fixed token after reading and parsing the JSON body, and does
nothing else (no JWE, no HSM, no store). Same load generator as the tokenize bench (32
in flight over keep-alive connections from the other core).

It bounds what the edge can reach: edge CPU per token >= RSA + this floor + the vault's
durable write, so the ratio to the raw RSA rate is at most RSA / (RSA + floor + write).

``--rsa`` makes the handler also do one RSA-2048 OAEP-256 decrypt (``cryptography``, a
fixed 32-byte key), the only expensive step of a tokenization, and reports its rate
against raw decrypts on the server's core in the same run (rounds alternate, raw rounds
while the server idles): the ceiling of ``bench/tokenize.py``'s ratio for an edge that
did nothing but HTTP and RSA.

    .venv/bin/python bench/http_floor.py [--requests 20000]
    .venv/bin/python bench/http_floor.py --rsa [--requests 3000] [--rounds 5]
"""

from __future__ import annotations

import os.path
import sys

# This file's folder must leave the import path (bench/tokenize.py would shadow the
# standard library's tokenize).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from types import ModuleType, SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

EDGE_CORE = 1
LOAD_CORE = 0
TOKEN = json.dumps({"token": "4000001234567899", "brand": "visa", "last4": "7899",
                    "exp_month": 12, "exp_year": 2034}).encode()


def _yardstick() -> Any:
    """bench/yardstick.py's functions (run by path: this folder is off the import path)."""
    return SimpleNamespace(**runpy.run_path(os.path.join(_HERE, "yardstick.py")))


def _serve(port: int, rsa: bool) -> None:
    """The floor server (runs in its own process)."""
    import uvloop
    from aiohttp import web

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > EDGE_CORE:
        os.sched_setaffinity(0, {EDGE_CORE})
    decrypt = _yardstick().decrypt() if rsa else None

    async def tokens(request: web.Request) -> web.Response:
        body: Any = json.loads(await request.read())
        if not isinstance(body, dict) or not isinstance(body.get("encrypted_card"), str):
            raise web.HTTPBadRequest()
        if decrypt is not None:
            decrypt()
        return web.Response(body=TOKEN, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_post("/v1/tokens", tokens)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None,
                loop=uvloop.new_event_loop(), print=None)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _tokenize_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("tokenize_bench",
                                                  os.path.join(_HERE, "tokenize.py"))
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["tokenize_bench"] = bench
    spec.loader.exec_module(bench)
    return bench


def _round(bench: ModuleType, base: str, requests: int, pid: int) -> tuple[float, float]:
    """Requests per second and server CPU seconds per request over one round."""
    # A valid body of about a compact JWE's size: the handler parses it and answers 200
    # (``bench._load`` fails the run on any other status).
    body = json.dumps({"encrypted_card": "x" * 700})
    before = _cpu(pid)
    rate: float = asyncio.run(bench._load(base, [body] * requests, 32))
    return rate, (_cpu(pid) - before) / requests


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=None,
                        help="per round (default 20000; 3000 with --rsa)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds (default 1; 5 with --rsa)")
    parser.add_argument("--rsa", action="store_true",
                        help="one RSA-2048 OAEP-256 decrypt per request, against raw decrypts")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve, args.rsa)
        return 0
    requests = args.requests or (3000 if args.rsa else 20000)
    rounds = args.rounds or (5 if args.rsa else 1)
    bench = _tokenize_bench()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)]
                              + (["--rsa"] if args.rsa else []))
    yardstick = _yardstick()
    raw_decrypt = yardstick.decrypt() if args.rsa else None
    rates, cpus, raws = [], [], []
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        bench._pin(LOAD_CORE)
        _round(bench, base, min(requests, 2000), server.pid)          # warm up
        for _ in range(rounds):
            if raw_decrypt is not None:
                bench._pin(EDGE_CORE)
                raws.append(yardstick.count_rate(raw_decrypt, 1.5))
                bench._pin(LOAD_CORE)
            rate, cpu = _round(bench, base, requests, server.pid)
            rates.append(rate)
            cpus.append(cpu)
    finally:
        server.terminate()
        server.wait(30)
    what = "aiohttp on uvloop" + (" + one RSA decrypt per request" if args.rsa else "")
    print(f"http floor ({what}, 1 core, 32 in flight, median of {rounds} rounds): "
          f"{statistics.median(rates):.0f} requests/s, server CPU "
          f"{statistics.median(cpus) * 1e6:.0f} us per request")
    if raws:
        ratios = [r / raw for r, raw in zip(rates, raws, strict=True)]
        print(f"raw decrypts/s (cryptography RSA-2048 OAEP-256, 1 thread, same core): "
              f"{statistics.median(raws):.0f}")
        print("ratio per round: " + ", ".join(f"{r:.2f}" for r in ratios))
        print(f"median ratio: {statistics.median(ratios):.2f} of the raw decrypt rate: the "
              f"ceiling of bench/tokenize.py's ratio with aiohttp and nothing but RSA")
    return 0


if __name__ == "__main__":
    sys.exit(main())
