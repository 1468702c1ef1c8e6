"""`paygate netsim`: serve, ledger and settle, run as the installed console script."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from conftest import Pki
from netsim_client import APPROVE, TERMINAL, auth, connect, run

from netsim import Ledger, Request, parse_settlement

PAYGATE = str(Path(sys.executable).with_name("paygate"))
DAY = datetime(2031, 5, 17, 9, 15, 42, tzinfo=UTC)


def _paygate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYGATE, "netsim", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def _ledger(tmp_path: Path) -> Path:
    path = tmp_path / "netsim.db"
    with Ledger(path, clock=lambda: DAY) as ledger:
        for stan, pan, code in (("000001", APPROVE, "00"), ("000002", "4000000000000002", "05")):
            ledger.apply(Request(mti="0100", processing_code="000000", stan=stan,
                                 transmitted="0517091542", rrn=f"051709{stan}",
                                 terminal=TERMINAL, merchant="MERCHANT0000001",
                                 acquirer="440001", amount=1999, currency="978", pan=pan),
                         code=code, approval_code="ABC123")
    return path


def test_ledger_command_prints_entries_with_masked_cards(tmp_path: Path) -> None:
    """`paygate netsim ledger` lists every entry with its code and the card masked, as text
    and as JSON, and filters by day."""
    path = _ledger(tmp_path)
    text = _paygate("ledger", "--ledger", str(path))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 4 and lines[-1] == "2 entries"
    assert "000001" in lines[1] and "424242******4242" in lines[1] and "ABC123" in lines[1]
    assert "000002" in lines[2] and "400000******0002" in lines[2]
    as_json = _paygate("ledger", "--ledger", str(path), "--json", "--day", "2031-05-17")
    assert as_json.returncode == 0, as_json.stderr
    rows = json.loads(as_json.stdout)
    assert [(r["stan"], r["response_code"], r["card"], r["amount"]) for r in rows] == [
        ("000001", "00", "424242******4242", 1999), ("000002", "05", "400000******0002", 1999)]
    for out in (text.stdout, as_json.stdout):
        assert APPROVE not in out and "4000000000000002" not in out
    other_day = _paygate("ledger", "--ledger", str(path), "--day", "2031-05-18")
    assert other_day.stdout.splitlines()[-1] == "0 entries"


def test_ledger_and_settle_commands_fail_cleanly_without_a_ledger(tmp_path: Path) -> None:
    """Pointing the commands at a missing ledger exits 1 with a message and creates no
    file."""
    missing = tmp_path / "missing.db"
    for args in (("ledger", "--ledger", str(missing)),
                 ("settle", "--ledger", str(missing), "--day", "2031-05-17", "--out",
                  str(tmp_path / "out.txt"))):
        proc = _paygate(*args)
        assert proc.returncode == 1 and "cannot read the ledger" in proc.stderr
    assert not missing.exists()


def test_settle_command_writes_a_file_that_parses(tmp_path: Path) -> None:
    """`paygate netsim settle` writes the day's settlement file, which parses back."""
    path = _ledger(tmp_path)
    out = tmp_path / "2031-05-17.txt"
    proc = _paygate("settle", "--ledger", str(path), "--day", "2031-05-17", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "1 details" in proc.stdout
    settlement = parse_settlement(out)
    assert [(d.stan, d.sign, d.amount) for d in settlement.details] == [("000001", "M", 1999)]


def _start_serve(pki: Pki, tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start `paygate netsim serve` on a free port; return the process and the port."""
    port_file = tmp_path / "port"
    creds = pki.netsim
    proc = subprocess.Popen(
        [PAYGATE, "netsim", "serve", "--cert", str(creds.cert), "--key", str(creds.key),
         "--ca", str(creds.ca), "--port", "0", "--port-file", str(port_file), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(400):
        if port_file.exists() or proc.poll() is not None:
            break
        time.sleep(0.025)
    if proc.poll() is not None:
        raise AssertionError(proc.communicate())
    return proc, int(port_file.read_text())


def test_serve_runs_until_sigterm(pki: Pki, tmp_path: Path) -> None:
    """`paygate netsim serve` prints its port, approves a request over mutual TLS, and
    exits 0 on SIGTERM with the approval in its ledger."""
    ledger = tmp_path / "served.db"
    proc, port = _start_serve(pki, tmp_path, "--ledger", str(ledger), "--slow-delay", "0.1")
    try:

        async def main() -> str:
            client = await connect(port, pki)
            doc = auth()
            reply = await client.request(doc)
            await client.close()
            await asyncio.sleep(0)
            return reply["39"]

        assert run(main()) == "00"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert f"netsim listening on 127.0.0.1:{port}" in out
    assert APPROVE not in out + err
    assert [a.response_code for a in Ledger(ledger, create=False).authorizations()] == ["00"]


def test_faults_change_at_run_time_on_sighup(pki: Pki, tmp_path: Path) -> None:
    """`serve --faults-file` applies the file's faults on SIGHUP: with drop_rate 1 the
    response is withheld (the request still recorded); a bad file changes nothing; with
    drop_rate 0 responses flow again."""
    ledger, faults = tmp_path / "f.db", tmp_path / "faults.json"
    proc, port = _start_serve(pki, tmp_path, "--ledger", str(ledger), "--faults-file",
                              str(faults))
    try:

        def reload(content: str) -> None:
            faults.write_text(content)
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.3)  # let the event loop run the handler before the next request

        async def scenario() -> list[str | None]:
            client = await connect(port, pki)  # signed on while no fault is set
            replies: list[str | None] = []
            for content in ('{"drop_rate": 1.0}', '{"drop_rate": "lots"}', '{"drop_rate": 0}'):
                await asyncio.to_thread(reload, content)
                await client.send(auth())
                reply = await client.receive(timeout=1.0)
                replies.append(None if reply is None else reply["39"])
            await client.close()
            return replies

        # Dropped; still dropped (the bad file changed nothing); answered again.
        assert run(scenario()) == [None, None, "00"]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "faults.reload_failed" in err
    assert len(Ledger(ledger, create=False).authorizations()) == 3
