"""After cards are tokenized through a real edge process and paid through netsim, no
file under the data dir (store, WAL, key store, ledgers, logs) holds a PAN or CVC in clear."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import jwe_encoder
from conftest import Pki

from codec import dialect
from gateway.logging import configure_logging, get_logger
from gateway.network import NetworkClient, SqliteStanStore, TraceAllocator
from gateway.pki import client_context, server_context
from gateway.store.sqlite import SqliteDatabase
from gateway.vault import SqliteVaultStore, Vault
from hsm_sim import SoftwareHsm
from netsim import Ledger, NetSim

CARDS = {   # PAN -> CVC (distinctive CVCs, so a grep for them means something)
    "4242424242424242": "837",
    "5555555555554444": "614",
    "378282246310005": "7391",
    "4000000000000002": "952",
}
BAD = ["4242424242424241", "6011111111111117"]      # refused: Luhn; expired card


def _forms(secret: str) -> list[bytes]:
    raw = secret.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), secret.encode("utf-16-le")]


def _leaks(folder: Path) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        data = path.read_bytes()
        for pan, cvc in CARDS.items():
            for form in _forms(pan):
                if form in data:
                    found.append(f"{path.name}: PAN {pan[:6]}…")
            if f'"cvc": "{cvc}"'.encode() in data or f'"cvc":"{cvc}"'.encode() in data:
                found.append(f"{path.name}: CVC")
        for pan in BAD:
            if pan.encode() in data:
                found.append(f"{path.name}: refused PAN {pan[:6]}…")
    return found


def _start_edge(data: Path) -> subprocess.Popen[bytes]:
    port_file = data / "edge.port"
    with (data / "edge.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "paygate"), "edge", "serve", "--data-dir",
             str(data), "--port", "0", "--port-file", str(port_file), "--log-level", "debug",
             "--json-logs", "--access-log"], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PAYGATE_HSM": "software"})
    for _ in range(400):
        if port_file.exists() and port_file.read_text().strip():
            return proc
        assert proc.poll() is None, (data / "edge.log").read_text()
        time.sleep(0.05)
    raise AssertionError("the edge did not start")


async def _tokenize_everything(base: str) -> dict[str, str]:
    tokens = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(base + "/v1/keys") as r:
            jwk = (await r.json(content_type=None))["keys"][0]
        headers = {"Authorization": "Bearer pk_test_acme"}
        for pan, cvc in CARDS.items():
            body = {"encrypted_card": jwe_encoder.encrypt_card(jwk, number=pan, cvc=cvc)}
            async with http.post(base + "/v1/tokens", json=body, headers=headers) as r:
                assert r.status == 200, await r.text()
                tokens[pan] = (await r.json())["token"]
        for pan, exp_year in ((BAD[0], 2034), (BAD[1], 2020)):
            body = {"encrypted_card": jwe_encoder.encrypt_card(jwk, number=pan,
                                                               exp_year=exp_year)}
            async with http.post(base + "/v1/tokens", json=body, headers=headers) as r:
                assert r.status == 422
        # Card data where it does not belong: in the path, the query, a header, a bad body.
        pan = "4242424242424242"
        async with http.get(f"{base}/v1/tokens/{pan}?number={pan}") as r:
            assert r.status == 404
        async with http.post(base + "/v1/tokens", headers={"Authorization": f"Bearer {pan}"},
                             data=json.dumps({"number": pan})) as r:
            assert r.status == 401
        async with http.post(base + "/v1/tokens", headers=headers,
                             data=f'{{"encrypted_card": {pan}', ) as r:
            assert r.status in (400, 415)
    return tokens


async def _pay(pki: Pki, data: Path, tokens: dict[str, str]) -> list[str]:
    """Detokenize each card for the network and authorize it against netsim."""
    hsm = SoftwareHsm(data / "hsm")
    db = SqliteDatabase(data / "paygate.db")
    vault = Vault(hsm, SqliteVaultStore(db))
    ledger = Ledger(data / "netsim.db")
    log = get_logger("gateway.payments")
    codes = []
    try:
        async with NetSim(server_context(pki.netsim), ledger) as sim:
            trace = TraceAllocator(SqliteStanStore(data / "stan.db"), "TERM0001")
            async with NetworkClient("127.0.0.1", sim.port, client_context(pki.gateway),
                                     terminal_id="TERM0001", acquirer_id="440001",
                                     trace=trace, deadline=2.0) as client:
                for token in tokens.values():
                    card = (await vault.detokenize_for_network("acme", token)).card
                    t = trace.allocate()
                    doc = {"t": "0100", **t.fields(), "2": card.pan, "3": dialect.PURCHASE,
                           "4": "000000001999",
                           "14": f"{card.exp_year % 100:02d}{card.exp_month:02d}",
                           "18": "5999", "22": "812", "25": "59", "32": "440001",
                           "42": "MERCHANT0000001", "49": "978"}
                    log.debug("authorization_request", message=doc, card=card)
                    reply = await client.request(doc)
                    log.info("authorization_reply", message=reply, pan_hint=card.pan)
                    codes.append(reply["39"])
    finally:
        ledger.close()
        db.close()
    return codes


def test_no_pan_or_cvc_in_any_file_of_the_data_dir(pki: Pki, tmp_path: Path) -> None:
    """Store, WAL, key store, ledgers and both processes' logs (debug level) are free of
    every PAN and CVC, while the edge runs and after everything has stopped."""
    data = tmp_path / "var"
    data.mkdir()
    edge = _start_edge(data)
    try:
        base = f"http://127.0.0.1:{(data / 'edge.port').read_text().strip()}"
        tokens = asyncio.run(_tokenize_everything(base))
        assert (data / "paygate.db-wal").exists()
        assert _leaks(data) == []
    finally:
        edge.send_signal(signal.SIGTERM)
        assert edge.wait(30) == 0
    with (data / "gateway.log").open("w") as stream:
        configure_logging("debug", json=True, stream=stream)
        try:
            codes = asyncio.run(_pay(pki, data, tokens))
        finally:
            import structlog
            structlog.reset_defaults()
    assert codes == ["00", "00", "00", "05"]
    edge_log = (data / "edge.log").read_text()
    assert "tokenize_refused" in edge_log and "incorrect_number" in edge_log
    assert '"logger": "aiohttp.access"' in edge_log and "/v1/tokens/424242" in edge_log
    assert "authorization_request" in (data / "gateway.log").read_text()
    assert _leaks(data) == []
