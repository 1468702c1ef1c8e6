"""`paygate audit verify` on a data directory written by real payments (the payments
service, netsim over mutual TLS): intact it is ok; one payload edited with sqlite3 and
it is BROKEN at that row. (The chain's rules, on synthetic stores, are
test_payments_audit.py's.)"""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import payments_stack
import pytest
from conftest import Pki

PAYGATE = str(Path(sys.executable).with_name("paygate"))
APPROVE = "4242424242424242"
DECLINE = "4000000000000002"


@pytest.fixture(scope="module")
def paid(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory after an authorization, a partial capture with its release, two
    refunds, a decline and a void."""
    data = tmp_path_factory.mktemp("audit") / "var"

    async def pay() -> None:
        async with payments_stack.running(pki, data) as stack:
            svc = stack.service
            intent = await svc.create_intent("acme", 5000, "eur", "manual")
            await svc.confirm("acme", intent.id, await stack.token(APPROVE))
            await svc.capture("acme", intent.id, 3000)
            await svc.create_refund("acme", intent.id, 1000)
            await svc.create_refund("acme", intent.id, 0)
            declined = await svc.create_intent("acme", 700, "eur", "automatic")
            await svc.confirm("acme", declined.id, await stack.token(DECLINE))
            voided = await svc.create_intent("globex", 1200, "usd", "manual")
            await svc.confirm("globex", voided.id, await stack.token(APPROVE, "globex"))
            await svc.cancel("globex", voided.id, "requested_by_customer")
    asyncio.run(pay())
    return data


def _verify(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYGATE, "audit", "verify", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=60, check=False)


def _events(data: Path) -> list[tuple[int, str, str]]:
    conn = sqlite3.connect(data / "paygate.db")
    try:
        return [(int(seq), str(type_), str(payload)) for seq, type_, payload in conn.execute(
            "SELECT seq, type, payload FROM events ORDER BY seq")]
    finally:
        conn.close()


def test_real_payments_leave_a_chain_that_verifies(paid: Path) -> None:
    """After real payments the command exits 0 and counts every event row, up to the last."""
    events = _events(paid)
    assert len(events) > 20 and {"refund", "attempt"} <= {t.split(".")[0] for _, t, _ in events}
    proc = _verify(paid)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"ok: {len(events)} events, chain intact")
    assert proc.stdout.rstrip().endswith(f"(seq {events[-1][0]})")


def test_an_amount_edited_with_sqlite3_is_reported_broken_at_its_row(
        paid: Path, tmp_path: Path) -> None:
    """Raising the amount inside one refund event's payload (as an editor with sqlite3
    would) makes the command print BROKEN at that seq and exit 1."""
    data = tmp_path / "var"
    shutil.copytree(paid, data)
    seq, payload = next((seq, json.loads(payload)) for seq, type_, payload in _events(data)
                        if type_.startswith("refund") and "amount" in payload)
    payload["amount"] = int(payload["amount"]) * 10
    conn = sqlite3.connect(data / "paygate.db", isolation_level=None)
    try:
        conn.execute("UPDATE events SET payload = ? WHERE seq = ?",
                     (json.dumps(payload, sort_keys=True, separators=(",", ":")), seq))
    finally:
        conn.close()
    proc = _verify(data)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"BROKEN at seq {seq}: hash mismatch (the row was edited)")
    assert _verify(paid).returncode == 0
