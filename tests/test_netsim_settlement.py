"""netsim's settlement files: a test day written from the ledger parses back, its
trailer adds up, and any tampering is rejected."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from conftest import Pki
from netsim_client import (
    DECLINE,
    LOST,
    auth,
    capture,
    connect,
    refund,
    reversal,
    run,
)

from gateway.pki import server_context
from netsim import Ledger, NetSim, Request, SettlementError, parse_settlement, write_settlement
from netsim.settlement import parse_settlement_text

TEST_DAY = date(2031, 5, 17)


def _clock() -> datetime:
    return datetime(2031, 5, 17, 10, 30, tzinfo=UTC)


def _traffic_day(pki: Pki, tmp_path: Path) -> Ledger:
    """Run a day of traffic through netsim into a ledger whose clock says TEST_DAY."""
    ledger = Ledger(tmp_path / "netsim.db", clock=_clock)

    async def main() -> None:
        async with NetSim(server_context(pki.netsim), ledger) as sim:
            client = await connect(sim.port, pki)
            sale = auth(amount=2500)
            code = (await client.request(sale))["38"]
            assert (await client.request(capture(sale, code, 2000)))["39"] == "00"
            assert (await client.request(refund(sale, 500)))["39"] == "00"
            assert (await client.request(refund(sale, 5000)))["39"] == "13"   # not settled
            voided = auth(amount=700)
            await client.request(voided)
            assert (await client.request(reversal(voided, "0400")))["39"] == "00"
            lost = auth(LOST, amount=300)
            await client.send(lost)
            for mti in ("0420", "0421"):  # the repeat changes nothing: not settled
                assert (await client.request(reversal(lost, mti)))["39"] == "00"
            assert (await client.request(auth(DECLINE)))["39"] == "05"          # not settled
            dollars = auth(amount=1234, currency="840")
            await client.request(dollars)
            await client.close()

    run(main())
    return ledger


def test_a_test_day_settles_and_parses_back(pki: Pki, tmp_path: Path) -> None:
    """The day's file lists exactly the accepted transactions with their signs and amounts,
    parses back equal to what was written, and its trailer adds up."""
    ledger = _traffic_day(pki, tmp_path)
    path = tmp_path / "settlement.txt"
    written = write_settlement(ledger, TEST_DAY, path)
    parsed = parse_settlement(path)
    assert parsed == written
    assert parsed.header.day == TEST_DAY
    rows = [(d.mti, d.sign, d.amount, d.currency) for d in parsed.details]
    assert rows == [("0100", "M", 2500, "978"), ("0220", "D", 2000, "978"),
                    ("0200", "C", 500, "978"), ("0100", "M", 700, "978"),
                    ("0400", "M", 700, "978"), ("0100", "M", 300, "978"),
                    ("0420", "M", 300, "978"), ("0100", "M", 1234, "840")]
    assert [d.seq for d in parsed.details] == list(range(1, 9))
    assert parsed.trailer.count == len(parsed.details) == 8
    euro, dollar = parsed.trailer.totals["978"], parsed.trailer.totals["840"]
    assert (euro.debit_count, euro.debit_total, euro.credit_count, euro.credit_total) == (
        1, 2000, 1, 500)
    assert (euro.memo_count, euro.memo_total, euro.net) == (5, 4500, 1500)
    assert (dollar.memo_count, dollar.memo_total, dollar.net) == (1, 1234, 0)
    sale = parsed.details[0]
    assert sale.approval_code == parsed.details[1].approval_code != ""
    assert parsed.details[1].original_stan == sale.stan
    assert (sale.merchant, sale.terminal, sale.processing_code) == (
        "MERCHANT0000001", "TERM0001", "000000")
    text = path.read_text()
    assert text.splitlines()[-1] == "T|8|2"
    assert "4000000000000259" not in text and "4242424242424242" not in text
    ledger.close()


def test_a_day_without_traffic_is_an_empty_settlement(tmp_path: Path) -> None:
    """Another day's file has a header and a zero trailer only, and parses."""
    with Ledger(tmp_path / "empty.db", clock=_clock) as ledger:
        path = tmp_path / "other-day.txt"
        write_settlement(ledger, "2031-05-18", path)
    lines = path.read_text().splitlines()
    assert lines[0].startswith("H|NETSIM|1|2031-05-18|") and lines[1:] == ["T|0|0"]
    assert parse_settlement(path).details == ()


def test_separators_in_ids_are_escaped(tmp_path: Path) -> None:
    """A merchant id containing '|' and '%' survives writing and parsing unchanged."""
    with Ledger(tmp_path / "odd.db", clock=_clock) as ledger:
        ledger.apply(Request(mti="0100", processing_code="000000", stan="000001",
                             transmitted="0517103000", rrn="051710000001", terminal="T|RM%001",
                             merchant="SHOP|100%  PURE", acquirer="440001", amount=5,
                             currency="978", pan="4242424242424242"),
                     code="00", approval_code="ABC123")
        path = tmp_path / "odd.txt"
        write_settlement(ledger, TEST_DAY, path)
    assert "%7C" in path.read_text()
    [detail] = parse_settlement(path).details
    assert (detail.merchant, detail.terminal) == ("SHOP|100%  PURE", "T|RM%001")


def _replace_last(old: str, new: str) -> Callable[[list[str]], list[str]]:
    def edit(lines: list[str]) -> list[str]:
        index = max(i for i, line in enumerate(lines) if line.startswith(old))
        lines[index] = new if "|" in new else lines[index].replace(old, new, 1)
        return lines
    return edit


def _drop_detail(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("D|3|")]


def _inflate_amount(lines: list[str]) -> list[str]:
    return [line.replace("|000000002000|", "|000000002001|") for line in lines]


def _bump_debit_total(lines: list[str]) -> list[str]:
    return [line.replace("S|978|1|2000|", "S|978|1|2100|") for line in lines]


def _drop_trailer(lines: list[str]) -> list[str]:
    return lines[:-1]


def _drop_currency(lines: list[str]) -> list[str]:
    return [line for line in lines if not line.startswith("S|840|")]


@pytest.mark.parametrize(("tamper", "reason"), [
    (_replace_last("T|", "T|9|2"), "trailer count 9"),
    (_replace_last("T|", "T|8|1"), "trailer names 1 currencies"),
    (_drop_detail, "sequence must be 3"),
    (_inflate_amount, "totals do not add up for currency 978"),
    (_bump_debit_total, "totals do not add up for currency 978"),
    (_drop_trailer, "no trailer"),
    (_drop_currency, "trailer names 2 currencies, file has 1"),
], ids=["count", "currencies", "missing-detail", "detail-amount", "currency-total",
        "no-trailer", "missing-currency-totals"])
def test_tampered_files_are_rejected(pki: Pki, tmp_path: Path,
                                     tamper: Callable[[list[str]], list[str]],
                                     reason: str) -> None:
    """Any change that makes the trailer or totals disagree with the details raises
    SettlementError saying what does not add up."""
    ledger = _traffic_day(pki, tmp_path)
    path = tmp_path / "settlement.txt"
    write_settlement(ledger, TEST_DAY, path)
    ledger.close()
    lines = path.read_text().splitlines()
    tampered = "\n".join(tamper(list(lines))) + "\n"
    assert tampered != path.read_text()
    with pytest.raises(SettlementError, match=reason):
        parse_settlement_text(tampered)


@pytest.mark.parametrize(("text", "reason"), [
    ("", "empty file"),
    ("T|0|0\n", "first line must be the header"),
    ("H|NETSIM|2|2031-05-17|2031-05-17T10:30:00Z\nT|0|0\n", "unknown network or version"),
    ("H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\nX|1\nT|0|0\n", "unknown record type"),
    ("H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\nT|0|0\nT|0|0\n", "line after the trailer"),
    ("H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\n\nT|0|0\n", "unknown record type"),
    ("H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\n"
     "D|1|2031-05-18|103000|0100|000000|000001|R|A|000000000005|978|M|M|T|\n"
     "S|978|0|0|0|0|1|5\nT|1|1\n", "differs from the header's day"),
    ("H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\n"
     "D|1|2031-05-17|103000|0100|000000|000001|R|A|5|978|M|M|T|\n"
     "S|978|0|0|0|0|1|5\nT|1|1\n", "amount must be 12 digits"),
])
def test_malformed_files_are_rejected(text: str, reason: str) -> None:
    """Empty files, a missing or unknown header, unknown records, lines after the trailer,
    blank lines, bad amounts and details of another day raise SettlementError."""
    with pytest.raises(SettlementError, match=reason):
        parse_settlement_text(text)


def test_a_minimal_hand_written_file_parses() -> None:
    """A hand-written file following SETTLEMENT.md parses into its header, detail and
    totals."""
    parsed = parse_settlement_text(
        "H|NETSIM|1|2031-05-17|2031-05-17T10:30:00Z\n"
        "D|1|2031-05-17|103000|0220|000000|000002|051710000001|ABC123|000000000005|978|D|"
        "MERCHANT0000001|TERM0001|000001\n"
        "S|978|1|5|0|0|0|0\nT|1|1\n")
    [detail] = parsed.details
    assert (detail.mti, detail.amount, detail.sign, detail.original_stan) == (
        "0220", 5, "D", "000001")
    assert parsed.trailer.totals["978"].net == 5
