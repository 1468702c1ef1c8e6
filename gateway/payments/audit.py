"""The events hash chain: how a row's hash is made, and how a chain is checked.

Every event row carries ``prev_hash`` (the hash of the row before it; 64 zeros
for the first row) and ``hash``::

    hash = sha256(prev_hash ‖ seq ‖ type ‖ aggregate_type ‖ aggregate_id ‖ payload ‖ created)

hex-encoded, with ``\\x1f`` (unit separator) between the fields, UTF-8, and the
payload as canonical JSON (sorted keys, no spaces, no ASCII escaping).

:func:`verify` walks rows in ``seq`` order and reports the first position at
which the chain is wrong:

* an edited row: its stored hash no longer matches its fields;
* an edited row whose hash was recomputed: the next row's ``prev_hash`` no
  longer matches;
* a deleted row: a gap in ``seq`` (or, if the rest was renumbered, a
  ``prev_hash`` that does not match); a deleted first row shows as seq 1 missing;
* reordered or inserted rows: hashes are bound to their ``seq`` and to the row
  before, so a moved row fails at its new position.

What the chain alone cannot see is a **truncated tail**: deleting the last rows
(or rewriting the chain from some row to the end, recomputing every hash)
leaves a chain that is valid by itself. For that, an operator keeps an anchor
outside the database — the ``(seq, hash)`` of the last row seen, e.g. from a
previous ``paygate audit verify`` — and passes it as ``anchor``: the chain must
reach that ``seq`` and have that hash there.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import orjson

GENESIS: Final = "0" * 64
_SEP: Final = "\x1f"


def canonical_json(payload: Mapping[str, object]) -> str:
    """The payload as the chain hashes it: sorted keys, no spaces, UTF-8 as is.

    orjson writes it (a tenth of the time of ``json``, on every commit's events and
    request documents) and its output is byte for byte that of
    ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)`` for
    what the store holds (str keys, str, int, bool, None, lists, dicts; a property
    test holds the two to it). Whatever orjson refuses (an int beyond 64 bits, a
    non-str key) goes to ``json``, as does everything before this module used it.
    """
    try:
        return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS).decode()
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False)


def load_json(text: str) -> Any:
    """Parse JSON the store wrote (``canonical_json``): orjson, or ``json`` for what
    orjson refuses (an int beyond 64 bits); both give the same values."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


def chain_hash(prev_hash: str, seq: int, type: str, aggregate_type: str,
               aggregate_id: str, payload_json: str, created: int) -> str:
    """The hex SHA-256 of one row's fields joined by ``\\x1f``, ``prev_hash`` first."""
    text = _SEP.join((prev_hash, str(seq), type, aggregate_type, aggregate_id, payload_json,
                      str(created)))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ChainRow(Protocol):
    """What :func:`verify` reads from a row (``gateway.payments.store.EventRow`` fits)."""

    @property
    def seq(self) -> int: ...
    @property
    def type(self) -> str: ...
    @property
    def aggregate_type(self) -> str: ...
    @property
    def aggregate_id(self) -> str: ...
    @property
    def payload(self) -> Mapping[str, object]: ...
    @property
    def created(self) -> int: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


@dataclass(frozen=True)
class Anchor:
    """A ``(seq, hash)`` saved outside the database: the chain must reach it unchanged."""

    seq: int
    hash: str

    @classmethod
    def parse(cls, text: str) -> Anchor:
        """``SEQ:HASH``: the last seq and hash ``paygate audit verify`` printed."""
        seq, sep, digest = text.partition(":")
        if not sep or not seq.isdigit() or len(digest) != 64:
            raise ValueError(f"an anchor is SEQ:HASH (64 hex digits), not {text!r}")
        return cls(int(seq), digest.lower())


@dataclass(frozen=True)
class AuditResult:
    """The outcome of a walk: ``ok``, rows that passed, and where and why it broke."""

    ok: bool
    checked: int
    first_bad_seq: int | None = None
    problem: str = ""
    last_seq: int = 0
    last_hash: str = GENESIS


# (seq, type, aggregate_type, aggregate_id, payload_json, created, prev_hash, hash)
_Raw = tuple[int, str, str, str, str, int, str, str]


def verify(rows: Iterable[ChainRow], *, anchor: Anchor | None = None) -> AuditResult:
    """Walk ``rows`` (in ``seq`` order) and report the first broken position."""
    return _walk(((r.seq, r.type, r.aggregate_type, r.aggregate_id, canonical_json(r.payload),
                   r.created, r.prev_hash, r.hash) for r in rows), anchor)


def verify_sqlite(path: Path, *, anchor: Anchor | None = None) -> AuditResult:
    """Verify the ``events`` table of the SQLite file at ``path``, opened read-only.

    Rows are streamed in ``seq`` order and hashed over the payload text exactly as
    stored. Raises :class:`FileNotFoundError` if there is no such file and
    :class:`LookupError` if it has no ``events`` table.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' "
                             "AND name = 'events'").fetchone()
        if found is None:
            raise LookupError(f"{path} has no events table (not a paygate payments database?)")
        cursor = conn.execute("SELECT seq, type, aggregate_type, aggregate_id, payload, created, "
                              "prev_hash, hash FROM events ORDER BY seq")
        return _walk(_typed(cursor), anchor)
    finally:
        conn.close()


def _typed(cursor: sqlite3.Cursor) -> Iterator[_Raw]:
    for seq, type_, agg_type, agg_id, payload, created, prev_hash, digest in cursor:
        yield (int(seq), str(type_), str(agg_type), str(agg_id), str(payload), int(created),
               str(prev_hash), str(digest))


def _walk(rows: Iterable[_Raw], anchor: Anchor | None) -> AuditResult:
    prev_seq, prev_hash, checked = 0, GENESIS, 0

    def broken(seq: int, problem: str) -> AuditResult:
        return AuditResult(False, checked, seq, problem, prev_seq, prev_hash)

    for seq, type_, agg_type, agg_id, payload, created, stored_prev, stored in rows:
        expected_seq = prev_seq + 1
        if seq != expected_seq:
            if seq > expected_seq:
                missing = (f"seq {expected_seq}" if seq == expected_seq + 1
                           else f"seqs {expected_seq}..{seq - 1}")
                return broken(expected_seq, f"row missing ({missing} deleted; "
                                            f"found seq {seq} next)")
            return broken(seq, f"seq out of order (seq {seq} after seq {prev_seq})")
        if stored_prev != prev_hash:
            what = "the genesis hash" if seq == 1 else f"the hash of seq {prev_seq}"
            return broken(seq, f"prev_hash does not match {what} "
                               "(a row before it was deleted, inserted, moved or rehashed)")
        if chain_hash(stored_prev, seq, type_, agg_type, agg_id, payload, created) != stored:
            return broken(seq, "hash mismatch (the row was edited)")
        if anchor is not None and seq == anchor.seq and stored != anchor.hash:
            return broken(seq, "hash differs from the saved anchor "
                               "(the chain was rewritten at or before this seq)")
        prev_seq, prev_hash = seq, stored
        checked += 1
    if anchor is not None and prev_seq < anchor.seq:
        return broken(prev_seq + 1, f"chain ends at seq {prev_seq} but the saved anchor is at "
                                    f"seq {anchor.seq} (the tail was truncated)")
    return AuditResult(True, checked, None, "", prev_seq, prev_hash)
