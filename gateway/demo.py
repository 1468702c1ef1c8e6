"""``paygate demo`` (what ``make run`` runs): the main job on embedded defaults.

1. The ISO 8583 codec: a realistic 0100 and its 0110, encoded, framed,
   decoded and pretty-printed with the PAN masked.
2. Card tokenization: a software HSM and a SQLite store in a temporary data
   dir, the HTTP edge on loopback, a card encrypted client-side as a compact
   JWE (as the iframe SDK does), ``POST /v1/tokens``, and the vault's answer;
   then a refused card, and proof that the data dir holds no PAN in clear.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from pathlib import Path

from gateway import __version__

DEMO_PAN = "4242424242424242"


def codec_demo() -> None:
    import codec
    from codec import examples, framing, specs

    spec = codec.load_spec(specs.network, "network")
    print(f"paygate {__version__} - ISO 8583 codec demo (implementation: "
          f"{codec.IMPLEMENTATION})\n")
    for title, doc in (("Authorization request", examples.auth_request()),
                       ("Authorization response", examples.auth_response())):
        wire = codec.encode(doc, spec)
        frame = framing.frame(wire)
        decoded = codec.decode(wire, spec)
        same = all(decoded[k] == v for k, v in doc.items())
        print(f"== {title} {doc['t']}: {len(wire)} bytes on the wire, "
              f"{len(frame)} framed (2-byte length header {frame[:2].hex()}); "
              f"decode(encode(x)) == x: {same}")
        print(codec.describe(decoded, spec))
        print()


async def _tokenize(data_dir: Path) -> None:
    import aiohttp
    from aiohttp import web

    from gateway.edge import create_app
    from gateway.edge.server import bound_port, build_tokenization, load_merchants
    from gateway.jwe import encrypt_compact

    tokenization = build_tokenization(data_dir, hsm_threads=1)
    runner = web.AppRunner(create_app(tokenization.intake, tokenization.hsm,
                                      load_merchants(None)), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    base = f"http://127.0.0.1:{bound_port(site, 0)}"
    tokens: list[str] = []
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/v1/keys") as response:
                jwk = (await response.json(content_type=None))["keys"][0]
            print(f"GET  /v1/keys -> kid {jwk['kid']}, alg {jwk['alg']}")
            headers = {"Authorization": "Bearer pk_test_acme"}
            for number, note in ((DEMO_PAN, "a test Visa"),
                                 ("4242424242424241", "a mistyped number")):
                card = json.dumps({"number": number, "exp_month": 12, "exp_year": 2034,
                                   "cvc": "123", "iat": int(time.time())}).encode()
                body = {"encrypted_card": encrypt_compact(card, jwk)}
                async with http.post(base + "/v1/tokens", json=body,
                                     headers=headers) as response:
                    answer = await response.json(content_type=None)
                shown = {k: answer[k] for k in ("token", "brand", "last4", "code")
                         if k in answer}
                print(f"POST /v1/tokens ({note}, encrypted client-side) -> "
                      f"{response.status} {shown}")
                if "token" in answer:
                    tokens.append(answer["token"])
        for token in tokens:
            held = await tokenization.vault.describe("acme", token)
            print(f"vault: token {token} = {held.brand} ...{held.last4}, "
                  f"{held.exp_month:02d}/{held.exp_year}, usable by merchant 'acme' only; "
                  f"the CVC is held in memory, sealed, for the first authorization")
    finally:
        await runner.cleanup()
        tokenization.close()


def tokenization_demo() -> None:
    print("== Card tokenization: software HSM, SQLite store, HTTP edge on loopback")
    with tempfile.TemporaryDirectory(prefix="paygate-demo-") as tmp:
        data_dir = Path(tmp)
        asyncio.run(_tokenize(data_dir))
        leaks = [p.name for p in data_dir.rglob("*")
                 if p.is_file() and DEMO_PAN.encode() in p.read_bytes()]
        files = sorted(p.name for p in data_dir.rglob("*") if p.is_file())
        print(f"data dir files {files}: PAN in clear in {leaks or 'none of them'}")


def run() -> int:
    from gateway.logging import configure_logging

    configure_logging("warning")
    codec_demo()
    tokenization_demo()
    return 0
