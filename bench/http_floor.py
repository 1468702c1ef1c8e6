"""The HTTP floor under the tokenization edge: server CPU per request of an aiohttp app
on uvloop, pinned to one core as ``bench/tokenize.py`` pins the edge, that answers
``POST /v1/tokens`` with a fixed token after reading and parsing the JSON body, and does
nothing else (no JWE, no HSM, no store). Same load generator as the tokenize bench (32
in flight over keep-alive connections from the other core).

It bounds what the edge can reach: edge CPU per token >= RSA + this floor + the vault's
durable write, so the ratio to the raw RSA rate is at most RSA / (RSA + floor + write).

    .venv/bin/python bench/http_floor.py [--requests 20000]
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
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

EDGE_CORE = 1
LOAD_CORE = 0


def _serve(port: int) -> None:
    """The floor server (runs in its own process)."""
    import uvloop
    from aiohttp import web

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > EDGE_CORE:
        os.sched_setaffinity(0, {EDGE_CORE})

    async def tokens(request: web.Request) -> web.Response:
        body: Any = json.loads(await request.read())
        if not isinstance(body, dict):
            raise web.HTTPBadRequest()
        return web.json_response({"token": "4000001234567899", "brand": "visa",
                                  "last4": "7899", "exp_month": 12, "exp_year": 2034},
                                 headers={"Cache-Control": "no-store"})

    app = web.Application()
    app.router.add_post("/v1/tokens", tokens)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None,
                loop=uvloop.new_event_loop(), print=None)


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().split(")")[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve(args.serve)
        return 0
    spec = importlib.util.spec_from_file_location("tokenize_bench",
                                                  os.path.join(_HERE, "tokenize.py"))
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.modules["tokenize_bench"] = bench
    spec.loader.exec_module(bench)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        bench._pin(LOAD_CORE)
        base = f"http://127.0.0.1:{port}"
        body = "x" * 700                     # about a compact JWE's size
        asyncio.run(bench._load(base, [body] * 2000, 32))          # warm up
        before = _cpu(server.pid)
        rate = asyncio.run(bench._load(base, [body] * args.requests, 32))
        used = _cpu(server.pid) - before
    finally:
        server.terminate()
        server.wait(30)
    print(f"http floor (aiohttp on uvloop, 1 core, 32 in flight): {rate:.0f} requests/s, "
          f"server CPU {used / args.requests * 1e6:.0f} us per request")
    return 0


if __name__ == "__main__":
    sys.exit(main())
