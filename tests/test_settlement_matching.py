"""Settlement matching (pure) and the settlement file reader: a clean day is all matched,
and every injected mistake (a line missing on either side, an amount changed, a line
duplicated, a lost approval) is classified as injected, with a reversal exactly where
the rule is clear."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netsim.settlement import (
    Detail,
    Header,
    Settlement,
    SettlementError,
    Trailer,
    parse_settlement,
    render_settlement,
    totals_of,
)
from reconciler.settlement import (
    MARGIN_MS,
    Matcher,
    NetLine,
    OurLine,
    Reconciliation,
    reconcile,
)
from reconciler.settlement_file import BackgroundCheck, SettlementReader, read_settlement

DAY = date(2031, 5, 17)
START = int(datetime(2031, 5, 17, tzinfo=UTC).timestamp() * 1000)
TERMINAL = "TERM0001"
MERCHANT = "ACME00000000001"
CURRENCIES = (("eur", "978"), ("usd", "840"), ("jpy", "392"))
FLOWS = ("hold", "capture", "refund", "void", "partial")
# The kind of message of each line: (MTI, processing code, sign, our attempt kind).
SHAPES = {"authorization": ("0100", "000000", "M"), "capture": ("0220", "000000", "D"),
          "refund": ("0200", "200000", "C"), "void": ("0400", "000000", "M"),
          "release": ("0400", "000000", "M"), "timeout_reversal": ("0420", "000000", "M")}


@dataclass
class Day:
    """A day of payments as both sides saw it: line i of ``lines`` is attempt i of
    ``ours`` (until a test changes one side)."""

    lines: list[NetLine]
    ours: list[OurLine]


def _pair(kind: str, seq: int, stan: str, rrn: str, approval: str, amount: int,
          currency: tuple[str, str], created: int, original: str = "",
          status: str = "approved") -> tuple[NetLine, OurLine]:
    mti, pc, sign = SHAPES[kind]
    line = NetLine(seq, "101500", mti, pc, stan, rrn, approval, amount, currency[1], sign,
                   MERCHANT, TERMINAL, original)
    ours = OurLine(f"att_{stan}", kind, status, TERMINAL, stan, rrn, created, approval,
                   amount, currency[0], f"0517{stan}")
    return line, ours


def build_day(payments: list[tuple[int, int, str]], order: list[int] | None = None) -> Day:
    """Payments (amount, currency index, flow) as lines and attempts; each payment's
    lines in order, the payments interleaved as ``order`` (payment numbers) says."""
    per_payment: list[list[tuple[str, int, str]]] = []
    for amount, _currency, flow in payments:
        msgs = [("authorization", amount, "")]
        if flow == "capture":
            msgs.append(("capture", amount, "a"))
        elif flow == "refund":
            msgs += [("capture", amount, "a"), ("refund", max(1, amount // 3), "a")]
        elif flow == "void":
            msgs.append(("void", amount, "a"))
        elif flow == "partial" and amount > 1:
            msgs += [("capture", amount // 2, "a"), ("release", amount - amount // 2, "a")]
        per_payment.append(msgs)
    sequence = order if order is not None else [i for i, m in enumerate(per_payment)
                                                for _ in m]
    taken = [0] * len(payments)
    auth_stans: dict[int, tuple[str, str]] = {}
    day = Day([], [])
    for n, p in enumerate(sequence, start=1):
        kind, amount, _ = per_payment[p][taken[p]]
        taken[p] += 1
        stan = f"{n:06d}"
        if kind == "authorization":
            auth_stans[p] = (stan, f"113710{stan}")
        auth_stan, rrn = auth_stans[p]
        line, ours = _pair(kind, n, stan, rrn, f"A{p:05d}", amount,
                           CURRENCIES[payments[p][1]], START + 3_600_000 + n * 1000,
                           "" if kind == "authorization" else auth_stan)
        day.lines.append(line)
        day.ours.append(ours)
    return day


def classes(result: Reconciliation) -> dict[str, set[object]]:
    """What each class holds: line numbers, or attempt ids for attempts alone."""
    out: dict[str, set[object]] = {"matched": {m.seq for m in result.matched}}
    for cls in ("missing_ours", "missing_network", "amount_mismatch", "duplicate", "next_day"):
        out[cls] = {i.line.seq if i.line is not None else i.ours.attempt_id  # type: ignore[union-attr]
                    for i in result.items(cls)}
    return out


def sample_day() -> Day:
    return build_day([(5000, 0, "partial"), (700, 0, "void"), (1999, 1, "capture"),
                      (2500, 0, "hold"), (1200, 2, "refund")])


# ---------------------------------------------------------------- examples


def test_a_clean_day_is_all_matched() -> None:
    """Every line of a clean day matches its attempt by key: no alert, no action."""
    day = sample_day()
    result = reconcile(DAY, day.lines, day.ours)
    assert result.clean and not result.alerts and not result.actions
    assert [m.seq for m in result.matched] == [line.seq for line in day.lines]
    assert {m.by for m in result.matched} == {"key"}
    assert result.summary.counts["matched"] == len(day.lines)
    assert result.summary.amounts["978"]["matched"] == sum(
        line.amount for line in day.lines if line.currency == "978")


def test_a_line_we_never_recorded_is_missing_ours() -> None:
    """A capture line with no attempt of ours is missing_ours, an alert, and no action."""
    day = sample_day()
    capture = next(i for i, o in enumerate(day.ours) if o.kind == "capture")
    del day.ours[capture]
    result = reconcile(DAY, day.lines, day.ours)
    assert [i.line.seq for i in result.missing_ours if i.line] == [day.lines[capture].seq]
    assert not result.actions and [a.cls for a in result.alerts] == ["missing_ours"]


def test_an_attempt_the_network_does_not_list_is_missing_network() -> None:
    """An approved refund of ours whose line is absent is missing_network."""
    day = sample_day()
    refund = next(i for i, o in enumerate(day.ours) if o.kind == "refund")
    del day.lines[refund]
    result = reconcile(DAY, day.lines, day.ours)
    assert [i.ours.attempt_id for i in result.missing_network if i.ours] == \
        [day.ours[refund].attempt_id]
    assert result.summary.counts["matched"] == len(day.lines)


def test_an_amount_changed_is_an_amount_mismatch() -> None:
    """A line whose amount differs from our attempt's is an amount_mismatch naming both."""
    day = sample_day()
    day.lines[2] = day.lines[2]._replace(amount=day.lines[2].amount + 1)
    result = reconcile(DAY, day.lines, day.ours)
    (item,) = result.amount_mismatch
    assert item.line == day.lines[2] and item.ours == day.ours[2]
    assert "amount" in item.note and not result.actions


def test_a_duplicated_line_is_a_duplicate_and_the_first_still_matches() -> None:
    """The second copy of a line is a duplicate; the first is matched."""
    day = sample_day()
    copy = day.lines[1]._replace(seq=len(day.lines) + 1)
    result = reconcile(DAY, [*day.lines, copy], day.ours)
    assert [i.line.seq for i in result.duplicate if i.line] == [copy.seq]
    assert day.lines[1].seq in {m.seq for m in result.matched}


def test_two_approved_attempts_with_one_key_are_a_duplicate() -> None:
    """A second approved attempt with the same terminal, STAN and RRN is a duplicate; the
    older one is matched."""
    day = sample_day()
    twin = day.ours[0]._replace(attempt_id="att_twin", created=day.ours[0].created + 5)
    result = reconcile(DAY, day.lines, [*day.ours, twin])
    assert [i.ours.attempt_id for i in result.duplicate if i.ours] == ["att_twin"]
    assert result.matched[0].attempt_id == day.ours[0].attempt_id


def test_a_lost_approval_still_held_is_reversed() -> None:
    """Our authorization unknown, the network approved and still holds it: missing_ours
    with a reverse action carrying our field 7; no alert for it."""
    day = sample_day()
    hold = next(i for i, line in enumerate(day.lines)
                if line.mti == "0100" and line.amount == 2500)
    day.ours[hold] = day.ours[hold]._replace(status="unknown", approval_code="")
    result = reconcile(DAY, day.lines, day.ours)
    (item,) = result.missing_ours
    (action,) = result.actions
    assert item.line == day.lines[hold] and item.action == action.key
    assert (action.kind, action.stan, action.rrn, action.amount, action.held) == \
        ("reverse", day.lines[hold].stan, day.lines[hold].rrn, 2500, 2500)
    assert (action.transmitted, action.transmitted_source) == \
        (day.ours[hold].transmitted, "attempt")
    assert action.attempt_id == day.ours[hold].attempt_id
    assert not result.alerts


def test_a_lost_approval_already_captured_gets_no_reversal() -> None:
    """An unknown authorization whose hold the file shows captured is missing_ours and an
    alert, but nothing to reverse."""
    day = sample_day()
    auth = next(i for i, line in enumerate(day.lines)
                if line.mti == "0100" and line.amount == 1999)
    day.ours[auth] = day.ours[auth]._replace(status="unknown")
    result = reconcile(DAY, day.lines, day.ours)
    assert not result.actions
    assert [a.cls for a in result.alerts] == ["missing_ours"]
    assert "no longer held" in result.missing_ours[0].note


def test_an_authorization_never_recorded_is_reversed_with_an_estimated_field_7() -> None:
    """A held authorization we have no attempt for gets a reversal whose field 7 is the
    line's date and time."""
    day = sample_day()
    hold = next(i for i, line in enumerate(day.lines)
                if line.mti == "0100" and line.amount == 2500)
    del day.ours[hold]
    (action,) = reconcile(DAY, day.lines, day.ours).actions
    assert (action.transmitted, action.transmitted_source, action.attempt_id) == \
        ("0517101500", "settlement", "")


def test_a_reversed_authorization_released_by_our_advice_is_matched() -> None:
    """Approved at the network, reversed here, and the file shows the 0420 releasing it:
    both lines are matched, nothing to do."""
    day = build_day([(2500, 0, "hold")])
    day.ours[0] = day.ours[0]._replace(status="reversed", approval_code="")
    line, ours = _pair("timeout_reversal", 2, "000002", day.lines[0].rrn, "A00000", 2500,
                       CURRENCIES[0], START + 7_200_000, original="000001")
    result = reconcile(DAY, [*day.lines, line], [*day.ours, ours])
    assert result.clean and [m.seq for m in result.matched] == [1, 2]


def test_a_key_that_differs_is_matched_by_approval_code_and_amount() -> None:
    """A line whose STAN differs from ours is still matched, by approval code and amount."""
    day = sample_day()
    day.lines[3] = day.lines[3]._replace(stan="999999")
    result = reconcile(DAY, day.lines, day.ours)
    assert result.clean
    assert [m for m in result.matched if m.by == "approval"] == \
        [(day.lines[3].seq, day.ours[3].attempt_id, "approval")]


def test_an_attempt_of_the_last_minutes_is_left_for_the_next_day() -> None:
    """An approved attempt two minutes before midnight without a line is next_day, which
    is neither an alert nor unclean."""
    day = sample_day()
    late = day.ours[0]._replace(attempt_id="att_late", stan="888888",
                                created=START + 86_400_000 - 120_000)
    result = reconcile(DAY, day.lines, [*day.ours, late])
    assert [i.ours.attempt_id for i in result.next_day if i.ours] == ["att_late"]
    assert result.clean


def test_an_attempt_sent_before_midnight_matches_a_line_of_the_next_day() -> None:
    """A message we sent a second before midnight matches the next day's file by key;
    attempts further back are not ours to report on that day."""
    day = sample_day()
    moved = [o._replace(created=START - 1000) if i == 0 else o
             for i, o in enumerate(day.ours)]
    old = day.ours[1]._replace(attempt_id="att_old", stan="777777",
                               created=START - MARGIN_MS - 1)
    result = reconcile(DAY, day.lines, [*moved, old])
    assert result.clean and result.matched[0].attempt_id == moved[0].attempt_id
    assert result.summary.attempts == len(moved)


def test_the_result_does_not_depend_on_the_order_of_our_attempts() -> None:
    """Shuffling our attempts (duplicates included) gives the same reconciliation."""
    day = sample_day()
    twin = day.ours[2]._replace(attempt_id="att_twin", created=day.ours[2].created + 1)
    ours = [*day.ours, twin]
    first = reconcile(DAY, day.lines, ours)
    shuffled = ours[:]
    random.Random(7).shuffle(shuffled)
    assert reconcile(DAY, day.lines, shuffled) == first


def test_lines_fed_as_fields_or_as_lines_agree() -> None:
    """feed_fields (what the command uses) and feed_all classify alike."""
    day = sample_day()
    day.lines[0] = day.lines[0]._replace(amount=1)
    by_lines = Matcher(DAY, day.ours)
    by_lines.feed_all(day.lines)
    by_fields = Matcher(DAY, day.ours)
    by_fields.feed_fields(line.fields() for line in day.lines)
    assert by_lines.finish() == by_fields.finish()


# ---------------------------------------------------------------- properties

MUTATIONS = ("none", "drop_ours", "drop_line", "amount", "duplicate", "lost")


@st.composite
def mutated_days(draw: st.DrawFn) -> tuple[Day, list[str], list[NetLine]]:
    payments = draw(st.lists(st.tuples(st.integers(2, 10**7), st.integers(0, 2),
                                       st.sampled_from(FLOWS)), min_size=1, max_size=25))
    counts = [1 + {"capture": 1, "refund": 2, "void": 1, "partial": 2}.get(f, 0)
              for _, _, f in payments]
    order = draw(st.permutations([p for p, c in enumerate(counts) for _ in range(c)]))
    day = build_day(payments, list(order))
    mutations = draw(st.lists(st.sampled_from(MUTATIONS), min_size=len(day.lines),
                              max_size=len(day.lines)))
    mutations = [m if m != "lost" or day.lines[i].mti == "0100" else "none"
                 for i, m in enumerate(mutations)]
    return day, mutations, day.lines[:]


def expected_held(lines: list[NetLine], auth: NetLine) -> int:
    taken = sum(line.amount for line in lines if line.seq > auth.seq
                and line.original_stan == auth.stan and line.rrn == auth.rrn
                and (line.sign == "D" or line.mti in ("0400", "0420")))
    return auth.amount - taken


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_days())
def test_mutations_of_a_clean_day_are_classified_exactly_as_injected(
        case: tuple[Day, list[str], list[NetLine]]) -> None:
    """Random mistakes injected into a random clean day land in exactly their class, and a
    reversal is asked for exactly the held authorizations we do not know as approved."""
    day, mutations, original = case
    lines: list[NetLine] = []
    ours: list[OurLine] = []
    copies: list[NetLine] = []
    want: dict[str, set[object]] = {c: set() for c in
                                    ("matched", "missing_ours", "missing_network",
                                     "amount_mismatch", "duplicate", "next_day")}
    for line, attempt, mutation in zip(original, day.ours, mutations, strict=True):
        if mutation != "drop_ours":
            ours.append(attempt._replace(status="unknown", approval_code="")
                        if mutation == "lost" else attempt)
        if mutation == "drop_line":
            want["missing_network"].add(attempt.attempt_id)
            continue
        lines.append(line._replace(amount=line.amount + 1) if mutation == "amount" else line)
        if mutation == "duplicate":
            copies.append(line)
        want[{"none": "matched", "duplicate": "matched", "amount": "amount_mismatch",
              "drop_ours": "missing_ours", "lost": "missing_ours"}[mutation]].add(line.seq)
    for n, copy in enumerate(copies, start=len(original) + 1):
        lines.append(copy._replace(seq=n))
        want["duplicate"].add(n)
    result = reconcile(DAY, lines, ours)
    assert classes(result) == want
    first_copies = lines[:len(lines) - len(copies)]
    reversals = {line.stan for line, m in zip(original, mutations, strict=True)
                 if m in ("drop_ours", "lost") and line.mti == "0100"
                 and expected_held(first_copies, line) > 0}
    assert {a.stan for a in result.actions} == reversals
    assert all(a.kind == "reverse" for a in result.actions)
    assert len(result.alerts) + len(result.actions) == sum(
        len(v) for k, v in want.items() if k not in ("matched", "next_day"))
    assert result.clean == (not reversals and sum(
        len(v) for k, v in want.items() if k != "matched") == 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10**9), st.integers(0, 2), st.sampled_from(FLOWS)),
                max_size=30))
def test_any_clean_day_is_all_matched(payments: list[tuple[int, int, str]]) -> None:
    """Whatever the payments, the clean day is all matched by key."""
    day = build_day(payments)
    result = reconcile(DAY, day.lines, day.ours)
    assert result.clean
    assert Counter(m.by for m in result.matched) == Counter({"key": len(day.lines)} if
                                                            day.lines else {})


# ---------------------------------------------------------------- the file reader


def _settlement(day: Day) -> Settlement:
    details = tuple(Detail(seq=line.seq, day=DAY, time=line.time, mti=line.mti,
                           processing_code=line.processing_code, stan=line.stan, rrn=line.rrn,
                           approval_code=line.approval_code, amount=line.amount,
                           currency=line.currency, sign=line.sign, merchant=line.merchant,
                           terminal=line.terminal, original_stan=line.original_stan)
                    for line in day.lines)
    return Settlement(Header("NETSIM", 1, DAY, datetime(2031, 5, 18, 0, 5, tzinfo=UTC)),
                      details, Trailer(len(details), totals_of(details)))


def test_the_reader_reads_what_netsim_writes(tmp_path: Path) -> None:
    """The streaming reader gives the lines, totals and header netsim's parser gives,
    escaped fields included."""
    day = sample_day()
    day.lines[0] = day.lines[0]._replace(merchant="A|B%C\n")
    path = tmp_path / "day.txt"
    path.write_text(render_settlement(_settlement(day)), encoding="ascii")
    header, lines, totals = read_settlement(path)
    theirs = parse_settlement(path)
    assert lines == [NetLine.from_detail(d) for d in theirs.details]
    assert totals == dict(theirs.trailer.totals) and header.day == theirs.header.day
    with SettlementReader(path) as reader:
        assert [NetLine.from_fields(f) for f in reader.fields()] == lines
    assert BackgroundCheck(path).result() == (len(lines), totals)


TAMPERING = [
    ("an amount", lambda t: t.replace("|000000005000|", "|000000005001|", 1)),
    ("a sequence number", lambda t: t.replace("\nD|2|", "\nD|7|", 1)),
    ("the trailer", lambda t: t.rsplit("T|", 1)[0]),
    ("a line's field count", lambda t: t.replace("|TERM0001|\n", "|TERM0001|X|\n", 1)),
    ("the header", lambda t: t.replace("NETSIM", "OTHER", 1)),
    ("a date", lambda t: t.replace("|2031-05-17|", "|2031-05-16|", 2)),
    ("an extra line", lambda t: t + "D|99\n"),
    ("a blank line", lambda t: t.replace("\nS|", "\n\nS|", 1)),
]


@pytest.mark.parametrize(("what", "tamper"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_a_tampered_file_is_refused_as_netsim_refuses_it(
        tmp_path: Path, what: str, tamper: object) -> None:
    """Each kind of tampering raises SettlementError with netsim's own message."""
    path = tmp_path / "day.txt"
    path.write_text(tamper(render_settlement(_settlement(sample_day()))),  # type: ignore[operator]
                    encoding="ascii")
    with pytest.raises(SettlementError) as theirs:
        parse_settlement(path)
    with pytest.raises(SettlementError) as ours:
        read_settlement(path)
    assert str(ours.value) == str(theirs.value), what
    with pytest.raises(SettlementError) as background:
        BackgroundCheck(path).result()
    assert str(background.value) == str(theirs.value)


HUGE = "9" * 5000      # more digits than int() converts (4300)
TOO_LONG = [
    ("a sequence number", lambda t: t.replace("\nD|2|", f"\nD|{HUGE}|", 1), "sequence"),
    ("a sequence number of 19 digits",
     lambda t: t.replace("\nD|2|", "\nD|0000000000000000002|", 1), "sequence"),
    ("a count or total", lambda t: t.replace("\nS|978|", f"\nS|978|{HUGE}", 1),
     "count or total"),
    ("the trailer's count", lambda t: t.replace("\nT|", f"\nT|{HUGE}", 1), "count"),
]


@pytest.mark.parametrize(("what", "tamper", "field"), TOO_LONG, ids=[t[0] for t in TOO_LONG])
def test_a_number_of_too_many_digits_is_refused_by_every_parser(
        tmp_path: Path, what: str, tamper: object, field: str) -> None:
    """A sequence, count or total longer than 18 digits is a SettlementError naming the
    field and its line, from netsim's parser, the reader and the background check alike."""
    path = tmp_path / "day.txt"
    path.write_text(tamper(render_settlement(_settlement(sample_day()))),  # type: ignore[operator]
                    encoding="ascii")
    with pytest.raises(SettlementError) as theirs:
        parse_settlement(path)
    assert theirs.value.msg == f"{field} must be at most 18 digits", what
    assert theirs.value.line is not None
    with pytest.raises(SettlementError) as ours:
        read_settlement(path)
    assert str(ours.value) == str(theirs.value)
    with pytest.raises(SettlementError) as background:
        BackgroundCheck(path).result()
    assert str(background.value) == str(theirs.value)


def test_a_file_that_is_not_ascii_is_refused(tmp_path: Path) -> None:
    """Bytes outside ASCII make the file unreadable as a settlement."""
    path = tmp_path / "day.txt"
    path.write_bytes(render_settlement(_settlement(sample_day())).encode().replace(
        b"ACME", b"\xc3\xa9CME", 1))
    with pytest.raises(SettlementError, match="not an ASCII file"):
        read_settlement(path)


def test_items_keep_the_attempts_lower_case_currency() -> None:
    """Summary amounts are keyed by the file's numeric currency even for our side alone."""
    day = sample_day()
    del day.lines[0]
    result = reconcile(DAY, day.lines, day.ours)
    assert result.missing_network[0].currency == "978"
    assert "missing_network" in result.summary.amounts["978"]
    assert dataclasses.asdict(result.summary)["counts"]["missing_network"] == 1
