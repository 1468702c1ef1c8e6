"""netsim's payment flows over the network: every test card, captures, refunds, voids,
timeout reversal advices and duplicates, each checked on the wire and in the ledger."""

from __future__ import annotations

from pathlib import Path

import structlog
from conftest import Pki
from netsim_client import (
    APPROVE,
    DECLINE,
    LOST,
    NO_FUNDS,
    SHORT_WAIT,
    SLOW,
    SYSTEM_ERROR,
    TERMINAL,
    Client,
    auth,
    capture,
    connect,
    refund,
    reversal,
    run,
    serving,
)

import codec
from codec import dialect
from netsim import TEST_CARDS, EntryKind, NetSim, Status
from netsim.server import RESPONSE_FIELDS


async def _approved(client: Client, amount: int = 1000) -> tuple[dict[str, str], str]:
    """Authorize ``amount`` on the approving card; return the 0100 and its approval code."""
    doc = auth(APPROVE, amount)
    reply = await client.request(doc)
    assert reply["39"] == "00"
    return doc, reply["38"]


def _status(sim: NetSim, doc: dict[str, str]) -> tuple[Status, int, int, int, int]:
    record = sim.ledger.find_authorization(TERMINAL, doc["11"])
    assert record is not None
    return record.status, record.held, record.captured, record.refunded, record.reversed


def test_every_test_card_answers_as_the_table_says(pki: Pki, tmp_path: Path) -> None:
    """Approve (with a 6-character approval code), 05, 51 and 96 come back with the fields
    of the dialect, and the ledger records each with its code."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            for pan, code in ((APPROVE, "00"), (DECLINE, "05"), (NO_FUNDS, "51"),
                              (SYSTEM_ERROR, "96"), ("4111111111111111", "00")):
                doc = auth(pan)
                reply = await client.request(doc)
                assert reply["39"] == code, pan
                expected = set(RESPONSE_FIELDS["0110"]) - ({"38"} if code != "00" else set())
                assert set(reply) - {"t", "p"} == expected
                assert all(reply[f] == doc[f] for f in expected - {"7", "38", "39"})
                if code == "00":
                    assert len(reply["38"]) == 6 and reply["38"].isalnum()
                record = sim.ledger.find_authorization(TERMINAL, doc["11"])
                assert record is not None and record.response_code == code
                assert record.status == (Status.APPROVED if code == "00" else Status.DECLINED)
            await client.close()

    run(main())


def test_invalid_and_expired_cards(pki: Pki, tmp_path: Path) -> None:
    """A Luhn-invalid PAN is answered 14 and an expired card 54, both recorded as declined."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            assert (await client.request(auth("4242424242424241")))["39"] == "14"
            assert (await client.request(auth(APPROVE, expiry="2001")))["39"] == "54"
            await client.close()
            assert [a.response_code for a in sim.ledger.authorizations()] == ["14", "54"]

    run(main())


def test_lost_response_card_is_approved_but_never_answered(pki: Pki, tmp_path: Path) -> None:
    """The lost-response card gets no reply (the next request's reply comes, then nothing),
    yet the ledger has its approval."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            lost = auth(LOST)
            await client.send(lost)
            after = auth()
            assert (await client.request(after))["11"] == after["11"]
            assert await client.receive(SHORT_WAIT) is None
            await client.close()
            record = sim.ledger.find_authorization(TERMINAL, lost["11"])
            assert record is not None
            assert (record.response_code, record.status, record.held) == ("00", Status.APPROVED,
                                                                          1999)
            assert len(record.approval_code) == 6

    run(main())


def test_slow_card_is_answered_late_without_holding_up_others(pki: Pki, tmp_path: Path) -> None:
    """The slow card's approval arrives after the answer to a request sent after it, and is
    an approval the ledger holds."""

    async def main() -> None:
        async with serving(pki, tmp_path, slow_delay=SHORT_WAIT) as sim:
            client = await connect(sim.port, pki)
            slow = auth(SLOW)
            await client.send(slow)
            quick = auth()
            await client.send(quick)
            first, second = await client.receive(), await client.receive()
            assert first is not None and second is not None
            assert (first["11"], second["11"]) == (quick["11"], slow["11"])
            assert second["39"] == "00"
            record = sim.ledger.find_authorization(TERMINAL, slow["11"])
            assert record is not None and record.approval_code == second["38"]
            await client.close()

    run(main())


def test_captures_full_partial_and_above_the_hold(pki: Pki, tmp_path: Path) -> None:
    """Partial captures add up to the hold; one more unit is 13; a full capture of another
    hold succeeds; an unknown original or wrong RRN is 25."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, code = await _approved(client, 1000)
            first = await client.request(capture(doc, code, 600))
            assert (first["t"], first["39"], first["4"]) == ("0230", "00", "000000000600")
            assert set(first) - {"t", "p"} == set(RESPONSE_FIELDS["0230"])
            assert (await client.request(capture(doc, code, 401)))["39"] == "13"
            assert (await client.request(capture(doc, code, 400)))["39"] == "00"
            assert _status(sim, doc) == (Status.APPROVED, 0, 1000, 0, 0)

            other, other_code = await _approved(client, 500)
            assert (await client.request(capture(other, other_code, 500)))["39"] == "00"
            assert (await client.request(capture(other, other_code, 1)))["39"] == "13"

            ghost = auth()  # never sent: no such original
            assert (await client.request(capture(ghost, "ABC123", 10)))["39"] == "25"
            wrong_rrn = {**capture(other, other_code, 1), "37": "999999999999"}
            assert (await client.request(wrong_rrn))["39"] == "25"
            await client.close()
            captures = sim.ledger.entries(kind=EntryKind.CAPTURE)
            assert [c.response_code for c in captures] == ["00", "13", "00", "00", "13", "25",
                                                           "25"]

    run(main())


def test_refunds_up_to_the_captured_amount(pki: Pki, tmp_path: Path) -> None:
    """Refunds are accepted up to the total captured (13 beyond) and refused (12) on a hold
    that was never captured."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, code = await _approved(client, 1000)
            assert (await client.request(refund(doc, 100)))["39"] == "12"  # nothing captured
            assert (await client.request(capture(doc, code, 700)))["39"] == "00"
            first = await client.request(refund(doc, 500))
            assert (first["t"], first["39"], first["3"]) == ("0210", "00", "200000")
            assert (await client.request(refund(doc, 201)))["39"] == "13"
            assert (await client.request(refund(doc, 200)))["39"] == "00"
            assert (await client.request(refund(doc, 1)))["39"] == "13"
            await client.close()
            assert _status(sim, doc) == (Status.APPROVED, 300, 700, 700, 0)

    run(main())


def test_void_releases_an_uncaptured_hold_only(pki: Pki, tmp_path: Path) -> None:
    """A 0400 voids an uncaptured hold (00, then captures are 12); a fully captured hold
    cannot be voided (12); after a partial capture only the exact remainder is released;
    an unknown original is 25."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, code = await _approved(client, 1000)
            void = await client.request(reversal(doc, "0400"))
            assert (void["t"], void["39"]) == ("0410", "00")
            assert _status(sim, doc) == (Status.REVERSED, 0, 0, 0, 1000)
            assert (await client.request(capture(doc, code, 10)))["39"] == "12"

            captured, code2 = await _approved(client, 800)
            assert (await client.request(capture(captured, code2, 800)))["39"] == "00"
            assert (await client.request(reversal(captured, "0400")))["39"] == "12"
            assert (await client.request(reversal(auth(), "0400")))["39"] == "25"

            partial, code3 = await _approved(client, 900)
            assert (await client.request(capture(partial, code3, 600)))["39"] == "00"
            assert (await client.request(reversal(partial, "0400")))["39"] == "13"
            release = {**reversal(partial, "0400"), "4": "000000000300"}
            assert (await client.request(release))["39"] == "00"
            assert _status(sim, partial) == (Status.REVERSED, 0, 600, 0, 300)
            assert (await client.request(capture(partial, code3, 100)))["39"] == "12"
            await client.close()

    run(main())


def test_timeout_reversal_and_repeats_never_double_reverse(pki: Pki, tmp_path: Path) -> None:
    """A 0420 and two 0421 repeats are each acknowledged 0430/00 and recorded with their own
    STAN, but the hold is released exactly once."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            lost = auth(LOST, 1500)
            await client.send(lost)
            advices = [reversal(lost, "0420"), reversal(lost, "0421"), reversal(lost, "0421")]
            for advice in advices:
                reply = await client.request(advice)
                assert (reply["t"], reply["39"], reply["11"]) == ("0430", "00", advice["11"])
            await client.close()
            assert _status(sim, lost) == (Status.REVERSED, 0, 0, 0, 1500)
            entries = sim.ledger.reversals_of(TERMINAL, lost["11"])
            assert [(e.mti, e.stan, e.outcome, e.effect, e.changed) for e in entries] == [
                ("0420", advices[0]["11"], "reversed", 1500, True),
                ("0421", advices[1]["11"], "already-reversed", 0, False),
                ("0421", advices[2]["11"], "already-reversed", 0, False)]

    run(main())


def test_advice_for_an_unknown_original_is_acknowledged(pki: Pki, tmp_path: Path) -> None:
    """A 0420 naming a 0100 that never arrived is acknowledged 00 and recorded as nothing
    to reverse."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            never_sent = auth()
            reply = await client.request(reversal(never_sent, "0420"))
            assert (reply["t"], reply["39"]) == ("0430", "00")
            await client.close()
            [entry] = sim.ledger.reversals_of(TERMINAL, never_sent["11"])
            assert (entry.outcome, entry.changed, entry.authorization_id) == (
                "nothing-to-reverse", False, None)
            assert sim.ledger.authorizations() == []

    run(main())


def test_advice_on_a_partly_captured_hold_releases_the_remainder(pki: Pki,
                                                                  tmp_path: Path) -> None:
    """After a partial capture, a 0420 releases only the uncaptured remainder; the capture
    stands and can still be refunded."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, code = await _approved(client, 1000)
            assert (await client.request(capture(doc, code, 300)))["39"] == "00"
            assert (await client.request(reversal(doc, "0420")))["39"] == "00"
            assert _status(sim, doc) == (Status.REVERSED, 0, 300, 0, 700)
            assert (await client.request(refund(doc, 300)))["39"] == "00"
            await client.close()

    run(main())


def test_duplicate_authorization_is_94_and_recorded_once(pki: Pki, tmp_path: Path) -> None:
    """The same 0100 (terminal, STAN, field 7) sent twice is answered 94 the second time
    and the ledger keeps one authorization and one entry."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc = auth()
            first = await client.request(doc)
            second = await client.request(doc)
            assert (first["39"], second["39"]) == ("00", "94")
            assert "38" not in second
            await client.close()
            assert len(sim.ledger.authorizations()) == 1
            assert len(sim.ledger.entries()) == 1

    run(main())


def test_no_full_pan_reaches_the_ledger_file_or_the_logs(pki: Pki, tmp_path: Path) -> None:
    """After every test card went through netsim (with captures and reversals), neither
    the ledger's files nor any log event contain a full test PAN."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            for pan in TEST_CARDS:
                doc = auth(pan)
                await client.send(doc)
                await client.request(reversal(doc, "0420"))
            truncated = codec.encode(auth(), dialect.SPEC)[:60]  # undecodable, PAN inside
            await client.send_raw(codec.framing.frame(truncated))
            await client.request(auth("4111111111111111"))
            await client.close()

    with structlog.testing.capture_logs() as events:
        run(main())
    blob = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.is_file())
    text = repr(events)
    assert b"424242" in blob and "message.undecodable" in text and "424242" in text
    for pan in [*TEST_CARDS, "4111111111111111"]:
        assert pan.encode() not in blob
        assert pan not in text
