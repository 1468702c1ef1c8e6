"""netsim's server: mutual TLS, sign-on, malformed input, faults and concurrency, over
real TLS connections on loopback."""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path

import pytest
from conftest import Pki
from netsim_client import (
    SHORT_WAIT,
    TERMINAL,
    Client,
    auth,
    connect,
    network,
    next_stan,
    run,
    serving,
)

import codec
from codec import dialect
from gateway.pki import Credentials, client_context, server_context
from netsim import Faults, Ledger, NetSim, Request
from netsim.ledger import OnCommit


async def _refused(port: int, context: ssl.SSLContext) -> bool:
    """Whether netsim ends a connection made with ``context`` without ever answering."""
    try:
        client = await Client.connect(port, context)
    except (ssl.SSLError, OSError):
        return True
    try:
        await client.send(network(dialect.SIGN_ON))
        return await client.closed_by_peer()
    except (ssl.SSLError, OSError):
        return True
    finally:
        await client.close()


def test_clients_without_a_certificate_of_its_ca_are_refused(pki: Pki, tmp_path: Path) -> None:
    """A client with no certificate, or one from another CA, never gets an answer, and a
    proper client still signs on afterwards."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            no_cert = ssl.create_default_context(cafile=pki.netsim.ca)
            assert await _refused(sim.port, no_cert)
            intruder = Credentials(cert=pki.foreign.cert, key=pki.foreign.key, ca=pki.netsim.ca)
            assert await _refused(sim.port, client_context(intruder))
            client = await connect(sim.port, pki)
            assert sim.connections == 1
            await client.close()

    run(main())


def test_financial_messages_need_a_sign_on(pki: Pki, tmp_path: Path) -> None:
    """Before sign-on and after sign-off a 0100 is answered 91 and not recorded; in
    between it is processed."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki, sign_on=False)
            before = await client.request(auth())
            assert (before["t"], before["39"]) == ("0110", "91")
            await client.sign_on()
            signed = auth()
            assert (await client.request(signed))["39"] == "00"
            off = await client.request(network(dialect.SIGN_OFF))
            assert (off["t"], off["39"], off["70"]) == ("0810", "00", "002")
            after = await client.request(auth())
            assert after["39"] == "91"
            await client.close()
            assert [a.stan for a in sim.ledger.authorizations()] == [signed["11"]]
            assert len(sim.ledger.entries()) == 1

    run(main())


def test_echo_works_before_sign_on_and_unknown_codes_are_format_errors(
        pki: Pki, tmp_path: Path) -> None:
    """An echo (301) is answered 00 with its fields echoed even before sign-on; an unknown
    network management code gets 30."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki, sign_on=False)
            echo = network(dialect.ECHO)
            reply = await client.request(echo)
            assert reply["t"] == "0810" and reply["39"] == "00"
            assert {k: reply[k] for k in ("11", "32", "41", "70")} == {
                k: echo[k] for k in ("11", "32", "41", "70")}
            assert len(reply["7"]) == 10
            assert (await client.request(network("999")))["39"] == "30"
            await client.close()

    run(main())


def test_malformed_frames_never_crash_the_server(pki: Pki, tmp_path: Path) -> None:
    """Garbage, truncated messages, unknown MTIs, missing fields and a bad length header
    are answered 30 or dropped as the dialect says, and netsim keeps serving."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            rng = random.Random(5)
            for size in (1, 7, 50, 300):  # garbage: dropped; the echo after it is answered
                await client.send_raw(codec.framing.frame(rng.randbytes(size)))
            full = codec.encode(auth(), dialect.SPEC)
            await client.send_raw(codec.framing.frame(full[:40]))  # cut before field 11
            await client.send_raw(codec.framing.frame(codec.encode(
                {**network(dialect.ECHO), "t": "0300"}, dialect.SPEC)))  # unknown MTI
            no_stan = {k: v for k, v in auth().items() if k != "11"}
            await client.send(no_stan)
            echo = network(dialect.ECHO)
            assert (await client.request(echo))["11"] == echo["11"]

            cut = auth()
            wire = codec.encode(cut, dialect.SPEC)
            end_of_41 = wire.index(cut["41"].encode()) + 8
            await client.send_raw(codec.framing.frame(wire[:end_of_41 + 3]))
            truncated = await client.receive()
            assert truncated is not None
            assert (truncated["t"], truncated["11"], truncated["39"]) == ("0110", cut["11"], "30")
            assert "2" not in truncated

            missing = {k: v for k, v in auth().items() if k != "42"}
            assert (await client.request(missing))["39"] == "30"

            await client.send_raw(b"\x00\x00")  # zero-length header: the connection closes
            assert await client.closed_by_peer()
            await client.close()

            again = await connect(sim.port, pki)
            assert (await again.request(auth()))["39"] == "00"
            await again.close()
            assert len(sim.ledger.authorizations()) == 1

    run(main())


class _FailingLedger(Ledger):
    """A ledger that blows up on one STAN, to prove handler errors stay contained."""

    def record(self, request: Request, done: OnCommit, *, code: str | None = None,
               approval_code: str = "") -> None:
        if request.stan == "999999":
            raise RuntimeError("boom")
        super().record(request, done, code=code, approval_code=approval_code)


def test_an_exception_in_a_handler_hurts_nobody_else(pki: Pki, tmp_path: Path) -> None:
    """A request whose handling raises gets no answer, while requests around it on the same
    connection are answered."""

    async def main() -> None:
        ledger = _FailingLedger(tmp_path / "netsim.db")
        async with NetSim(server_context(pki.netsim), ledger) as sim:
            client = await connect(sim.port, pki)
            await client.send(auth(stan="999999"))
            good = auth()
            reply = await client.request(good)
            assert reply["11"] == good["11"] and reply["39"] == "00"
            assert await client.receive(SHORT_WAIT) is None
            await client.close()
        ledger.close()

    run(main())


def test_drop_rate_drops_answers_but_records(pki: Pki, tmp_path: Path) -> None:
    """With drop_rate=1.0 an approval is recorded but never answered; setting it back to 0
    at run time brings answers back."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            sim.faults.drop_rate = 1.0
            dropped = auth()
            await client.send(dropped)
            assert await client.receive(SHORT_WAIT) is None
            record = sim.ledger.find_authorization(TERMINAL, dropped["11"])
            assert record is not None and record.response_code == "00"
            sim.faults.drop_rate = 0.0
            assert (await client.request(auth()))["39"] == "00"
            await client.close()

    run(main())


def test_reset_rate_aborts_the_connection_after_recording(pki: Pki, tmp_path: Path) -> None:
    """With reset_rate=1.0 the request is recorded and its connection is aborted instead
    of answered."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            sim.faults.reset_rate = 1.0
            doc = auth()
            await client.send(doc)
            assert await client.closed_by_peer()
            await client.close()
            assert sim.ledger.find_authorization(TERMINAL, doc["11"]) is not None

    run(main())


def test_reset_connections_aborts_every_live_connection(pki: Pki, tmp_path: Path) -> None:
    """reset_connections aborts all live connections (in flight or idle) and reports how
    many; new connections work afterwards."""

    async def main() -> None:
        async with serving(pki, tmp_path, faults=Faults(latency=30.0)) as sim:
            first = await connect(sim.port, pki, sign_on=False)
            second = await connect(sim.port, pki, sign_on=False)
            await first.send(network(dialect.SIGN_ON))  # in flight for 30 s
            for _ in range(100):
                if sim.connections == 2:
                    break
                await asyncio.sleep(0.01)
            assert await sim.reset_connections() == 2
            assert await first.closed_by_peer() and await second.closed_by_peer()
            await first.close()
            await second.close()
            sim.faults.latency = 0.0
            third = await connect(sim.port, pki)
            assert (await third.request(auth()))["39"] == "00"
            await third.close()

    run(main())


def test_refuse_closes_new_connections_only(pki: Pki, tmp_path: Path) -> None:
    """With refuse=True new connections are closed at once while an existing one keeps
    working; turning it off accepts again."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            existing = await connect(sim.port, pki)
            sim.faults.refuse = True
            assert await _refused(sim.port, client_context(pki.gateway))
            assert (await existing.request(auth()))["39"] == "00"
            sim.faults.refuse = False
            fresh = await connect(sim.port, pki)
            await fresh.close()
            await existing.close()

    run(main())


def test_many_requests_in_flight_each_get_their_own_answer(pki: Pki, tmp_path: Path) -> None:
    """300 requests in flight on one connection, answered with random jitter, each receive
    exactly their own response (matched on 41/11, same amount and RRN)."""

    async def main() -> None:
        faults = Faults(latency=0.01, jitter=0.05, seed=7)
        async with serving(pki, tmp_path, faults=faults) as sim:
            client = await connect(sim.port, pki)
            docs = [auth(amount=i + 1, stan=next_stan()) for i in range(300)]
            for doc in docs:
                await client.send(doc)
            replies = [await client.receive() for _ in docs]
            await client.close()
        by_key = {dialect.match_key(d): d for d in docs}
        assert len(by_key) == 300
        answered = [r for r in replies if r is not None]
        assert len(answered) == 300
        for reply in answered:
            assert reply["t"] == "0110" and reply["39"] == "00"
            request = by_key[dialect.match_key(reply)]
            assert (reply["4"], reply["37"]) == (request["4"], request["37"])
        assert {dialect.match_key(r) for r in answered} == set(by_key)
        assert [r["11"] for r in answered] != [d["11"] for d in docs]  # completion order

    run(main())


def test_stop_closes_connections_and_start_binds_a_free_port(pki: Pki, tmp_path: Path) -> None:
    """stop() ends live connections and in-flight slow answers; the port is known only
    once started."""

    async def main() -> None:
        ledger = Ledger(tmp_path / "netsim.db")
        sim = NetSim(server_context(pki.netsim), ledger, slow_delay=30.0)
        with pytest.raises(RuntimeError):
            _ = sim.port
        await sim.start()
        client = await connect(sim.port, pki)
        await client.send(auth("4000000000000267"))  # answered only after 30 s
        await asyncio.sleep(0.1)
        await sim.stop()
        assert await client.closed_by_peer()
        assert sim.connections == 0
        await client.close()
        assert len(ledger.authorizations()) == 1
        ledger.close()

    run(main())
