"""netsim's repeats (0221, 0201, 0401) over the network: a repeat of a processed message
gets its answer and applies nothing; a repeat of a lost one is processed once; a repeat
unlike its original is a format error; and every message settles at most once."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path
from typing import NamedTuple

import pytest
from conftest import Pki
from netsim_client import (
    APPROVE,
    TERMINAL,
    Client,
    auth,
    capture,
    connect,
    refund,
    repeat,
    reversal,
    run,
    serving,
)

from gateway.pki import server_context
from netsim import Ledger, NetSim, Status, parse_settlement, write_settlement


class Kind(NamedTuple):
    """One message that has a repeat, and what it does to an authorization of 1000."""

    base: str
    repeat: str
    answer: str
    outcome: str
    effect: int
    before: tuple[Status, int, int, int]   # status, captured, refunded, reversed
    after: tuple[Status, int, int, int]


KINDS = [
    Kind("0220", "0221", "0230", "captured", 600,
         (Status.APPROVED, 0, 0, 0), (Status.APPROVED, 600, 0, 0)),
    Kind("0200", "0201", "0210", "refunded", 400,
         (Status.APPROVED, 1000, 0, 0), (Status.APPROVED, 1000, 400, 0)),
    Kind("0400", "0401", "0410", "reversed", 1000,
         (Status.APPROVED, 0, 0, 0), (Status.REVERSED, 0, 0, 1000)),
]
IDS = ["capture", "refund", "void"]
DAY = date(2031, 5, 17)


async def _original(client: Client, kind: Kind, *, valid: bool = True
                    ) -> tuple[dict[str, str], dict[str, str]]:
    """Authorize 1000 (and capture all of it, before a refund); return the 0100 and an
    unsent ``kind.base`` message against it: valid, or one the rules refuse with 13."""
    doc = auth(APPROVE, 1000)
    reply = await client.request(doc)
    assert reply["39"] == "00"
    if kind.base == "0220":
        return doc, capture(doc, reply["38"], kind.effect if valid else 1001)
    if kind.base == "0200":
        assert (await client.request(capture(doc, reply["38"], 1000)))["39"] == "00"
        return doc, refund(doc, kind.effect if valid else 1001)
    return doc, {**reversal(doc, "0400"), "4": f"{1000 if valid else 999:012d}"}


def _state(ledger: Ledger, doc: dict[str, str]) -> tuple[Status, int, int, int]:
    record = ledger.find_authorization(TERMINAL, doc["11"])
    assert record is not None
    return record.status, record.captured, record.refunded, record.reversed


def _journal(ledger: Ledger, message: dict[str, str]) -> list[tuple[str, str, str, int, bool]]:
    """(MTI, code, outcome, effect, changed) of every entry under ``message``'s STAN."""
    return [(e.mti, e.response_code, e.outcome, e.effect, e.changed) for e in ledger.entries()
            if e.terminal == TERMINAL and e.stan == message["11"]]


async def _expect(client: Client, message: dict[str, str], answer: str, code: str) -> None:
    reply = await client.request(message)
    assert (reply["t"], reply["39"], reply["11"], reply["4"]) == (
        answer, code, message["11"], message["4"])


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_repeat_after_the_original_gets_its_answer_and_applies_nothing(
        pki: Pki, tmp_path: Path, kind: Kind) -> None:
    """After the original is processed, two repeats are each answered with its code and
    field 4, are journalled as changing nothing, and leave the amounts as it left them."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, message = await _original(client, kind)
            assert _state(sim.ledger, doc) == kind.before
            await _expect(client, message, kind.answer, "00")
            for _ in range(2):
                await _expect(client, repeat(message), kind.answer, "00")
            await client.close()
            assert _state(sim.ledger, doc) == kind.after
            assert _journal(sim.ledger, message) == [
                (kind.base, "00", kind.outcome, kind.effect, True),
                (kind.repeat, "00", "repeat", 0, False),
                (kind.repeat, "00", "repeat", 0, False)]
            authorization = sim.ledger.find_authorization(TERMINAL, doc["11"])
            assert authorization is not None
            assert {e.authorization_id for e in sim.ledger.entries()
                    if e.stan == message["11"]} == {authorization.id}

    run(main())


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_repeat_of_a_refused_original_gets_the_refusal(pki: Pki, tmp_path: Path,
                                                        kind: Kind) -> None:
    """A repeat of an original refused with 13 is answered 13 too, and changes nothing
    (it is not decided again)."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, message = await _original(client, kind, valid=False)
            await _expect(client, message, kind.answer, "13")
            await _expect(client, repeat(message), kind.answer, "13")
            await client.close()
            assert _state(sim.ledger, doc) == kind.before
            assert _journal(sim.ledger, message) == [
                (kind.base, "13", "rejected", 0, False),
                (kind.repeat, "13", "repeat", 0, False)]

    run(main())


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_repeat_of_a_lost_original_is_processed_once(pki: Pki, tmp_path: Path,
                                                      kind: Kind) -> None:
    """A repeat whose original never arrived is processed as the original; the original
    arriving afterwards is a duplicate (94), a second repeat gets the first one's answer,
    and the amounts move once."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, message = await _original(client, kind)  # the original is never sent
            await _expect(client, repeat(message), kind.answer, "00")
            assert _state(sim.ledger, doc) == kind.after
            await _expect(client, message, kind.answer, "94")
            await _expect(client, repeat(message), kind.answer, "00")
            await client.close()
            assert _state(sim.ledger, doc) == kind.after
            assert _journal(sim.ledger, message) == [
                (kind.repeat, "00", kind.outcome, kind.effect, True),
                (kind.repeat, "00", "repeat", 0, False)]

    run(main())


@pytest.mark.parametrize("kind", KINDS, ids=IDS)
def test_repeat_unlike_its_original_is_a_format_error(pki: Pki, tmp_path: Path,
                                                      kind: Kind) -> None:
    """A repeat with the original's STAN and field 7 but another amount or RRN is answered
    30 and records nothing; the true repeat still gets the original's answer."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            doc, message = await _original(client, kind)
            await _expect(client, message, kind.answer, "00")
            other_amount = {**repeat(message), "4": f"{int(message['4']) + 1:012d}"}
            other_rrn = {**repeat(message), "37": "999999999999"}
            for wrong in (other_amount, other_rrn):
                await _expect(client, wrong, kind.answer, "30")
            assert _journal(sim.ledger, message) == [
                (kind.base, "00", kind.outcome, kind.effect, True)]
            await _expect(client, repeat(message), kind.answer, "00")
            await client.close()
            assert _state(sim.ledger, doc) == kind.after
            assert [e[2] for e in _journal(sim.ledger, message)] == [kind.outcome, "repeat"]

    run(main())


def test_repeats_never_add_a_settlement_line(pki: Pki, tmp_path: Path) -> None:
    """With every kind sent as original-then-repeats and as repeat-then-original-then-
    repeat, the day's file has exactly one line per processed message, the repeat's own
    MTI when it was processed in place of a lost original."""
    ledger = Ledger(tmp_path / "netsim.db", clock=lambda: datetime(2031, 5, 17, 10, tzinfo=UTC))

    async def main() -> None:
        async with NetSim(server_context(pki.netsim), ledger) as sim:
            client = await connect(sim.port, pki)
            for kind in KINDS:
                for lost in (False, True):
                    _, message = await _original(client, kind)
                    order = ([repeat(message), message, repeat(message)] if lost
                             else [message, repeat(message), repeat(message)])
                    for sent in order:
                        await client.request(sent)
            await client.close()

    run(main())
    path = tmp_path / "settlement.txt"
    written = write_settlement(ledger, DAY, path)
    ledger.close()
    parsed = parse_settlement(path)
    assert parsed == written
    assert [(d.mti, d.sign, d.amount) for d in parsed.details] == [
        ("0100", "M", 1000), ("0220", "D", 600),
        ("0100", "M", 1000), ("0221", "D", 600),
        ("0100", "M", 1000), ("0220", "D", 1000), ("0200", "C", 400),
        ("0100", "M", 1000), ("0220", "D", 1000), ("0201", "C", 400),
        ("0100", "M", 1000), ("0400", "M", 1000),
        ("0100", "M", 1000), ("0401", "M", 1000)]
    assert len({d.stan for d in parsed.details}) == len(parsed.details)
