"""The gateway's network client against netsim, both real, over mutual TLS on
loopback: what the client is told must agree with netsim's ledger (the truth)."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Pki

from codec import dialect
from gateway.network import (
    NetworkClient,
    NotSent,
    OutcomeUnknown,
    SqliteStanStore,
    TraceAllocator,
)
from gateway.pki import Credentials, client_context, server_context
from netsim import Faults, Ledger, NetSim, parse_settlement, write_settlement

TERMINAL = "TERM0001"
ACQUIRER = "440001"
DEADLINE = 0.5


def _auth(trace: TraceAllocator, pan: str, amount: int = 1999) -> dict[str, str]:
    t = trace.allocate()
    return {
        "t": "0100", "2": pan, "3": dialect.PURCHASE, "4": f"{amount:012d}",
        "7": t.transmitted, "11": t.stan, "12": t.local_time, "13": t.local_date,
        "14": "3012", "18": "5999", "22": "812", "25": "59", "32": ACQUIRER, "37": t.rrn,
        "41": TERMINAL, "42": "MERCHANT0000001", "49": "978",
    }


def _reversal(trace: TraceAllocator, original: dict[str, str], mti: str) -> dict[str, str]:
    t = trace.allocate()
    return {
        "t": mti, "3": original["3"], "4": original["4"], "7": t.transmitted, "11": t.stan,
        "32": ACQUIRER, "37": original["37"], "41": TERMINAL, "42": original["42"],
        "49": original["49"],
        "90": dialect.original_data("0100", original["11"], original["7"], ACQUIRER),
    }


Scenario = Callable[[NetSim, NetworkClient, TraceAllocator, Ledger], Awaitable[Any]]


def _run(pki: Pki, tmp_path: Path, scenario: Scenario, *, faults: Faults | None = None,
         late: list[dict[str, str]] | None = None, connections: int = 1,
         max_in_flight: int = 64,
         loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None) -> Any:
    async def main() -> Any:
        ledger = Ledger(tmp_path / "netsim.db")
        sim = NetSim(server_context(pki.netsim), ledger, faults=faults,
                     slow_delay=3 * DEADLINE)
        await sim.start()
        trace = TraceAllocator(SqliteStanStore(tmp_path / "stan.db"), TERMINAL)

        def on_late(doc: dict[str, str]) -> None:
            if late is not None:
                late.append(doc)

        client = NetworkClient("127.0.0.1", sim.port, client_context(pki.gateway),
                               terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                               deadline=DEADLINE, connections=connections,
                               max_in_flight=max_in_flight, on_late_response=on_late)
        try:
            await client.start()
            return await scenario(sim, client, trace, ledger)
        finally:
            await client.close()
            await sim.stop()

    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(main())


def test_client_and_netsim_work_on_uvloop(pki: Pki, tmp_path: Path) -> None:
    """On uvloop (what `paygate up` runs on by default), whose TLS transport is not an
    asyncio.Transport subclass, the client signs on and its 0100 is answered and recorded."""
    import uvloop

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> tuple[str, str, str]:
        loop = type(asyncio.get_running_loop()).__module__
        request = _auth(trace, "4242424242424242", 2500)
        reply = await client.request(request)
        held = ledger.authorizations()[0].held
        return loop, reply["39"], f"{held}"

    loop, code, held = _run(pki, tmp_path, scenario, loop_factory=uvloop.new_event_loop)
    assert loop.startswith("uvloop")
    assert (code, held) == ("00", "2500")


def test_every_test_card_behaves_as_the_table_says(pki: Pki, tmp_path: Path) -> None:
    """Approve, decline 05/51, system error 96, lost response and slow response each reach
    the client as the architecture's table says, and netsim's ledger agrees."""
    late: list[dict[str, str]] = []

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> dict[str, Any]:
        told: dict[str, Any] = {}
        for pan in ("4242424242424242", "4000000000000002", "4000000000009995",
                    "4000000000000119", "4000000000000259", "4000000000000267"):
            doc = _auth(trace, pan)
            try:
                told[pan] = ((await client.request(doc))["39"], doc["11"])
            except OutcomeUnknown:
                told[pan] = ("unknown", doc["11"])
        await asyncio.sleep(3 * DEADLINE)  # let the slow card's late answer arrive
        return told

    told = _run(pki, tmp_path, scenario, late=late)
    assert {pan: code for pan, (code, _) in told.items()} == {
        "4242424242424242": "00", "4000000000000002": "05", "4000000000009995": "51",
        "4000000000000119": "96", "4000000000000259": "unknown",
        "4000000000000267": "unknown",
    }
    ledger = Ledger(tmp_path / "netsim.db")
    for pan, (code, stan) in told.items():
        record = ledger.find_authorization(TERMINAL, stan)
        assert record is not None, pan
        expected = "00" if code == "unknown" else code
        assert record.response_code == expected, pan
    # The slow card's approval arrived after the deadline and went to the late handler.
    assert [(d["t"], d["11"], d["39"]) for d in late] == [
        ("0110", told["4000000000000267"][1], "00")]


def test_thousand_concurrent_requests_with_random_latency(pki: Pki, tmp_path: Path) -> None:
    """1,000 requests in flight over two connections, answered with random latencies,
    each receive their own response."""

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> list[tuple[str, str, str]]:
        rng = random.Random(7)
        docs = [_auth(trace, "4242424242424242", rng.randint(1, 999_999)) for _ in range(1000)]

        async def one(doc: dict[str, str]) -> tuple[str, str, str]:
            reply = await client.request(doc, deadline=20.0)
            assert (reply["11"], reply["41"], reply["4"], reply["37"]) == (
                doc["11"], doc["41"], doc["4"], doc["37"])
            return reply["11"], reply["39"], reply["38"]

        return await asyncio.gather(*(one(d) for d in docs))

    results = _run(pki, tmp_path, scenario, faults=Faults(latency=0.0, jitter=0.05, seed=3),
                   connections=2, max_in_flight=1000)
    assert len({stan for stan, _, _ in results}) == 1000
    assert all(code == "00" for _, code, _ in results)
    ledger = Ledger(tmp_path / "netsim.db")
    approvals = {r.stan: r.approval_code for r in ledger.authorizations()}
    assert approvals == {stan: code for stan, _, code in results}


def test_lost_responses_are_unknown_and_the_ledger_has_them(pki: Pki, tmp_path: Path) -> None:
    """With every response dropped, each request ends `outcome unknown` (never declined)
    while netsim recorded every one of them."""

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> list[str]:
        sim.faults.drop_rate = 1.0
        stans = []
        for _ in range(5):
            doc = _auth(trace, "4242424242424242")
            with pytest.raises(OutcomeUnknown):
                await client.request(doc)
            stans.append(doc["11"])
        return stans

    stans = _run(pki, tmp_path, scenario)
    ledger = Ledger(tmp_path / "netsim.db")
    assert all(ledger.find_authorization(TERMINAL, s) is not None for s in stans)


def test_reset_mid_flight_marks_unknown_then_reconnects(pki: Pki, tmp_path: Path) -> None:
    """A connection reset with requests in flight makes each of them `outcome unknown`; the
    client reconnects, signs on again and the next request is approved."""

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> str:
        sim.faults.latency = 5.0  # keep the requests in flight
        docs = [_auth(trace, "4242424242424242") for _ in range(3)]
        tasks = [asyncio.create_task(client.request(d, deadline=10.0)) for d in docs]
        await asyncio.sleep(0.3)
        assert await sim.reset_connections() >= 1
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(o, OutcomeUnknown) for o in outcomes)
        sim.faults.latency = 0.0
        for _ in range(100):  # the client reconnects in the background
            if client.ready:
                break
            await asyncio.sleep(0.05)
        reply = await client.request(_auth(trace, "4242424242424242"), deadline=5.0)
        return reply["39"]

    assert _run(pki, tmp_path, scenario) == "00"


def test_reversals_agree_with_the_ledger_and_repeats_do_not_double(pki: Pki,
                                                                   tmp_path: Path) -> None:
    """An approval whose response was lost is reversed by 0420 and repeated 0421s; the
    ledger shows it reversed exactly once, and the day's settlement file adds up."""

    async def scenario(sim: NetSim, client: NetworkClient, trace: TraceAllocator,
                       ledger: Ledger) -> tuple[str, list[str]]:
        lost = _auth(trace, "4000000000000259")
        with pytest.raises(OutcomeUnknown):
            await client.request(lost)
        codes = [(await client.request(_reversal(trace, lost, "0420")))["39"]]
        for _ in range(2):
            codes.append((await client.request(_reversal(trace, lost, "0421")))["39"])
        kept = _auth(trace, "4242424242424242")
        assert (await client.request(kept))["39"] == "00"
        return lost["11"], codes

    stan, codes = _run(pki, tmp_path, scenario)
    assert codes == ["00", "00", "00"]
    ledger = Ledger(tmp_path / "netsim.db")
    record = ledger.find_authorization(TERMINAL, stan)
    assert record is not None and record.status == "reversed"
    changed = [r for r in ledger.reversals_of(TERMINAL, stan) if r.changed]
    assert len(changed) == 1
    path = tmp_path / "settlement.txt"
    write_settlement(ledger, dt.datetime.now(dt.UTC).date(), path)
    settlement = parse_settlement(path)
    assert settlement.trailer.count == len(settlement.details)


def test_foreign_client_certificate_cannot_connect(pki: Pki, tmp_path: Path) -> None:
    """A client whose certificate comes from another CA never signs on: start() fails with
    NotSent and netsim's ledger stays empty."""

    async def main() -> None:
        ledger = Ledger(tmp_path / "netsim.db")
        async with NetSim(server_context(pki.netsim), ledger) as sim:
            trace = TraceAllocator(SqliteStanStore(tmp_path / "stan.db"), TERMINAL)
            # Trusts netsim's CA, but presents a certificate netsim's CA never issued.
            intruder = Credentials(cert=pki.foreign.cert, key=pki.foreign.key, ca=pki.netsim.ca)
            client = NetworkClient("127.0.0.1", sim.port, client_context(intruder),
                                   terminal_id=TERMINAL, acquirer_id=ACQUIRER, trace=trace,
                                   deadline=DEADLINE)
            with pytest.raises(NotSent):
                await client.start()
            await client.close()
        assert ledger.authorizations() == []

    asyncio.run(main())
