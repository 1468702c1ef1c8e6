"""netsim's ledger on its own: records, state changes, duplicates, readers in other
threads, and that no full card number ever reaches the file."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from netsim import TEST_CARDS, EntryKind, Ledger, LedgerClosedError, Request, Status
from netsim.rules import Original

DAY = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)


def _auth(stan: str, pan: str = "4242424242424242", amount: int = 1000) -> Request:
    return Request(mti="0100", processing_code="000000", stan=stan, transmitted="0517120000",
                   rrn=f"051712{stan}", terminal="TERM0001", merchant="MERCHANT0000001",
                   acquirer="440001", amount=amount, currency="978", expiry="3012", pan=pan)


def _ref(mti: str, original: Request, stan: str, amount: int, code: str = "000000",
         approval: str = "") -> Request:
    return Request(mti=mti, processing_code=code, stan=stan, transmitted="0517120100",
                   rrn=original.rrn, terminal=original.terminal, merchant=original.merchant,
                   acquirer="440001", amount=amount, currency="978", approval_code=approval,
                   original=Original("0100", original.stan, original.transmitted, "440001"))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger.db", clock=lambda: DAY) as led:
        yield led


def test_authorizations_are_recorded_with_card_as_bin_and_last4(ledger: Ledger) -> None:
    """An approval and a decline are both recorded, with status, code and a masked card."""
    ok = ledger.apply(_auth("000001"), code="00", approval_code="ABC123")
    no = ledger.apply(_auth("000002", "4000000000000002"), code="05", approval_code="IGNORED")
    assert ok.code == "00" and no.code == "05"
    records = ledger.authorizations()
    assert [(r.stan, r.status, r.response_code, r.approval_code, r.held) for r in records] == [
        ("000001", Status.APPROVED, "00", "ABC123", 1000),
        ("000002", Status.DECLINED, "05", "", 0)]
    assert records[0].masked_card == "424242******4242"
    assert records[0].day == DAY.date()
    with pytest.raises(dataclasses.FrozenInstanceError):
        records[0].status = Status.REVERSED  # type: ignore[misc]


def test_duplicate_authorization_records_nothing(ledger: Ledger) -> None:
    """The same terminal, STAN and field 7 again is a duplicate (94) and adds no record."""
    ledger.apply(_auth("000001"), code="00", approval_code="ABC123")
    again = ledger.apply(_auth("000001"), code="00", approval_code="XYZ789")
    assert again.code == "94" and again.duplicate
    assert len(ledger.authorizations()) == 1 and len(ledger.entries()) == 1


def test_capture_refund_and_advice_move_the_amounts(ledger: Ledger) -> None:
    """A partial capture, a refund and an advice leave captured, refunded and released
    amounts that add up, each step journalled once."""
    auth = _auth("000001")
    ledger.apply(auth, code="00", approval_code="ABC123")
    assert ledger.apply(_ref("0220", auth, "000002", 600, approval="ABC123")).code == "00"
    assert ledger.apply(_ref("0220", auth, "000003", 401, approval="ABC123")).code == "13"
    assert ledger.apply(_ref("0200", auth, "000004", 250, code="200000")).code == "00"
    assert ledger.apply(_ref("0420", auth, "000005", 1000)).code == "00"
    record = ledger.find_authorization("TERM0001", "000001")
    assert record is not None
    assert (record.status, record.captured, record.refunded, record.reversed, record.held) == (
        Status.REVERSED, 600, 250, 400, 0)
    kinds = [(e.kind, e.response_code, e.effect, e.changed) for e in ledger.entries()]
    assert kinds == [(EntryKind.AUTHORIZATION, "00", 1000, True),
                     (EntryKind.CAPTURE, "00", 600, True),
                     (EntryKind.CAPTURE, "13", 0, False),
                     (EntryKind.REFUND, "00", 250, True),
                     (EntryKind.REVERSAL, "00", 400, True)]
    assert [e.stan for e in ledger.entries(kind="capture")] == ["000002", "000003"]


def test_entries_filter_by_day(tmp_path: Path) -> None:
    """Entries carry the clock's UTC day, and the day filter selects them."""
    now = [datetime(2031, 5, 17, 23, 59, tzinfo=UTC)]
    with Ledger(tmp_path / "days.db", clock=lambda: now[0]) as ledger:
        ledger.apply(_auth("000001"), code="00", approval_code="ABC123")
        now[0] = datetime(2031, 5, 18, 0, 1, tzinfo=UTC)
        ledger.apply(_auth("000002"), code="00", approval_code="ABC124")
        assert [e.stan for e in ledger.entries(day=date(2031, 5, 17))] == ["000001"]
        assert [e.stan for e in ledger.entries(day=date(2031, 5, 18))] == ["000002"]
        assert [a.stan for a in ledger.authorizations(day=date(2031, 5, 18))] == ["000002"]
        assert ledger.entries(day=date(2031, 5, 19)) == []


def test_readers_in_other_threads_see_committed_changes(ledger: Ledger) -> None:
    """A reader in another thread, and another Ledger object on the same file, see every
    committed change while writes continue."""
    futures = [ledger.submit(_auth(f"{i:06d}"), code="00", approval_code="ABC123")
               for i in range(1, 201)]
    seen: list[int] = []

    def read() -> None:
        other = Ledger(ledger.path, create=False)
        for _ in range(20):
            seen.append(len(other.authorizations()))

    reader = threading.Thread(target=read)
    reader.start()
    for future in futures:
        assert future.result(timeout=10).code == "00"
    reader.join()
    assert seen == sorted(seen)
    assert len(Ledger(ledger.path, create=False).authorizations()) == 200


def test_closed_ledger_refuses_changes_but_still_reads(tmp_path: Path) -> None:
    """After close, a change raises LedgerClosedError and reads still work."""
    ledger = Ledger(tmp_path / "closed.db", clock=lambda: DAY)
    ledger.apply(_auth("000001"), code="00", approval_code="ABC123")
    ledger.close()
    with pytest.raises(LedgerClosedError):
        ledger.apply(_auth("000002"), code="00", approval_code="ABC123")
    assert len(ledger.authorizations()) == 1
    with pytest.raises(FileNotFoundError):
        Ledger(tmp_path / "missing.db", create=False)


def test_ledger_file_never_holds_a_full_pan(tmp_path: Path) -> None:
    """After every test card was authorized, captured and reversed, no file of the
    ledger contains any full test PAN."""
    path = tmp_path / "pan.db"
    with Ledger(path, clock=lambda: DAY) as ledger:
        for i, pan in enumerate(TEST_CARDS, start=1):
            auth = _auth(f"{i:06d}", pan)
            ledger.apply(auth, code="00", approval_code="ABC123")
            ledger.apply(_ref("0220", auth, f"{i + 100:06d}", 500, approval="ABC123"))
            ledger.apply(_ref("0420", auth, f"{i + 200:06d}", 1000))
        assert len(ledger.entries()) == 3 * len(TEST_CARDS)
        while_open = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    blob = while_open + b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"424242" in blob  # the BIN is there: the search would find a PAN
    for pan in TEST_CARDS:
        assert pan.encode() not in blob
        assert pan.encode("utf-16-le") not in blob


def test_a_file_that_is_not_a_ledger_is_refused(tmp_path: Path) -> None:
    """Opening a SQLite file with another schema, or without creating a missing one,
    fails instead of writing into it."""
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("PRAGMA user_version=7")
    conn.close()
    with pytest.raises(sqlite3.DatabaseError):
        Ledger(other)


def test_a_repeated_capture_is_a_duplicate_but_advices_never_are(ledger: Ledger) -> None:
    """The same 0220 twice captures once (the repeat is 94), while the same 0421 twice is
    acknowledged and journalled both times without a second release."""
    auth = _auth("000001")
    ledger.apply(auth, code="00", approval_code="ABC123")
    capture = _ref("0220", auth, "000002", 300, approval="ABC123")
    assert [ledger.apply(capture).code for _ in range(2)] == ["00", "94"]
    advice = _ref("0421", auth, "000003", 1000)
    outcomes = [ledger.apply(advice) for _ in range(2)]
    assert [(o.code, o.outcome, o.effect) for o in outcomes] == [
        ("00", "remainder-reversed", 700), ("00", "already-reversed", 0)]
    record = ledger.find_authorization("TERM0001", "000001")
    assert record is not None and (record.captured, record.reversed) == (300, 700)
    assert len(ledger.entries(kind=EntryKind.CAPTURE)) == 1
    assert len(ledger.reversals_of("TERM0001", "000001")) == 2


def test_a_repeat_in_the_same_group_commit_as_its_original_sees_it(tmp_path: Path) -> None:
    """A capture and its 0221 repeat committed in one transaction capture once (the repeat
    answers 00 as a repeat), and a 0221 before its 0220 in one transaction makes the
    0220 a duplicate."""
    ledger = Ledger(tmp_path / "batch.db", clock=lambda: DAY)
    auth = _auth("000001")
    ledger.apply(auth, code="00", approval_code="ABC123")
    first = _ref("0220", auth, "000002", 300, approval="ABC123")
    second = _ref("0220", auth, "000003", 200, approval="ABC123")

    async def main() -> list[tuple[str, str, int]]:
        futures = [ledger.submit(first), ledger.submit(dataclasses.replace(first, mti="0221")),
                   ledger.submit(dataclasses.replace(second, mti="0221")),
                   ledger.submit(second)]
        return [(o.code, o.outcome, o.effect)
                for o in [await asyncio.wrap_future(f) for f in futures]]

    assert asyncio.run(main()) == [("00", "captured", 300), ("00", "repeat", 0),
                                   ("00", "captured", 200), ("94", "duplicate", 0)]
    record = ledger.find_authorization("TERM0001", "000001")
    assert record is not None and record.captured == 500
    assert [(e.mti, e.changed) for e in ledger.entries(kind=EntryKind.CAPTURE)] == [
        ("0220", True), ("0221", False), ("0221", True)]
    ledger.close()


def test_a_mismatched_repeat_records_nothing(ledger: Ledger) -> None:
    """A 0401 with its 0400's STAN and field 7 but another amount is a format error (30)
    that is neither a duplicate nor journalled, and releases nothing."""
    auth = _auth("000001")
    ledger.apply(auth, code="00", approval_code="ABC123")
    void = _ref("0400", auth, "000002", 1000)
    assert ledger.apply(void).code == "00"
    wrong = ledger.apply(dataclasses.replace(void, mti="0401", amount=999))
    assert (wrong.code, wrong.outcome, wrong.entry_id, wrong.duplicate) == (
        "30", "repeat-mismatch", None, False)
    assert len(ledger.entries()) == 2
    record = ledger.find_authorization("TERM0001", "000001")
    assert record is not None and (record.status, record.reversed) == (Status.REVERSED, 1000)
