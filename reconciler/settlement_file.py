"""Reading the network's settlement file fast: :class:`SettlementReader` streams a file
in the format of ``netsim/SETTLEMENT.md`` with every check of
:func:`netsim.parse_settlement` (same messages, :class:`netsim.SettlementError`), in
one pass, yielding each detail as a :class:`NetLine` and keeping none of them.

netsim's own parser splits and unescapes every field of every line; here one
compiled pattern recognises a well-formed detail without escapes in one call (the
common case), and only the other lines take the field-by-field path (which unescapes
``%XX`` and names the first check that fails).

For a big file the checks and the use of the lines can run side by side:
:class:`BackgroundCheck` runs every check in a forked process while this one takes
the details as plain field lists (:meth:`SettlementReader.fields`: split and
unescaped, *not* checked); nothing may be written before :meth:`BackgroundCheck.result`
says the file is whole. The file has no card data.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, NamedTuple

from netsim.settlement import MAX_DIGITS, Detail, SettlementError, Totals

__all__ = ["BackgroundCheck", "Header", "NetLine", "SettlementError", "SettlementReader",
           "check_settlement", "read_settlement"]


class NetLine(NamedTuple):
    """One detail line of the file (its day is the file's)."""

    seq: int
    time: str                 # HHMMSS, UTC, when the network processed it
    mti: str
    processing_code: str
    stan: str
    rrn: str
    approval_code: str        # of the authorization it belongs to
    amount: int               # minor units: what the message did
    currency: str             # ISO 4217 numeric
    sign: str                 # D, C or M
    merchant: str
    terminal: str
    original_stan: str        # empty for a 0100

    @classmethod
    def from_detail(cls, d: Detail) -> NetLine:
        """The line of a detail parsed by :func:`netsim.parse_settlement`."""
        return cls(d.seq, d.time, d.mti, d.processing_code, d.stan, d.rrn, d.approval_code,
                   d.amount, d.currency, d.sign, d.merchant, d.terminal, d.original_stan)

    @classmethod
    def from_fields(cls, f: Sequence[str]) -> NetLine:
        """The line of a detail's 15 fields (as :meth:`SettlementReader.fields` gives)."""
        return cls(int(f[1]), f[3], f[4], f[5], f[6], f[7], f[8], int(f[9]), f[10], f[11],
                   f[12], f[13], f[14])

    def fields(self) -> list[str]:
        """The line as a detail's 15 fields (its date left empty)."""
        return ["D", str(self.seq), "", self.time, self.mti, self.processing_code, self.stan,
                self.rrn, self.approval_code, f"{self.amount:012d}", self.currency, self.sign,
                self.merchant, self.terminal, self.original_stan]


@dataclass(frozen=True)
class Header:
    network: str
    version: int
    day: date
    created_at: datetime


_TIME_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"
_UNESCAPE_RE: Final = re.compile("%([0-9A-F]{2})")
_SIGNS: Final = ("D", "C", "M")


def _unescape(value: str) -> str:
    if "%" not in value:
        return value
    return _UNESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)


def _split(line: str) -> list[str]:
    fields = line.split("|")
    return [_unescape(f) for f in fields] if "%" in line else fields


def _is_detail(line: str) -> bool:
    return line.startswith("D|") or _unescape(line.split("|", 1)[0]) == "D"


def _digits(value: str, width: int | None, what: str, line: int) -> str:
    if not value.isascii() or not value.isdigit() or (width is not None and len(value) != width):
        raise SettlementError(f"{what} must be {width or 'some'} digits", line)
    if width is None and len(value) > MAX_DIGITS:
        raise SettlementError(f"{what} must be at most {MAX_DIGITS} digits", line)
    return value


class SettlementReader:
    """Streams a settlement file (format: ``netsim/SETTLEMENT.md``) with the checks of
    :func:`netsim.parse_settlement`, in one pass and without keeping the lines.

    The header is read on opening; iterating yields the details as :class:`NetLine`
    and, once they are exhausted, checks the ``S`` lines and the trailer (raising
    :class:`SettlementError`, as for a malformed line): a caller has seen a whole,
    consistent file only when the iteration ended without an error.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, encoding="ascii", newline="\n")  # noqa: SIM115
        try:
            first = self._readline()
            if not first:
                raise SettlementError("empty file")
            self.header = self._header(first)
        except BaseException:
            self._fh.close()
            raise
        self.count = 0
        self.totals: dict[str, Totals] = {}
        self._iterated = False

    def __enter__(self) -> SettlementReader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self._fh.close()

    def _readline(self) -> str:
        try:
            return self._fh.readline()
        except UnicodeDecodeError as exc:
            raise SettlementError("not an ASCII file") from exc

    @staticmethod
    def _header(raw: str) -> Header:
        fields = _split(raw.removesuffix("\n"))
        if len(fields) != 5 or fields[0] != "H":
            raise SettlementError(
                "the first line must be the header H|network|version|day|created", 1)
        if fields[1] != "NETSIM" or fields[2] != "1":
            raise SettlementError("unknown network or version", 1)
        try:
            day = date.fromisoformat(fields[3])
            created = datetime.strptime(fields[4], _TIME_FORMAT).replace(tzinfo=UTC)
        except ValueError as exc:
            raise SettlementError("bad day or creation time in the header", 1) from exc
        return Header(fields[1], 1, day, created)

    def fields(self) -> Iterator[list[str]]:
        """The details as lists of 15 fields, split and unescaped but **not checked** (a
        line may have any number of fields): pair with :class:`BackgroundCheck`. Stops at
        the first line that is not a detail."""
        self._start()
        try:
            for raw in self._fh:
                if not raw.startswith("D|") and not _is_detail(raw):
                    return
                line = raw[:-1] if raw.endswith("\n") else raw
                yield _split(line) if "%" in line else line.split("|")
        except UnicodeDecodeError as exc:
            raise SettlementError("not an ASCII file") from exc

    def _start(self) -> None:
        if self._iterated:
            raise RuntimeError("a SettlementReader is iterated once")
        self._iterated = True

    def __iter__(self) -> Iterator[NetLine]:
        self._start()
        try:
            yield from self._details()
        except UnicodeDecodeError as exc:
            raise SettlementError("not an ASCII file") from exc

    def _details(self) -> Iterator[NetLine]:
        day_s = self.header.day.isoformat()
        fast = re.compile(
            rf"D\|([0-9]{{1,{MAX_DIGITS}}})\|" + re.escape(day_s)
            + r"\|([0-9]{6})\|([0-9]{4})\|([0-9]{6})\|"
            r"([0-9]{6})\|([^|\n%]*)\|([^|\n%]*)\|([0-9]{12})\|([0-9]{3})\|([DCM])\|"
            r"([^|\n%]*)\|([^|\n%]*)\|((?:[0-9]{6})?)\n").fullmatch
        sums: dict[tuple[str, str], int] = {}
        counts: dict[tuple[str, str], int] = {}
        make, cls = tuple.__new__, NetLine
        seq = 0
        number = 1
        rest = None
        for raw in self._fh:
            number += 1
            m = fast(raw)
            if m is not None:
                g = m.groups()
                seq += 1
                if int(g[0]) != seq:
                    raise SettlementError(f"sequence must be {seq}", number)
                amount, currency, sign = int(g[7]), g[8], g[9]
                line = make(cls, (seq, g[1], g[2], g[3], g[4], g[5], g[6], amount, currency,
                                  sign, g[10], g[11], g[12]))
            elif _unescape(raw.removesuffix("\n").split("|", 1)[0]) == "D":
                seq += 1
                line = self._detail(raw, number, day_s, seq)
                amount, currency, sign = line.amount, line.currency, line.sign
            else:
                rest = raw
                break
            key = (currency, sign)
            sums[key] = sums.get(key, 0) + amount
            counts[key] = counts.get(key, 0) + 1
            yield line
        self.count = seq
        self._finish(rest, number, counts, sums)

    @staticmethod
    def _detail(raw: str, number: int, day_s: str, seq: int) -> NetLine:
        """The slow path of a detail line: escapes, or an error to report."""
        fields = _split(raw.removesuffix("\n"))
        if len(fields) != 15:
            raise SettlementError("a detail has 15 fields", number)
        (_, seq_s, line_day, time_s, mti, pc, stan, rrn, approval, amount, currency, sign,
         merchant, terminal, original) = fields
        if int(_digits(seq_s, None, "sequence", number)) != seq:
            raise SettlementError(f"sequence must be {seq}", number)
        if line_day != day_s:
            raise SettlementError("detail date differs from the header's day", number)
        if original:
            _digits(original, 6, "original STAN", number)
        if sign not in _SIGNS:
            raise SettlementError("sign must be D, C or M", number)
        return NetLine(seq, _digits(time_s, 6, "time", number), _digits(mti, 4, "MTI", number),
                       _digits(pc, 6, "processing code", number),
                       _digits(stan, 6, "STAN", number), rrn, approval,
                       int(_digits(amount, 12, "amount", number)),
                       _digits(currency, 3, "currency", number), sign, merchant, terminal,
                       original)

    def _finish(self, rest: str | None, number: int, counts: dict[tuple[str, str], int],
                sums: dict[tuple[str, str], int]) -> None:
        """The ``S`` lines and the trailer, from ``rest`` (line ``number``) on."""
        totals: dict[str, Totals] = {}
        trailer: tuple[int, int] | None = None
        raw = rest
        while raw:
            fields = _split(raw.removesuffix("\n"))
            if trailer is not None:
                raise SettlementError("line after the trailer", number)
            kind = fields[0]
            if kind == "D":
                raise SettlementError("detail after the totals", number)
            if kind == "S":
                if len(fields) != 8:
                    raise SettlementError("currency totals have 7 fields", number)
                currency = _digits(fields[1], 3, "currency", number)
                n = [int(_digits(v, None, "count or total", number)) for v in fields[2:]]
                if currency in totals or (totals and currency < list(totals)[-1]):
                    raise SettlementError("currency totals repeated or out of order", number)
                totals[currency] = Totals(currency, *n)
            elif kind == "T":
                if len(fields) != 3:
                    raise SettlementError("the trailer is T|count|currencies", number)
                trailer = (int(_digits(fields[1], None, "count", number)),
                           int(_digits(fields[2], None, "currencies", number)))
            else:
                raise SettlementError("unknown record type", number)
            raw = self._readline()
            if raw:
                number += 1
        last = number
        if trailer is None:
            raise SettlementError("no trailer")
        count, currencies = trailer
        if count != self.count:
            raise SettlementError(f"trailer count {count} != {self.count} details", last)
        if currencies != len(totals):
            raise SettlementError(
                f"trailer names {currencies} currencies, file has {len(totals)}", last)
        computed: dict[str, Totals] = {}
        for currency in sorted({c for c, _ in counts}):
            n = [counts.get((currency, s), 0) for s in _SIGNS]
            t = [sums.get((currency, s), 0) for s in _SIGNS]
            computed[currency] = Totals(currency, n[0], t[0], n[1], t[1], n[2], t[2])
        if computed != totals:
            bad = sorted(c for c in computed.keys() | totals.keys()
                         if computed.get(c) != totals.get(c))
            raise SettlementError(f"totals do not add up for currency {', '.join(bad)}")
        self.totals = totals


def read_settlement(path: str | Path) -> tuple[Header, list[NetLine], dict[str, Totals]]:
    """The whole file at once (for tests and small files): header, lines, totals."""
    with SettlementReader(path) as reader:
        lines = list(reader)
        return reader.header, lines, reader.totals


def check_settlement(path: str | Path) -> tuple[int, dict[str, Totals]]:
    """Every check of the file at ``path``: its number of details and its totals, or
    :class:`SettlementError`."""
    with SettlementReader(path) as reader:
        for _ in reader:
            pass
        return reader.count, reader.totals


def _check_child(path: str, conn: Any) -> None:  # pragma: no cover - runs in the child
    try:
        conn.send(("ok", *check_settlement(path)))
    except SettlementError as exc:
        conn.send(("bad", str(exc)))
    except OSError as exc:
        conn.send(("unreadable", exc.strerror or str(exc)))
    except Exception as exc:  # reported to the parent, which decides
        conn.send(("failed", repr(exc)))
    finally:
        conn.close()


class BackgroundCheck:
    """:func:`check_settlement` in a forked process (on the other core), started at once;
    :meth:`result` waits for it. Where ``fork`` is not available the check runs in
    :meth:`result` itself."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._process: Any = None
        if "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            self._conn, child = ctx.Pipe(duplex=False)
            self._process = ctx.Process(target=_check_child, args=(str(self.path), child),
                                        name="settlement-check", daemon=True)
            self._process.start()
            child.close()

    def result(self) -> tuple[int, dict[str, Totals]]:
        """The number of details and the totals; :class:`SettlementError` if the file is
        malformed, :class:`OSError` if it cannot be read, :class:`RuntimeError` (saying
        why) if the check itself failed."""
        if self._process is None:
            return check_settlement(self.path)
        try:
            verdict = self._conn.recv()
        except EOFError:
            verdict = ("failed", "the checking process died")
        finally:
            self._conn.close()
            self._process.join()
        if verdict[0] == "ok":
            return verdict[1], verdict[2]
        if verdict[0] == "bad":
            raise SettlementError(verdict[1])
        if verdict[0] == "unreadable":
            raise OSError(verdict[1])
        raise RuntimeError(verdict[1])

    def cancel(self) -> None:
        """Stop the check (the caller gave up)."""
        if self._process is not None and self._process.is_alive():
            self._process.terminate()
            self._process.join()
