"""Seconds to match a 1,000,000-line settlement file against the store, through the real
command: ``paygate reconcile settlement FILE --data-dir DIR`` as a subprocess (process
start, streaming parse with every check of the trailer, loading our attempts of the day
from SQLite, matching, the JSON report and the table, recording the actions).

The data is synthetic but in the real formats: the file is netsim's settlement format
(checked against ``netsim.parse_settlement`` on a small sample of the same generator),
and the store is the gateway's ``paygate.db`` schema (``payment_intents`` and
``attempts`` rows as the payments service writes them, with the stored request JSON).
A day of payments on 4 terminals: each is an authorization (``M``) and a capture
(``D``), or every 20th a void (``M``); every 10th also has a refund (``C``). A few
mistakes are injected so every phase has work: lost approvals (our authorization
``unknown``: a ``missing_ours`` with a ``reverse`` action each) and lines left out of
the file (``missing_network``); the bench checks the counts.

    .venv/bin/python bench/settlement.py [--lines 1000000] [--rounds 3] [--dir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file's folder must leave the import path (bench/codec.py would shadow codec).
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import runpy  # noqa: E402
import shutil  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from datetime import UTC, date, datetime, timedelta  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

from gateway.payments.sqlite_store import SCHEMA  # noqa: E402
from netsim.settlement import parse_settlement  # noqa: E402

DAY = date(2031, 5, 17)
GOAL_SECONDS = 20.0
TERMINALS = ("TERM0001", "TERM0002", "TERM0003", "TERM0004")
MERCHANT = "ACME00000000001"
LOST_EVERY = 20_000        # one lost approval (our authorization unknown) per this many
DROPPED_EVERY = 20_011     # one line left out of the file per this many
CURRENCIES = (("eur", "978"), ("usd", "840"))


def _payments(lines: int) -> Iterator[tuple[int, list[tuple[str, int]]]]:
    """(payment number, its messages [(kind, amount)]) until about ``lines`` lines."""
    made, i = 0, 0
    while made < lines:
        amount = 100 + (i * 7919) % 99_000
        msgs = [("authorization", amount)]
        if i % 20 == 0:
            msgs.append(("void", amount))
        else:
            msgs.append(("capture", amount))
            if i % 10 == 1:
                msgs.append(("refund", amount // 2 or 1))
        if i % LOST_EVERY == LOST_EVERY - 1:
            msgs = msgs[:1]                  # a lost approval: nothing follows it
        msgs = msgs[: lines - made]
        made += len(msgs)
        yield i, msgs
        i += 1


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    out = ""
    for _ in range(6):
        n, r = divmod(n, 36)
        out = digits[r] + out
    return out


_MTI = {"authorization": ("0100", "000000", "M"), "capture": ("0220", "000000", "D"),
        "void": ("0400", "000000", "M"), "refund": ("0200", "200000", "C")}


def generate(folder: Path, lines: int) -> tuple[Path, dict[str, int]]:
    """Write ``folder/paygate.db`` and ``folder/settlement.txt``; the expected counts."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "paygate.db"
    db.unlink(missing_ok=True)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    for statement in SCHEMA:
        conn.execute(statement)
    start = datetime(DAY.year, DAY.month, DAY.day, tzinfo=UTC)
    span = 86_400_000 - 20 * 60_000          # nothing in the day's last minutes
    stans = dict.fromkeys(TERMINALS, 0)
    expected = {"lines": 0, "matched": 0, "missing_ours": 0, "missing_network": 0,
                "actions": 0}
    details: list[str] = []
    totals: dict[tuple[str, str], list[int]] = {}
    intents: list[tuple[Any, ...]] = []
    attempts: list[tuple[Any, ...]] = []
    payments = list(_payments(lines))
    step = span // max(1, len(payments))
    sent = 0
    conn.execute("BEGIN")
    for i, msgs in payments:
        terminal = TERMINALS[i % len(TERMINALS)]
        currency, numeric = CURRENCIES[i % 3 == 0]
        intent = f"pi_{i:024x}"
        created = int(start.timestamp() * 1000) + i * step
        moment = start + timedelta(milliseconds=i * step)
        code = _base36(i)
        intents.append((intent, "acme", msgs[0][1], currency, "manual", "succeeded", created,
                        created, "", "{}", 0, msgs[0][1], 0, "tok_x", None, "", 5))
        auth_id, auth_rrn, auth_stan, auth_tx = "", "", "", ""
        for n, (kind, amount) in enumerate(msgs):
            stans[terminal] += 1
            stan = f"{stans[terminal]:06d}"
            rrn = f"{moment.year % 10}{moment.timetuple().tm_yday:03d}{moment.hour:02d}{stan}"
            tx = f"{moment:%m%d%H%M%S}"
            lost = i % LOST_EVERY == LOST_EVERY - 1
            status = "unknown" if lost else "approved"
            attempt = f"att_{i:020x}{n:04x}"
            if kind == "authorization":
                auth_id, auth_rrn, auth_stan, auth_tx = attempt, rrn, stan, tx
            sent_rrn = auth_rrn
            mti, pc, sign = _MTI[kind]
            request = {"t": mti, "3": pc, "4": f"{amount:012d}", "7": tx, "11": stan,
                       "32": "440001", "37": sent_rrn, "41": terminal, "42": MERCHANT,
                       "49": numeric}
            if kind != "authorization":
                request["90"] = f"0100{auth_stan}{auth_tx}0000044000100000000000"
            attempts.append((
                attempt, intent, kind, status, amount, currency, stan, rrn, tx, terminal,
                created + n, created + n, 0 if lost else amount, "" if lost else "00",
                code if kind == "authorization" and not lost else "",
                "" if kind == "authorization" else auth_id, "",
                json.dumps(request, sort_keys=True, separators=(",", ":"))))
            sent += 1
            dropped = sent % DROPPED_EVERY == 0 and not lost
            if dropped:
                expected["missing_network"] += 1
                continue
            if lost:
                expected["missing_ours"] += 1
                expected["actions"] += 1
            else:
                expected["matched"] += 1
            details.append("|".join((
                "D", str(len(details) + 1), DAY.isoformat(), f"{moment:%H%M%S}", mti, pc, stan,
                sent_rrn, code, f"{amount:012d}", numeric, sign, MERCHANT, terminal,
                "" if kind == "authorization" else auth_stan)))
            t = totals.setdefault((numeric, sign), [0, 0])
            t[0] += 1
            t[1] += amount
        if len(attempts) >= 50_000:
            _flush(conn, intents, attempts)
    _flush(conn, intents, attempts)
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    expected["lines"] = len(details)
    path = folder / "settlement.txt"
    with open(path, "w", encoding="ascii", newline="\n") as fh:
        fh.write(f"H|NETSIM|1|{DAY.isoformat()}|{DAY + timedelta(days=1)}T00:05:00Z\n")
        for chunk in range(0, len(details), 100_000):
            fh.write("\n".join(details[chunk:chunk + 100_000]) + "\n")
        for numeric in sorted({c for c, _ in totals}):
            per = [totals.get((numeric, s), [0, 0]) for s in ("D", "C", "M")]
            fh.write(f"S|{numeric}|{per[0][0]}|{per[0][1]}|{per[1][0]}|{per[1][1]}|"
                     f"{per[2][0]}|{per[2][1]}\n")
        fh.write(f"T|{len(details)}|{len({c for c, _ in totals})}\n")
    return path, expected


def _flush(conn: sqlite3.Connection, intents: list[tuple[Any, ...]],
           attempts: list[tuple[Any, ...]]) -> None:
    conn.executemany(f"INSERT INTO payment_intents VALUES ({', '.join('?' * 17)})", intents)
    conn.executemany(f"INSERT INTO attempts VALUES ({', '.join('?' * 18)})", attempts)
    intents.clear()
    attempts.clear()


def self_check() -> None:
    """The generator writes what netsim's own parser accepts."""
    with tempfile.TemporaryDirectory() as tmp:
        path, expected = generate(Path(tmp), 2_000)
        parsed = parse_settlement(path)
        assert len(parsed.details) == expected["lines"], "generator and netsim disagree"


def run_once(paygate: str, path: Path, folder: Path) -> tuple[float, dict[str, Any]]:
    out = folder / "report.json"
    started = time.perf_counter()
    proc = subprocess.run([paygate, "reconcile", "settlement", str(path), "--data-dir",
                           str(folder), "--json", str(out)], capture_output=True, text=True,
                          check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"paygate reconcile settlement failed ({proc.returncode}):\n"
                         f"{proc.stdout}{proc.stderr}")
    report: dict[str, Any] = json.loads(out.read_text())
    return elapsed, report


def _yardstick() -> Any:
    """bench/yardstick.py's functions (run by path: this folder is off the import path)."""
    return SimpleNamespace(**runpy.run_path(str(Path(__file__).with_name("yardstick.py"))))


def main() -> int:
    parser = argparse.ArgumentParser(description="settlement matching, 1M lines vs the store")
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None,
                        help="where to generate (kept; default: a temporary folder)")
    args = parser.parse_args()
    paygate = str(Path(sys.executable).parent / "paygate")
    self_check()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="bench-settlement-"))
    try:
        started = time.perf_counter()
        path, expected = generate(folder, args.lines)
        os.sync()                    # no writeback of the generated files during the rounds
        size = path.stat().st_size + (folder / "paygate.db").stat().st_size
        print(f"generated {expected['lines']} lines and their attempts in "
              f"{time.perf_counter() - started:.1f} s ({size / 1e6:.0f} MB)", flush=True)
        times = []
        yardstick = _yardstick()
        before: float = yardstick.rsa_rate()
        for round_ in range(args.rounds):
            elapsed, report = run_once(paygate, path, folder)
            counts = report["summary"]["counts"]
            got = {k: counts[k] for k in ("matched", "missing_ours", "missing_network")}
            want = {k: expected[k] for k in got}
            if got != want or len(report["actions"]) != expected["actions"]:
                raise SystemExit(f"unexpected classification: {got} != {want}")
            times.append(elapsed)
            print(f"round {round_ + 1}: {elapsed:.2f} s (load average "
                  f"{os.getloadavg()[0]:.1f})", flush=True)
        after: float = yardstick.rsa_rate()
        median = statistics.median(times)
        lines = expected["lines"]
        print(f"settlement benchmark: {lines} lines against {lines + expected['missing_network']}"
              f" attempts, full `paygate reconcile settlement` path, median of {args.rounds}")
        print(yardstick.bracket(before, after))
        print(f"{median:.2f} s total, {lines / median:,.0f} lines/s "
              f"(goal <= {GOAL_SECONDS:.0f} s: {'met' if median <= GOAL_SECONDS else 'NOT met'})")
        print(f"classes: {json.dumps(report['summary']['counts'], sort_keys=True)}, "
              f"actions: {len(report['actions'])}")
        return 0 if median <= GOAL_SECONDS else 1
    finally:
        if args.dir is None:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
