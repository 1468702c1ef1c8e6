"""Tokenizations per second through the HTTP edge against raw RSA-2048 OAEP decrypts
per second, in one run, on the same number of cores.

The edge (``paygate edge serve``: HTTP parsing, JWE decrypt through the HSM,
payload and card checks, fingerprint, seal, a group-committed SQLite write with
``synchronous=FULL``, the JSON reply) runs in its own process pinned to one
core; the load generator is pinned to the other core and keeps ``--concurrency``
requests in flight over keep-alive connections, each with a fresh JWE of a new
card. The peer figure is ``cryptography``'s RSA-2048 OAEP decrypt of a 32-byte
key, one thread pinned to the same single core as the edge. Rounds alternate
(raw, edge, raw, edge…) and the median ratio is reported.

``--backend pkcs11`` runs the same against SoftHSM2 (JWE alg RSA-OAEP, the
only OAEP SoftHSM 2.6.1 has), with raw decrypts through python-pkcs11.

    .venv/bin/python bench/tokenize.py [--requests 3000] [--rounds 5] [--backend software]
"""

from __future__ import annotations

import os.path
import sys

# First of all: this file's folder must leave the import path, or this script would be
# imported as the standard library's `tokenize` (and bench/codec.py would shadow codec).
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse
import asyncio
import contextlib
import json
import os
import runpy
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import aiohttp

from gateway.cards import luhn_digit
from gateway.jwe import encrypt_compact

GOAL = 0.8
EDGE_CORE, LOAD_CORE = 0, 1


def _pin(core: int) -> None:
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > core:
        os.sched_setaffinity(0, {core})


def _cards(n: int) -> Iterator[str]:
    base = int.from_bytes(os.urandom(6), "big") % 10**12
    for i in range(n):
        head = f"411111{(base + i) % 10**9:09d}"
        yield head + luhn_digit(head)


def _payload(pan: str) -> bytes:
    return json.dumps({"number": pan, "exp_month": 12, "exp_year": 2034, "cvc": "123",
                       "iat": int(time.time())}).encode()


@contextlib.contextmanager
def _edge(data_dir: Path, env: dict[str, str]) -> Iterator[str]:
    port_file = data_dir / "port"
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "paygate"), "edge", "serve", "--data-dir",
         str(data_dir), "--port", "0", "--port-file", str(port_file), "--log-level", "warning",
         "--hsm-threads", "0"],
        env={**os.environ, **env}, preexec_fn=lambda: _pin(EDGE_CORE))
    try:
        for _ in range(600):
            if port_file.exists() and port_file.read_text().strip():
                break
            if proc.poll() is not None:
                raise SystemExit("the edge exited during start-up")
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}"
    finally:
        proc.terminate()
        proc.wait(30)


async def _load(base: str, jwes: list[str], concurrency: int) -> float:
    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Authorization": "Bearer pk_test_acme", "Content-Type": "application/json"}
    bodies = iter([json.dumps({"encrypted_card": j}).encode() for j in jwes])
    failures: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as http:
        async def worker() -> None:
            for body in bodies:
                async with http.post(base + "/v1/tokens", data=body, headers=headers) as r:
                    text = await r.text()
                    if r.status != 200:
                        failures.append(text)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} tokenizations failed, e.g. {failures[0]}")
    return len(jwes) / elapsed


def _yardstick() -> Any:
    """bench/yardstick.py's functions (run by path: this folder is off the import path)."""
    return SimpleNamespace(**runpy.run_path(os.path.join(_HERE, "yardstick.py")))


def _softhsm_token(folder: Path) -> tuple[dict[str, str], Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from softhsm import make_token

    token = make_token(folder, "bench")
    env = {"PAYGATE_HSM": "pkcs11", "PAYGATE_PKCS11_MODULE": str(token.module),
           "PAYGATE_PKCS11_TOKEN": token.label, "PAYGATE_PKCS11_PIN": token.pin,
           "SOFTHSM2_CONF": str(token.conf)}
    return env, token


def _softhsm_raw(token: Any, kid: str) -> Callable[[], object]:
    """RSA-OAEP (SHA-1) decrypts with the edge's own JWE key, in this process, through
    python-pkcs11 (the token serves both processes; raw rounds run while the edge idles)."""
    import pkcs11
    from pkcs11 import MGF, Mechanism, ObjectClass

    from hsm_sim.pkcs11 import jwe_label
    session = pkcs11.lib(token.module).get_token(token_label=token.label).open(
        user_pin=token.pin)
    private: Any = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=jwe_label(kid))
    public: Any = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=jwe_label(kid))
    param = (Mechanism.SHA_1, MGF.SHA1, None)
    blob = public.encrypt(os.urandom(32), mechanism=Mechanism.RSA_PKCS_OAEP,
                          mechanism_param=param)
    return lambda: private.decrypt(blob, mechanism=Mechanism.RSA_PKCS_OAEP,
                                   mechanism_param=param)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backend", choices=["software", "pkcs11"], default="software")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env: dict[str, str] = {}
        token = None
        if args.backend == "pkcs11":
            env, token = _softhsm_token(folder)
        with _edge(folder / "data", env) as base:
            async def jwks() -> dict[str, Any]:
                async with aiohttp.ClientSession() as http, http.get(base + "/v1/keys") as r:
                    keys: dict[str, Any] = (await r.json(content_type=None))["keys"][0]
                    return keys
            jwk = asyncio.run(jwks())
            yardstick = _yardstick()
            raw = yardstick.decrypt() if token is None else _softhsm_raw(token, jwk["kid"])
            edge_rates, raw_rates = [], []
            for _ in range(args.rounds):
                _pin(EDGE_CORE)
                raw_rates.append(yardstick.count_rate(raw, 1.5))
                _pin(LOAD_CORE)
                jwes = [encrypt_compact(_payload(pan), jwk) for pan in _cards(args.requests)]
                edge_rates.append(asyncio.run(_load(base, jwes, args.concurrency)))
    ratios = [e / r for e, r in zip(edge_rates, raw_rates, strict=True)]
    median = statistics.median(ratios)
    peer = "cryptography RSA-2048 OAEP-256" if args.backend == "software" else \
        "SoftHSM2 RSA-2048 OAEP (SHA-1) via python-pkcs11"
    print(f"tokenize benchmark ({args.backend} HSM): {args.requests} tokenizations per round, "
          f"{args.concurrency} in flight, edge on 1 core, load on another, "
          f"median of {args.rounds} interleaved rounds")
    print(f"edge tokenizations/s: {statistics.median(edge_rates):.0f}")
    print(f"raw decrypts/s ({peer}): {statistics.median(raw_rates):.0f}")
    print("ratio per round: " + ", ".join(f"{r:.2f}" for r in ratios))
    verdict = "met" if median >= GOAL else "NOT met"
    print(f"median ratio: {median:.2f} of the raw decrypt rate (goal >= {GOAL:.2f}"
          f"{': ' + verdict if args.backend == 'software' else ', software HSM only'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
