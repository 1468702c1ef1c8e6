"""netsim's ledger group commit in an event loop, and the server's bursts: changes
recorded in one loop iteration share a transaction, are reported only once a reader
elsewhere sees them, fail alone, and keep their order; frames read together are all
handled, in bursts, up to a bad length header."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from conftest import Pki
from netsim_client import auth, connect, run, serving
from test_netsim_ledger import _auth, _ref

import codec
from codec import dialect
from netsim import Ledger, Outcome, Request

DAY = datetime(2031, 5, 17, 12, 0, tzinfo=UTC)


def _count(path: Path, table: str) -> int:
    """Rows of ``table`` as a reader on a connection of its own sees them."""
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    finally:
        conn.close()


def test_a_loop_iteration_is_one_transaction_reported_after_commit(tmp_path: Path) -> None:
    """Authorizations, a duplicate and a capture of one of them, all recorded in one loop
    iteration, are decided in order; each is reported only when a reader on another
    connection already sees every change of the batch."""
    path = tmp_path / "ledger.db"
    first, second = _auth("000001"), _auth("000002")
    changes = [(first, "00", "ABC123"), (second, "05", ""), (second, "00", "XYZ789"),
               (_ref("0220", first, "000003", 400, approval="ABC123"), None, "")]
    seen: list[tuple[str, str, int, int]] = []

    async def main() -> None:
        ledger = Ledger(path, clock=lambda: DAY)

        def done(result: Outcome | Exception) -> None:
            assert isinstance(result, Outcome)
            seen.append((result.code, result.outcome, _count(path, "authorizations"),
                         _count(path, "entries")))

        for request, code, approval in changes:
            ledger.record(request, done, code=code, approval_code=approval)
        assert seen == []  # nothing before the commit
        await asyncio.sleep(0)
        assert len(seen) == 4
        ledger.close()

    run(main())
    assert seen == [("00", "approved", 2, 3), ("05", "declined", 2, 3),
                    ("94", "duplicate", 2, 3), ("00", "captured", 2, 3)]
    entries = Ledger(path, create=False).entries()
    assert [e.id for e in entries] == [1, 2, 3]
    assert [(e.stan, e.authorization_id) for e in entries] == [
        ("000001", 1), ("000002", 2), ("000003", 1)]


def test_a_failing_change_fails_alone(tmp_path: Path) -> None:
    """A change the database refuses (a negative amount) fails with its error while the
    changes batched with it are committed."""
    results: list[Outcome | Exception] = []

    async def main() -> None:
        with Ledger(tmp_path / "ledger.db", clock=lambda: DAY) as ledger:
            bad = dataclasses.replace(_auth("000002"), amount=-1)
            for request in (_auth("000001"), bad, _auth("000003")):
                ledger.record(request, results.append, code="00", approval_code="ABC123")
            await asyncio.sleep(0)
            assert [a.stan for a in ledger.authorizations()] == ["000001", "000003"]
            assert [a.id for a in ledger.authorizations()] == [1, 2]

    run(main())
    assert isinstance(results[1], sqlite3.IntegrityError)
    assert [r.code for r in results if isinstance(r, Outcome)] == ["00", "00"]


def test_apply_and_close_in_the_loop_commit_what_is_queued_first(tmp_path: Path) -> None:
    """apply() in the event loop commits the changes queued before it (in order), and
    close() commits those still queued."""
    path = tmp_path / "ledger.db"
    results: list[Outcome | Exception] = []

    async def main() -> None:
        ledger = Ledger(path, clock=lambda: DAY)
        ledger.record(_auth("000001"), results.append, code="00", approval_code="ABC123")
        assert ledger.apply(_auth("000002"), code="00", approval_code="ABC124").code == "00"
        assert len(results) == 1
        ledger.record(_auth("000003"), results.append, code="00", approval_code="ABC125")
        ledger.close()
        assert len(results) == 2

    run(main())
    assert [a.stan for a in Ledger(path, create=False).authorizations()] == [
        "000001", "000002", "000003"]


def test_request_from_doc_sets_every_field() -> None:
    """The parsed request equals one built field by field, and has no other attribute."""
    doc = auth()
    request = Request.from_doc(doc)
    built = Request(mti="0100", processing_code=doc["3"], stan=doc["11"], transmitted=doc["7"],
                    rrn=doc["37"], terminal=doc["41"], merchant=doc["42"], acquirer=doc["32"],
                    amount=int(doc["4"]), currency=doc["49"], expiry=doc["14"], pan=doc["2"])
    assert request == built
    assert vars(request).keys() == {f.name for f in dataclasses.fields(Request)}


def test_frames_read_together_are_all_handled_up_to_a_bad_header(pki: Pki,
                                                                 tmp_path: Path) -> None:
    """Seventy authorizations in one write (more than a burst) are all answered; those
    sent in front of a bad length header are recorded before the connection closes."""

    async def main() -> None:
        async with serving(pki, tmp_path) as sim:
            client = await connect(sim.port, pki)
            docs = [auth() for _ in range(70)]
            await client.send_raw(b"".join(
                codec.framing.frame(codec.encode(d, dialect.SPEC)) for d in docs))
            replies = [await client.receive() for _ in docs]
            assert sorted(r["11"] for r in replies if r is not None) == sorted(
                d["11"] for d in docs)
            before = [auth() for _ in range(3)]
            await client.send_raw(b"".join(
                codec.framing.frame(codec.encode(d, dialect.SPEC)) for d in before)
                + b"\x00\x00")
            assert await client.closed_by_peer()
            await client.close()
            await asyncio.sleep(0.05)
            assert len(sim.ledger.authorizations()) == 73

    run(main())
