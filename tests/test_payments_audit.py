"""The events hash chain: the hash formula, and `verify` / `paygate audit verify` finding
the first edited, deleted, reordered or rehashed row in a real SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.payments.audit import (
    GENESIS,
    Anchor,
    AuditResult,
    canonical_json,
    chain_hash,
    load_json,
    verify,
    verify_sqlite,
)
from gateway.payments.model import CaptureMethod, Change, Event, IntentStatus, PaymentIntent
from gateway.payments.sqlite_store import SqlitePaymentStore
from gateway.payments.store import EventRow
from gateway.store.sqlite import SqliteDatabase

PAYGATE = str(Path(sys.executable).with_name("paygate"))
EVENTS = 10


def populate(path: Path, intents: int = EVENTS // 2) -> list[EventRow]:
    """A store with ``intents`` intents of two events each; returns the events."""
    db = SqliteDatabase(path)
    store = SqlitePaymentStore(db)

    async def fill() -> list[EventRow]:
        for n in range(intents):
            new = PaymentIntent(id=f"pi_{n:024d}", merchant_id="acme", amount=100 * (n + 1),
                                currency="eur", capture_method=CaptureMethod.MANUAL,
                                status=IntentStatus.REQUIRES_PAYMENT_METHOD, created=n,
                                updated=n)
            await store.commit(Change(new, None, events=(
                Event("payment_intent.created", "payment_intent", new.id,
                      {"amount": new.amount, "currency": "eur", "note": "café"}, n),
                Event("payment_intent.processing", "payment_intent", new.id, {}, n))))
        return await store.events_after(0)
    try:
        return asyncio.run(fill())
    finally:
        db.close()


def tamper(path: Path, *statements: str) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "paygate.db"
    populate(path)
    return path


def test_chain_hash_is_sha256_of_the_fields_joined_by_unit_separators() -> None:
    """The formula is DESIGN.md's: prev_hash first, then seq ... created, joined by 0x1f."""
    text = "\x1f".join([GENESIS, "7", "refund.created", "refund", "re_1", '{"a":1}', "99"])
    assert chain_hash(GENESIS, 7, "refund.created", "refund", "re_1", '{"a":1}', 99) == \
        hashlib.sha256(text.encode()).hexdigest()
    assert GENESIS == "0" * 64


def test_canonical_json_sorts_keys_without_spaces_or_escapes() -> None:
    """Canonical payloads have sorted keys, no whitespace, and UTF-8 kept as is."""
    assert canonical_json({"b": [1, 2], "a": {"d": "é", "c": None}}) == \
        '{"a":{"c":null,"d":"é"},"b":[1,2]}'


def test_an_intact_chain_verifies(tmp_path: Path) -> None:
    """A chain as the store wrote it is ok, from the file and from the rows, and reports
    the last seq and hash."""
    db_file = tmp_path / "paygate.db"
    rows = populate(db_file)
    result = verify_sqlite(db_file)
    assert result == AuditResult(True, EVENTS, None, "", EVENTS, rows[-1].hash)
    assert verify(rows) == result
    assert verify_sqlite(db_file, anchor=Anchor(EVENTS, rows[-1].hash)).ok


def test_an_empty_chain_verifies(tmp_path: Path) -> None:
    """A store with no events yet is ok with nothing checked."""
    path = tmp_path / "paygate.db"
    populate(path, intents=0)
    assert verify_sqlite(path) == AuditResult(True, 0)


def test_an_edited_payload_is_found_at_its_seq(db_file: Path) -> None:
    """Changing a payload's text breaks that row's own hash."""
    tamper(db_file, "UPDATE events SET payload = replace(payload, 'café', 'cafe') WHERE seq = 5")
    result = verify_sqlite(db_file)
    assert (result.ok, result.first_bad_seq, result.checked) == (False, 5, 4)
    assert "hash mismatch" in result.problem


def test_a_changed_amount_is_found_at_its_seq(db_file: Path) -> None:
    """Rewriting the amount inside an event's JSON is found at that row."""
    tamper(db_file, "UPDATE events SET payload = json_set(payload, '$.amount', 1) WHERE seq = 7")
    assert verify_sqlite(db_file).first_bad_seq == 7


def test_an_edited_created_time_is_found_at_its_seq(db_file: Path) -> None:
    """Every hashed column counts: moving a row's timestamp breaks it."""
    tamper(db_file, "UPDATE events SET created = created + 1 WHERE seq = 2")
    assert verify_sqlite(db_file).first_bad_seq == 2


def test_an_edited_row_with_a_recomputed_hash_is_found_at_the_next_row(db_file: Path) -> None:
    """Recomputing an edited row's own hash breaks the next row's prev_hash link."""
    conn = sqlite3.connect(db_file, isolation_level=None)
    seq, type_, agg_type, agg_id, payload, created, prev = conn.execute(
        "SELECT seq, type, aggregate_type, aggregate_id, payload, created, prev_hash "
        "FROM events WHERE seq = 5").fetchone()
    forged = payload.replace('"amount":300', '"amount":3')
    assert forged != payload
    conn.execute("UPDATE events SET payload = ?, hash = ? WHERE seq = 5",
                 (forged, chain_hash(prev, seq, type_, agg_type, agg_id, forged, created)))
    conn.close()
    result = verify_sqlite(db_file)
    assert result.first_bad_seq == 6 and "prev_hash" in result.problem


def test_a_deleted_middle_row_is_found_at_the_missing_seq(db_file: Path) -> None:
    """Deleting seq 5 leaves a gap reported at 5."""
    tamper(db_file, "DELETE FROM events WHERE seq = 5")
    result = verify_sqlite(db_file)
    assert (result.first_bad_seq, result.checked) == (5, 4) and "missing" in result.problem


def test_a_deleted_first_row_is_found_at_seq_1(db_file: Path) -> None:
    """Deleting the first row is reported at seq 1."""
    tamper(db_file, "DELETE FROM events WHERE seq = 1")
    assert verify_sqlite(db_file).first_bad_seq == 1


def test_a_deleted_and_renumbered_row_is_found_at_its_seq(db_file: Path) -> None:
    """Deleting seq 5 and shifting the later rows down leaves seq 5 with the wrong link."""
    tamper(db_file, "DELETE FROM events WHERE seq = 5",
           "UPDATE events SET seq = -seq WHERE seq > 5",
           "UPDATE events SET seq = -seq - 1 WHERE seq < 0")
    assert [r[0] for r in sqlite3.connect(db_file).execute("SELECT seq FROM events")] == \
        list(range(1, EVENTS))
    assert verify_sqlite(db_file).first_bad_seq == 5


def test_two_swapped_rows_are_found_at_the_first(db_file: Path) -> None:
    """Swapping the seq of rows 3 and 4 is reported at 3."""
    tamper(db_file, "UPDATE events SET seq = -1 WHERE seq = 3",
           "UPDATE events SET seq = 3 WHERE seq = 4",
           "UPDATE events SET seq = 4 WHERE seq = -1")
    assert verify_sqlite(db_file).first_bad_seq == 3


def test_an_appended_forged_row_is_found(db_file: Path) -> None:
    """A row inserted at the end without the right hash is found at its seq."""
    tamper(db_file, "INSERT INTO events SELECT seq + 1, type, aggregate_type, aggregate_id, "
                    f"payload, created, hash, hash FROM events WHERE seq = {EVENTS}")
    assert verify_sqlite(db_file).first_bad_seq == EVENTS + 1


def test_a_truncated_tail_needs_the_saved_anchor(db_file: Path) -> None:
    """Deleting the last rows leaves a chain valid by itself; the anchor saved before
    catches it, reported at the first missing seq."""
    anchor = Anchor(EVENTS, verify_sqlite(db_file).last_hash)
    tamper(db_file, f"DELETE FROM events WHERE seq > {EVENTS - 3}")
    assert verify_sqlite(db_file).ok
    result = verify_sqlite(db_file, anchor=anchor)
    assert (result.ok, result.first_bad_seq) == (False, EVENTS - 2)
    assert "truncated" in result.problem


def test_an_anchor_with_another_hash_is_a_rewrite(db_file: Path) -> None:
    """A chain that reaches the anchor's seq with a different hash was rewritten."""
    result = verify_sqlite(db_file, anchor=Anchor(6, "f" * 64))
    assert (result.ok, result.first_bad_seq) == (False, 6)


def test_verify_of_rows_finds_an_edited_payload_dict() -> None:
    """`verify` on EventRow values re-canonicalizes the payload, so an edit shows."""
    rows = [EventRow(1, "t", "a", "id", {"amount": 1}, 5, GENESIS, "")]
    rows[0] = replace(rows[0], hash=chain_hash(GENESIS, 1, "t", "a", "id", '{"amount":1}', 5))
    assert verify(rows).ok
    assert verify([replace(rows[0], payload={"amount": 2})]).first_bad_seq == 1


def test_an_anchor_is_parsed_from_seq_colon_hash() -> None:
    """`SEQ:HASH` parses; anything else is refused."""
    assert Anchor.parse(f"12:{'AB' * 32}") == Anchor(12, "ab" * 32)
    with pytest.raises(ValueError, match="SEQ:HASH"):
        Anchor.parse("12")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PAYGATE, "audit", "verify", *args], capture_output=True, text=True,
                          timeout=60, check=False)


def test_cli_reports_an_intact_chain_and_exits_0(db_file: Path) -> None:
    """`paygate audit verify --db FILE` prints the count and last hash and exits 0."""
    last = verify_sqlite(db_file).last_hash
    proc = _cli("--db", str(db_file))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"ok: {EVENTS} events, chain intact, last hash {last}")
    proc = _cli("--data-dir", str(db_file.parent), "--anchor", f"{EVENTS}:{last}")
    assert proc.returncode == 0, proc.stderr


def test_cli_reads_a_store_that_is_open(tmp_path: Path) -> None:
    """The check runs read-only beside a running store (WAL) and sees its commits."""
    path = tmp_path / "paygate.db"
    populate(path)
    db = SqliteDatabase(path)
    try:
        SqlitePaymentStore(db)
        proc = _cli("--db", str(path))
        assert proc.returncode == 0 and proc.stdout.startswith(f"ok: {EVENTS} events")
    finally:
        db.close()


def test_cli_reports_a_broken_chain_and_exits_1(db_file: Path) -> None:
    """A deleted row makes the command print the first bad seq and exit 1."""
    tamper(db_file, "DELETE FROM events WHERE seq = 6")
    proc = _cli("--db", str(db_file))
    assert proc.returncode == 1
    assert proc.stdout.startswith("BROKEN at seq 6: row missing")


def test_cli_without_a_database_exits_2(tmp_path: Path) -> None:
    """No database file (or one with no events table) is a usage error, exit 2."""
    proc = _cli("--data-dir", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no database at" in proc.stderr
    assert not (tmp_path / "nowhere").exists()
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    proc = _cli("--db", str(other))
    assert proc.returncode == 2 and "no events table" in proc.stderr
    proc = _cli("--db", str(other), "--anchor", "nonsense")
    assert proc.returncode == 2 and "SEQ:HASH" in proc.stderr


_TEXT = st.text(st.characters(codec="utf-8"))   # no lone surrogates
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20)


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=6))
def test_canonical_json_is_byte_for_byte_the_json_modules_sorted_compact_output(
        payload: dict[str, object]) -> None:
    """The fast serializer writes exactly what ``json.dumps(sort_keys, compact,
    ensure_ascii=False)`` writes, so chains written before and after it verify alike."""
    import json
    assert canonical_json(payload) == json.dumps(payload, sort_keys=True, separators=(",", ":"),
                                                 ensure_ascii=False)


def test_canonical_json_falls_back_for_what_orjson_refuses() -> None:
    """An integer beyond 64 bits is still written (by ``json``), not refused."""
    assert canonical_json({"n": 2**70, "a": 1}) == '{"a":1,"n":1180591620717411303424}'


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_TEXT, _JSON, max_size=6))
def test_load_json_reads_back_exactly_what_canonical_json_wrote(
        payload: dict[str, object]) -> None:
    """What the store writes reads back as the very same values ``json.loads`` gives."""
    import json
    text = canonical_json(payload)
    assert load_json(text) == json.loads(text) == payload


def test_load_json_falls_back_for_what_orjson_refuses() -> None:
    """An integer beyond 64 bits reads back as written; malformed text still raises."""
    assert load_json('{"a":1,"n":1180591620717411303424}') == {"a": 1, "n": 2**70}
    with pytest.raises(ValueError):
        load_json('{"a":')
