"""Settlement matching: the network's daily file against our attempts. Pure: no I/O
(the file is read by :mod:`reconciler.settlement_file`, our attempts are loaded by
:mod:`reconciler.cli`).

Inputs are the file's detail lines (:class:`NetLine`, or their fields as
:meth:`SettlementReader.fields` gives them, or converted from :class:`netsim.Detail`) and our
attempts of the day (:class:`OurLine`, one per attempt, any kind and status;
``reconciler.cli`` loads them from the ``attempts`` table). The file lists what the
network *did* (``netsim/SETTLEMENT.md``): approved authorizations (``M``),
captures (``D``), refunds (``C``) and voids or reversal advices that released a
hold (``M``). Our side mirrors that:

* **expected** (must be in the file): every ``approved`` authorization, capture,
  refund, void and release;
* **optional** (may be in the file): everything else. An approved timeout reversal
  has a line only if it released something, and an attempt we hold as unknown,
  reversed, declined or recorded has one if the network approved it after all.

Matching, in this order:

1. **By key**: terminal (field 41), STAN and RRN (field 37 *as sent*: follow-ups
   carry their authorization's RRN), on the file's day. Our attempts are taken from
   ``margin_ms`` before the day's start to ``margin_ms`` after its end, so a message
   sent just before midnight and processed after it still matches by key.
2. **By approval code and amount** (with currency and kind of message) for the
   lines and attempts left over, oldest attempt first.

Classes (``CLASSES``):

* ``matched``: a pair that agrees, our attempt approved. An authorization we hold
  ``reversed`` whose line is followed in the file by reversals that released the
  whole hold is matched too (approved, then reversed: both sides agree).
* ``amount_mismatch``: a pair whose amount (or currency, or kind) differs.
* ``missing_ours``: a line without an approved attempt: none at all, or one we hold
  unknown, reversed, declined or recorded (e.g. a lost approval).
* ``missing_network``: an expected attempt of the day without a line.
* ``duplicate``: a key seen again in the file (the first occurrence is classified
  as above), or two expected attempts with the same key (the older one is used;
  of attempts with one key, expected ones come first, then other approved ones).
* ``next_day``: neither an alert nor a failure: an expected attempt of the last
  ``margin_ms`` of the day without a line here; it belongs to the next day's file if
  the network processed it after midnight.

**The lost approval** (a 0100 the network approved whose reply we never got, so our
authorization is ``unknown``, or already ``reversed`` by the reconciler) is
``missing_ours``; while the file shows the hold still there it also gets the
``reverse`` action below. Once the file shows it released (our 0420 arrived), an
authorization we hold ``reversed`` is ``matched``.

Actions, where the rule is clear: an authorization line (``0100``) that the file
shows still held (authorized minus captured minus released, from this file's
lines) and that we hold unknown, reversed or declined, or never recorded, gets an
:class:`Action` ``reverse``: a timeout reversal advice (0420) for the reconciler
worker to record and send. Advices are idempotent at the network, so a reversal
already on its way costs nothing. Every other discrepancy becomes an
:class:`Alert` for a person. The file carries no card data (no PAN, BIN or last
four digits), so neither does anything here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import attrgetter
from typing import Final, NamedTuple

from gateway.payments import money
from gateway.payments.model import AttemptKind, AttemptStatus
from netsim.settlement import Totals
from reconciler.settlement_file import (
    Header,
    NetLine,
    SettlementError,
    SettlementReader,
    read_settlement,
)

__all__ = [
    "ACTIONS_SCHEMA",
    "CLASSES",
    "MARGIN_MS",
    "Action",
    "Alert",
    "Header",
    "Item",
    "Match",
    "Matcher",
    "NetLine",
    "OurLine",
    "Reconciliation",
    "SettlementError",
    "SettlementReader",
    "Summary",
    "read_settlement",
    "reconcile",
]

MATCHED, MISSING_OURS, MISSING_NETWORK = "matched", "missing_ours", "missing_network"
AMOUNT_MISMATCH, DUPLICATE, NEXT_DAY = "amount_mismatch", "duplicate", "next_day"
#: Every class, in report order.
CLASSES: Final = (MATCHED, MISSING_OURS, MISSING_NETWORK, AMOUNT_MISMATCH, DUPLICATE, NEXT_DAY)
#: How far around the day our attempts are taken (a message sent just before
#: midnight is processed just after it).
MARGIN_MS: Final = 5 * 60 * 1000
DAY_MS: Final = 86_400_000

#: The table the actions are recorded in (``reconciler.cli``): ``payload`` is the
#: action as canonical JSON; re-recording the same (day, key) is a no-op.
ACTIONS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS settlement_actions (
        day     TEXT NOT NULL,
        key     TEXT NOT NULL,
        kind    TEXT NOT NULL,
        payload TEXT NOT NULL,
        created INTEGER NOT NULL,
        PRIMARY KEY (day, key)
    ) STRICT""",
)

# Kind of message of a line (by MTI) and of an attempt (by kind); repeats (0221,
# 0201, 0401) are settled under their own MTI when the original never arrived.
_AUTH, _CAPTURE, _REFUND, _REVERSAL = "authorization", "capture", "refund", "reversal"
_FAMILY_OF_MTI: Final = {"0100": _AUTH, "0220": _CAPTURE, "0221": _CAPTURE, "0200": _REFUND,
                         "0201": _REFUND, "0400": _REVERSAL, "0401": _REVERSAL,
                         "0420": _REVERSAL, "0421": _REVERSAL}
_FAMILY_OF_KIND: Final = {AttemptKind.AUTHORIZATION.value: _AUTH,
                          AttemptKind.CAPTURE.value: _CAPTURE,
                          AttemptKind.REFUND.value: _REFUND, AttemptKind.VOID.value: _REVERSAL,
                          AttemptKind.RELEASE.value: _REVERSAL,
                          AttemptKind.TIMEOUT_REVERSAL.value: _REVERSAL}
_EXPECTED_KINDS: Final = frozenset({AttemptKind.AUTHORIZATION.value, AttemptKind.CAPTURE.value,
                                    AttemptKind.REFUND.value, AttemptKind.VOID.value,
                                    AttemptKind.RELEASE.value})
#: (attempt kind, MTI) of the same kind of message.
_KIND_MTI: Final = frozenset((kind, mti) for kind, family in _FAMILY_OF_KIND.items()
                             for mti, other in _FAMILY_OF_MTI.items() if family == other)
_APPROVED: Final = AttemptStatus.APPROVED.value
_REVERSIBLE: Final = frozenset({AttemptStatus.UNKNOWN.value, AttemptStatus.REVERSED.value,
                                AttemptStatus.DECLINED.value})
#: ISO 4217 numeric (the file's field 49) -> our lower-case code, and back.
_ALPHA: Final = {c.numeric: c.code for c in money.CURRENCIES.values()}
_NUMERIC: Final = {c.code: c.numeric for c in money.CURRENCIES.values()}


# ---------------------------------------------------------------- records


class OurLine(NamedTuple):
    """One of our attempts, as settlement sees it."""

    attempt_id: str
    kind: str                 # AttemptKind value
    status: str               # AttemptStatus value
    terminal: str
    stan: str
    rrn: str                  # field 37 as sent: the authorization's RRN for follow-ups
    created: int              # ms since the epoch, UTC
    approval_code: str        # the authorization's approval code ("" if none)
    amount: int               # approved amount if approved, else the amount asked
    currency: str             # lower-case ISO 4217 code, as we store it ("eur")
    transmitted: str          # field 7, MMDDhhmmss


class Match(NamedTuple):
    """A line and the attempt it matched; ``by`` is ``key`` or ``approval``."""

    seq: int
    attempt_id: str
    by: str


@dataclass(frozen=True)
class Item:
    """A line, an attempt or both, in one of the classes other than ``matched``."""

    cls: str
    line: NetLine | None
    ours: OurLine | None
    note: str
    by: str = ""              # how line and attempt were paired, when both are set
    action: str = ""          # the key of the action taken for it, if any

    @property
    def amount(self) -> int:
        return self.line.amount if self.line is not None else self.ours.amount if \
            self.ours is not None else 0

    @property
    def currency(self) -> str:
        """ISO 4217 numeric, as in the file."""
        if self.line is not None:
            return self.line.currency
        return _NUMERIC.get(self.ours.currency, self.ours.currency) if self.ours else ""


@dataclass(frozen=True)
class Action:
    """Something the reconciler worker is to do; ``key`` is unique within the day."""

    kind: str                 # "reverse": a timeout reversal advice (0420)
    key: str
    day: str                  # the settlement day, YYYY-MM-DD
    terminal: str
    stan: str                 # of the authorization to reverse
    rrn: str
    transmitted: str          # its field 7: ours, or estimated from the line (see source)
    transmitted_source: str   # "attempt" or "settlement" (the line's date and time)
    amount: int               # the authorized amount (field 4 of the advice)
    held: int                 # what the file shows still held
    currency: str             # ISO 4217 numeric
    merchant: str             # field 42
    attempt_id: str           # our authorization attempt, "" if we have none
    reason: str


@dataclass(frozen=True)
class Alert:
    cls: str
    detail: str


@dataclass(frozen=True)
class Summary:
    """Counts per class; per currency (numeric) the amounts per class and the file's
    totals (``debit``, ``credit``, ``memo``, ``net`` = debit - credit)."""

    lines: int
    attempts: int             # our attempts taken into account (day and margins)
    counts: dict[str, int]
    amounts: dict[str, dict[str, int]]
    network: dict[str, dict[str, int]]


@dataclass(frozen=True)
class Reconciliation:
    day: date
    matched: list[Match]
    missing_ours: list[Item]
    missing_network: list[Item]
    amount_mismatch: list[Item]
    duplicate: list[Item]
    next_day: list[Item]
    actions: list[Action]
    alerts: list[Alert]
    summary: Summary

    @property
    def clean(self) -> bool:
        """All matched: nothing to act on, nothing to look at."""
        return not self.actions and not self.alerts

    def items(self, cls: str) -> list[Item]:
        """The items of a class other than ``matched``."""
        found: list[Item] = getattr(self, cls)
        return found


# ---------------------------------------------------------------- matching

_CONSUMED: Final = OurLine("", "", "", "", "", "", 0, "", 0, "", "")
_KEY: Final = attrgetter("terminal", "stan", "rrn")   # also the order of the fields' key
_DUPLICATE_LINE: Final = "the same terminal, STAN and RRN again"
_Key = tuple[str, str, str]


def _rank(o: OurLine) -> tuple[int, int, str]:
    """Which of two attempts with one key settlement uses: expected ones first, then
    approved ones, then the oldest."""
    if o.status == _APPROVED:
        return (0 if o.kind in _EXPECTED_KINDS else 1), o.created, o.attempt_id
    return 2, o.created, o.attempt_id


def _describe(line: NetLine | None, ours: OurLine | None) -> str:
    parts = []
    if line is not None:
        parts.append(f"line {line.seq} {line.mti} {line.sign} terminal {line.terminal} "
                     f"stan {line.stan} rrn {line.rrn} {line.currency} {line.amount}")
    if ours is not None:
        parts.append(f"attempt {ours.attempt_id} {ours.kind} {ours.status} "
                     f"stan {ours.stan} {ours.currency} {ours.amount}")
    return "; ".join(parts)


@dataclass
class _State:
    matched: list[Match] = field(default_factory=list)
    mismatch: list[Item] = field(default_factory=list)
    dup_network: list[Item] = field(default_factory=list)
    leftover: list[NetLine] = field(default_factory=list)
    deferred: list[tuple[NetLine, OurLine, str]] = field(default_factory=list)
    holds: set[_Key] = field(default_factory=set)       # authorizations whose hold counts
    released: dict[_Key, int] = field(default_factory=dict)
    matched_amounts: dict[str, int] = field(default_factory=dict)
    unmatched_keys: set[_Key] = field(default_factory=set)
    lines: int = 0


class Matcher:
    """Matches lines fed one by one (or in bulk) against ``ours``; :meth:`finish` then
    returns the :class:`Reconciliation`. Pure: no I/O; the result does not depend on
    the order of ``ours``.

    What an authorization still holds is authorized minus what the captures and
    releases *after it in the file* took (netsim writes in ledger order).
    """

    def __init__(self, day: date, ours: Iterable[OurLine], *,
                 margin_ms: int = MARGIN_MS) -> None:
        self.day = day
        self.margin_ms = margin_ms
        self.start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000
        self.end = self.start + DAY_MS
        low, high = self.start - margin_ms, self.end + margin_ms
        rows = [o for o in ours if low <= o.created < high]
        index: dict[_Key, OurLine] = dict(zip(map(_KEY, rows), rows, strict=True))
        dups: list[OurLine] = []
        if len(index) != len(rows):          # keys seen twice: keep the best of each
            index.clear()
            for o in sorted(rows, key=_rank):
                first = index.setdefault(_KEY(o), o)
                if first is not o and _rank(o)[0] == 0:
                    dups.append(o)
        self._index = index
        self._dup_ours = dups
        self._attempts = len(rows)
        self._state = _State()
        self._finished = False

    @property
    def lines(self) -> int:
        """How many lines were fed."""
        return self._state.lines

    def feed(self, line: NetLine) -> None:
        self.feed_fields((line.fields(),))

    def feed_all(self, lines: Iterable[NetLine]) -> None:
        """Match lines (in file order)."""
        self.feed_fields(line.fields() for line in lines)

    def feed_fields(self, rows: Iterable[Sequence[str]]) -> None:
        """Match lines given as their 15 fields (in file order) by key; what cannot be
        decided before the end of the file waits for :meth:`finish`. The common case (a
        line and an approved attempt that agree) never builds a :class:`NetLine`."""
        if self._finished:
            raise RuntimeError("the matcher has finished")
        st = self._state
        index, get, consumed = self._index, self._index.get, _CONSUMED
        matched, amounts, holds = st.matched, st.matched_amounts, st.holds
        families, numeric, agree, approved = _FAMILY_OF_MTI, _NUMERIC, _KIND_MTI, _APPROVED
        make, line_of = tuple.__new__, NetLine.from_fields
        n = 0
        for f in rows:
            n += 1
            key = (f[13], f[6], f[7])                    # terminal, STAN, RRN
            ours = get(key)
            if ours is None or ours is consumed:
                line = line_of(f)
                if ours is None and key not in st.unmatched_keys:
                    st.unmatched_keys.add(key)
                    st.leftover.append(line)
                    if holds and line.original_stan:
                        self._release(line)
                    if families.get(line.mti) == _AUTH:
                        holds.add(key)
                else:                                   # a copy counts for nothing
                    st.dup_network.append(Item(DUPLICATE, line, None, _DUPLICATE_LINE))
                continue
            if holds and f[14]:
                self._release(line_of(f))
            index[key] = consumed
            if (ours.status == approved and ours.amount == int(f[9])
                    and numeric.get(ours.currency) == f[10] and (ours.kind, f[4]) in agree):
                matched.append(make(Match, (int(f[1]), ours.attempt_id, "key")))
                amounts[f[10]] = amounts.get(f[10], 0) + ours.amount
            else:
                self._pair(line_of(f), ours, "key")
        st.lines += n

    def _release(self, line: NetLine) -> None:
        family = _FAMILY_OF_MTI.get(line.mti)
        if family == _CAPTURE or (family == _REVERSAL and line.sign == "M"):
            hold = (line.terminal, line.original_stan, line.rrn)
            if hold in self._state.holds:
                self._state.released[hold] = self._state.released.get(hold, 0) + line.amount

    def _pair(self, line: NetLine, ours: OurLine, by: str) -> None:
        """A line and an attempt that do not simply agree."""
        st = self._state
        if ours.status != _APPROVED:
            st.deferred.append((line, ours, by))
            if _FAMILY_OF_MTI.get(line.mti) == _AUTH:
                st.holds.add(_KEY(line))
            return
        if (ours.amount == line.amount and ours.currency == _ALPHA.get(line.currency)
                and _FAMILY_OF_KIND.get(ours.kind) == _FAMILY_OF_MTI.get(line.mti)):
            self._matched(line, ours, by)
            return
        diffs = []
        if _FAMILY_OF_KIND.get(ours.kind) != _FAMILY_OF_MTI.get(line.mti):
            diffs.append(f"kind {ours.kind} here, MTI {line.mti} at the network")
        if ours.currency != _ALPHA.get(line.currency):
            diffs.append(f"currency {ours.currency} here, {line.currency} at the network")
        if ours.amount != line.amount:
            diffs.append(f"amount {ours.amount} here, {line.amount} at the network")
        st.mismatch.append(Item(AMOUNT_MISMATCH, line, ours, "; ".join(diffs), by))

    def _matched(self, line: NetLine, ours: OurLine, by: str) -> None:
        st = self._state
        st.matched.append(Match(line.seq, ours.attempt_id, by))
        st.matched_amounts[line.currency] = st.matched_amounts.get(line.currency, 0) + line.amount

    def _held(self, line: NetLine) -> int:
        return line.amount - self._state.released.get(_KEY(line), 0)

    def finish(self, totals: Mapping[str, Totals] | None = None) -> Reconciliation:
        """Pair what is left by approval code and amount, classify the rest, decide the
        actions and alerts; ``totals`` (the file's, per currency) go into the summary."""
        if self._finished:
            raise RuntimeError("the matcher has finished")
        self._finished = True
        st = self._state
        self._by_approval()
        missing_ours: list[Item] = []
        actions: list[Action] = []
        for line, ours, by in st.deferred:
            if (ours.kind == AttemptKind.AUTHORIZATION.value
                    and ours.status == AttemptStatus.REVERSED.value
                    and _FAMILY_OF_MTI.get(line.mti) == _AUTH and self._held(line) == 0
                    and ours.currency == _ALPHA.get(line.currency)
                    and ours.amount == line.amount):
                self._matched(line, ours, by)      # approved, then released: both agree
            else:
                missing_ours.append(self._missing_ours(line, ours, by, actions))
        for line in st.leftover:
            missing_ours.append(self._missing_ours(line, None, "", actions))
        missing_network: list[Item] = []
        next_day: list[Item] = []
        late = self.end - self.margin_ms
        for o in self._index.values():
            if o is _CONSUMED or _rank(o)[0] != 0 or not self.start <= o.created < self.end:
                continue
            if o.created >= late:
                next_day.append(Item(NEXT_DAY, None, o, "sent in the last minutes of the day; "
                                     "expected in the next day's file"))
            else:
                missing_network.append(Item(MISSING_NETWORK, None, o,
                                            "approved here, not in the network's file"))
        dup_ours = [Item(DUPLICATE, None, o, "another approved attempt has the same terminal, "
                         "STAN and RRN") for o in self._dup_ours]
        st.matched.sort()
        missing_ours.sort(key=_item_order)
        st.mismatch.sort(key=_item_order)
        missing_network.sort(key=_item_order)
        next_day.sort(key=_item_order)
        dup_ours.sort(key=_item_order)
        duplicate = st.dup_network + dup_ours
        actions.sort(key=lambda a: a.key)
        classes = {MISSING_OURS: missing_ours, MISSING_NETWORK: missing_network,
                   AMOUNT_MISMATCH: st.mismatch, DUPLICATE: duplicate, NEXT_DAY: next_day}
        alerts = [Alert(cls, f"{item.note}: {_describe(item.line, item.ours)}")
                  for cls, items in classes.items() if cls != NEXT_DAY
                  for item in items if not item.action]
        amounts: dict[str, dict[str, int]] = {}
        for currency, total in st.matched_amounts.items():
            amounts.setdefault(currency, {})[MATCHED] = total
        for cls, items in classes.items():
            for item in items:
                per = amounts.setdefault(item.currency, {})
                per[cls] = per.get(cls, 0) + item.amount
        counts = {MATCHED: len(st.matched), **{c: len(i) for c, i in classes.items()}}
        summary = Summary(lines=st.lines, attempts=self._attempts, counts=counts,
                          amounts={c: {k: v[k] for k in CLASSES if k in v}
                                   for c, v in sorted(amounts.items())},
                          network=network_totals(totals or {}))
        return Reconciliation(self.day, st.matched, missing_ours, missing_network,
                              st.mismatch, duplicate, next_day, actions, alerts, summary)

    def _by_approval(self) -> None:
        """Second pass: lines left over against attempts left over, by approval code,
        amount, currency and kind of message; the best attempt (see :func:`_rank`) first."""
        st = self._state

        def line_key(line: NetLine) -> tuple[str, int, str | None, str | None]:
            return (line.approval_code, line.amount, _ALPHA.get(line.currency),
                    _FAMILY_OF_MTI.get(line.mti))

        wanted = {line_key(line) for line in st.leftover if line.approval_code}
        if not wanted:
            return
        candidates: dict[tuple[str, int, str | None, str | None], list[OurLine]] = {}
        for o in self._index.values():
            if o is not _CONSUMED and o.approval_code:
                key = (o.approval_code, o.amount, o.currency, _FAMILY_OF_KIND.get(o.kind))
                if key in wanted:
                    candidates.setdefault(key, []).append(o)
        for found in candidates.values():
            found.sort(key=_rank, reverse=True)
        left: list[NetLine] = []
        for line in st.leftover:
            found = candidates.get(line_key(line), []) if line.approval_code else []
            if not found:
                left.append(line)
                continue
            ours = found.pop()
            self._index[_KEY(ours)] = _CONSUMED
            self._pair(line, ours, "approval")
        st.leftover = left

    def _missing_ours(self, line: NetLine, ours: OurLine | None, by: str,
                      actions: list[Action]) -> Item:
        """A line without an approved attempt; a reversal when the rule is clear."""
        state = "no attempt here" if ours is None else f"{ours.kind} {ours.status} here"
        note = f"approved at the network, {state}"
        if _FAMILY_OF_MTI.get(line.mti) != _AUTH:
            return Item(MISSING_OURS, line, ours, note, by)
        if ours is not None and (ours.kind != AttemptKind.AUTHORIZATION.value
                                 or ours.status not in _REVERSIBLE):
            return Item(MISSING_OURS, line, ours, note, by)
        held = self._held(line)
        if held <= 0:
            return Item(MISSING_OURS, line, ours, f"{note}; no longer held", by)
        key = f"reverse:{line.terminal}:{line.stan}:{line.rrn}"
        if ours is not None:
            transmitted, source = ours.transmitted, "attempt"
        else:
            transmitted, source = f"{self.day:%m%d}{line.time}", "settlement"
        actions.append(Action(
            kind="reverse", key=key, day=self.day.isoformat(), terminal=line.terminal,
            stan=line.stan, rrn=line.rrn, transmitted=transmitted, transmitted_source=source,
            amount=line.amount, held=held, currency=line.currency, merchant=line.merchant,
            attempt_id=ours.attempt_id if ours is not None else "",
            reason=f"the network holds {held} of this authorization; {state}"))
        return Item(MISSING_OURS, line, ours, note, by, action=key)


def _item_order(item: Item) -> tuple[int, int, str]:
    if item.line is not None:
        return item.line.seq, 0, ""
    assert item.ours is not None
    return 0, item.ours.created, item.ours.attempt_id


def reconcile(day: date, lines: Iterable[NetLine], ours: Iterable[OurLine], *,
              margin_ms: int = MARGIN_MS,
              totals: Mapping[str, Totals] | None = None) -> Reconciliation:
    """Match a day's lines against our attempts (see the module's docstring)."""
    matcher = Matcher(day, ours, margin_ms=margin_ms)
    matcher.feed_all(lines)
    return matcher.finish(totals)


def network_totals(totals: Mapping[str, Totals]) -> dict[str, dict[str, int]]:
    """The file's totals per currency: debit, credit, memo and net."""
    return {c: {"debit": t.debit_total, "credit": t.credit_total, "memo": t.memo_total,
                "net": t.net} for c, t in sorted(totals.items())}


def day_bounds(day: date, margin_ms: int = MARGIN_MS) -> tuple[int, int]:
    """The ``created`` range (ms, half-open) of the attempts a day's matching uses."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    low = start - timedelta(milliseconds=margin_ms)
    high = start + timedelta(days=1, milliseconds=margin_ms)
    return int(low.timestamp() * 1000), int(high.timestamp() * 1000)
