"""netsim's settlement files: the network's daily statement of what it accepted.

Owns the file format (specified in ``netsim/SETTLEMENT.md``): building a day's
:class:`Settlement` from the ledger, writing it (:func:`write_settlement`) and
reading it back with every check (:func:`parse_settlement`), which raises
:class:`SettlementError` when the file is malformed or its trailer does not add
up. A line-oriented text format: a header, one detail line per financial
transaction the network accepted that day, per-currency totals and a trailer.

Which entries make a detail line, and with which sign:

* approved authorization (0100, 39=00)           -> ``M`` (memo: a hold, no funds move)
* capture that captured (0220/0221, 39=00)       -> ``D`` (debit to the cardholder)
* refund that refunded (0200/0201 20xxxx, 39=00) -> ``C`` (credit to the cardholder)
* void / reversal advice that released a hold    -> ``M`` (memo)

A repeat (0221, 0201, 0401) processed in place of its lost original is settled
as that original would have been (under the repeat's MTI); a repeat answered
from its processed original changed nothing, so it never adds a second line.
Declined and rejected messages, duplicates, repeats of processed messages and
advices that changed nothing are in the ledger but not in the file. The amount of
a line is what the message did (its ledger ``effect``: authorized, captured,
refunded or released), in minor units.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Final

from netsim.ledger import Entry, Ledger
from netsim.rules import APPROVED, EntryKind

__all__ = [
    "MAX_DIGITS",
    "Detail",
    "Header",
    "Settlement",
    "SettlementError",
    "Totals",
    "Trailer",
    "build_settlement",
    "parse_settlement",
    "parse_settlement_text",
    "render_settlement",
    "write_settlement",
]

NETWORK = "NETSIM"
VERSION = 1
DEBIT, CREDIT, MEMO = "D", "C", "M"
_SIGNS = (DEBIT, CREDIT, MEMO)
_DETAIL_FIELDS = 15
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


class SettlementError(ValueError):
    """A settlement file is malformed or does not add up; ``line`` is its 1-based
    line number when one line is to blame."""

    def __init__(self, msg: str, line: int | None = None) -> None:
        super().__init__(msg if line is None else f"line {line}: {msg}")
        self.msg = msg
        self.line = line


@dataclass(frozen=True)
class Header:
    network: str
    version: int
    day: date
    created_at: datetime


@dataclass(frozen=True)
class Detail:
    """One transaction the network accepted."""

    seq: int
    day: date
    time: str                 # HHMMSS, UTC, when netsim processed it
    mti: str
    processing_code: str
    stan: str
    rrn: str
    approval_code: str
    amount: int               # minor units
    currency: str
    sign: str                 # D debit, C credit, M memo
    merchant: str
    terminal: str
    original_stan: str        # STAN of the authorization it refers to; empty for a 0100


@dataclass(frozen=True)
class Totals:
    """One currency's totals: counts and sums (minor units) per sign."""

    currency: str
    debit_count: int = 0
    debit_total: int = 0
    credit_count: int = 0
    credit_total: int = 0
    memo_count: int = 0
    memo_total: int = 0

    @property
    def net(self) -> int:
        """Debits minus credits."""
        return self.debit_total - self.credit_total


@dataclass(frozen=True)
class Trailer:
    count: int
    totals: Mapping[str, Totals]


@dataclass(frozen=True)
class Settlement:
    header: Header
    details: tuple[Detail, ...]
    trailer: Trailer


# ---------------------------------------------------------------- building and writing


def _sign(entry: Entry) -> str | None:
    if entry.response_code != APPROVED:
        return None
    if entry.kind is EntryKind.AUTHORIZATION:
        return MEMO
    if not entry.changed:
        return None
    return {EntryKind.CAPTURE: DEBIT, EntryKind.REFUND: CREDIT}.get(entry.kind, MEMO)


def totals_of(details: Iterable[Detail]) -> dict[str, Totals]:
    """Per-currency totals of ``details``, keyed and ordered by currency."""
    counts: dict[tuple[str, str], int] = {}
    sums: dict[tuple[str, str], int] = {}
    for d in details:
        key = (d.currency, d.sign)
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + d.amount
    out: dict[str, Totals] = {}
    for currency in sorted({c for c, _ in counts}):
        n = [counts.get((currency, sign), 0) for sign in _SIGNS]   # D, C, M
        t = [sums.get((currency, sign), 0) for sign in _SIGNS]
        out[currency] = Totals(currency, n[0], t[0], n[1], t[1], n[2], t[2])
    return out


def build_settlement(ledger: Ledger, day: date | str, *,
                     created_at: datetime | None = None) -> Settlement:
    """The settlement of ``day`` (UTC), from the ledger's entries of that day."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    details: list[Detail] = []
    for entry in ledger.entries(day=day):
        sign = _sign(entry)
        if sign is None:
            continue
        details.append(Detail(
            seq=len(details) + 1, day=day, time=entry.created_at.astimezone(UTC).strftime("%H%M%S"),
            mti=entry.mti, processing_code=entry.processing_code, stan=entry.stan, rrn=entry.rrn,
            approval_code=entry.approval_code, amount=entry.effect, currency=entry.currency,
            sign=sign, merchant=entry.merchant, terminal=entry.terminal,
            original_stan=entry.original_stan))
    created = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    totals = totals_of(details)
    return Settlement(Header(NETWORK, VERSION, day, created), tuple(details),
                      Trailer(len(details), MappingProxyType(totals)))


def render_settlement(settlement: Settlement) -> str:
    """The file's text (ends with a newline)."""
    h = settlement.header
    lines = [_join("H", h.network, str(h.version), h.day.isoformat(),
                   h.created_at.strftime(_TIME_FORMAT))]
    for d in settlement.details:
        lines.append(_join("D", str(d.seq), d.day.isoformat(), d.time, d.mti, d.processing_code,
                           d.stan, d.rrn, d.approval_code, f"{d.amount:012d}", d.currency,
                           d.sign, d.merchant, d.terminal, d.original_stan))
    for t in settlement.trailer.totals.values():
        lines.append(_join("S", t.currency, str(t.debit_count), str(t.debit_total),
                           str(t.credit_count), str(t.credit_total), str(t.memo_count),
                           str(t.memo_total)))
    lines.append(_join("T", str(settlement.trailer.count), str(len(settlement.trailer.totals))))
    return "\n".join(lines) + "\n"


def write_settlement(ledger: Ledger, day: date | str, path: str | os.PathLike[str]) -> Settlement:
    """Write the settlement file of ``day`` to ``path`` (atomically) and return it."""
    settlement = build_settlement(ledger, day)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii", newline="\n") as fh:
            fh.write(render_settlement(settlement))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return settlement


# ---------------------------------------------------------------- escaping

_ESCAPE_RE = re.compile("[%|\x00-\x1f\x7f]")
_UNESCAPE_RE = re.compile("%([0-9A-F]{2})")


def _join(*fields: str) -> str:
    return "|".join(_ESCAPE_RE.sub(lambda m: f"%{ord(m.group()):02X}", f) for f in fields)


def _split(line: str) -> list[str]:
    return [_UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), f) for f in line.split("|")]


# ---------------------------------------------------------------- parsing


def parse_settlement(path: str | os.PathLike[str]) -> Settlement:
    """Read and check a settlement file; SettlementError if it is malformed or its
    trailer (count, per-currency counts and totals) does not match its details."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except UnicodeDecodeError as exc:
        raise SettlementError("not an ASCII file") from exc
    return parse_settlement_text(text)


def parse_settlement_text(text: str) -> Settlement:
    """:func:`parse_settlement` on the file's text."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise SettlementError("empty file")
    header = _header(lines[0])
    details: list[Detail] = []
    totals: dict[str, Totals] = {}
    trailer: tuple[int, int] | None = None
    for number, line in enumerate(lines[1:], start=2):
        fields = _split(line)
        kind = fields[0]
        if trailer is not None:
            raise SettlementError("line after the trailer", number)
        if kind == "D":
            if totals:
                raise SettlementError("detail after the totals", number)
            details.append(_detail(fields, number, header.day, len(details) + 1))
        elif kind == "S":
            t = _totals(fields, number)
            if t.currency in totals or (totals and t.currency < list(totals)[-1]):
                raise SettlementError("currency totals repeated or out of order", number)
            totals[t.currency] = t
        elif kind == "T":
            trailer = _trailer(fields, number)
        else:
            raise SettlementError("unknown record type", number)
    if trailer is None:
        raise SettlementError("no trailer")
    count, currencies = trailer
    last = len(lines)
    if count != len(details):
        raise SettlementError(f"trailer count {count} != {len(details)} details", last)
    if currencies != len(totals):
        raise SettlementError(f"trailer names {currencies} currencies, file has {len(totals)}",
                              last)
    computed = totals_of(details)
    if computed != totals:
        bad = sorted(c for c in computed.keys() | totals.keys()
                     if computed.get(c) != totals.get(c))
        raise SettlementError(f"totals do not add up for currency {', '.join(bad)}")
    return Settlement(header, tuple(details), Trailer(count, MappingProxyType(totals)))


# The most digits an unpadded number (a sequence, count or total) may have: its value
# then fits in 64 bits, and no absurd field reaches int() (which refuses 4300 digits).
MAX_DIGITS: Final = 18


def _digits(value: str, width: int | None, what: str, line: int) -> str:
    if not value.isascii() or not value.isdigit() or (width is not None and len(value) != width):
        raise SettlementError(f"{what} must be {width or 'some'} digits", line)
    if width is None and len(value) > MAX_DIGITS:
        raise SettlementError(f"{what} must be at most {MAX_DIGITS} digits", line)
    return value


def _number(value: str, what: str, line: int) -> int:
    return int(_digits(value, None, what, line))


def _header(line: str) -> Header:
    fields = _split(line)
    if len(fields) != 5 or fields[0] != "H":
        raise SettlementError("the first line must be the header H|network|version|day|created",
                              1)
    if fields[1] != NETWORK or fields[2] != str(VERSION):
        raise SettlementError("unknown network or version", 1)
    try:
        day = date.fromisoformat(fields[3])
        created = datetime.strptime(fields[4], _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise SettlementError("bad day or creation time in the header", 1) from exc
    return Header(fields[1], VERSION, day, created)


def _detail(fields: list[str], line: int, day: date, seq: int) -> Detail:
    if len(fields) != _DETAIL_FIELDS:
        raise SettlementError(f"a detail has {_DETAIL_FIELDS} fields", line)
    (_, seq_s, day_s, time_s, mti, pc, stan, rrn, approval, amount, currency, sign,
     merchant, terminal, original) = fields
    if _number(seq_s, "sequence", line) != seq:
        raise SettlementError(f"sequence must be {seq}", line)
    if day_s != day.isoformat():
        raise SettlementError("detail date differs from the header's day", line)
    if original:
        _digits(original, 6, "original STAN", line)
    if sign not in _SIGNS:
        raise SettlementError("sign must be D, C or M", line)
    return Detail(seq=seq, day=day, time=_digits(time_s, 6, "time", line),
                  mti=_digits(mti, 4, "MTI", line),
                  processing_code=_digits(pc, 6, "processing code", line),
                  stan=_digits(stan, 6, "STAN", line), rrn=rrn, approval_code=approval,
                  amount=int(_digits(amount, 12, "amount", line)),
                  currency=_digits(currency, 3, "currency", line), sign=sign,
                  merchant=merchant, terminal=terminal, original_stan=original)


def _totals(fields: list[str], line: int) -> Totals:
    if len(fields) != 8:
        raise SettlementError("currency totals have 7 fields", line)
    currency = _digits(fields[1], 3, "currency", line)
    n = [_number(v, "count or total", line) for v in fields[2:]]
    return Totals(currency, n[0], n[1], n[2], n[3], n[4], n[5])


def _trailer(fields: list[str], line: int) -> tuple[int, int]:
    if len(fields) != 3:
        raise SettlementError("the trailer is T|count|currencies", line)
    return _number(fields[1], "count", line), _number(fields[2], "currencies", line)
