"""``paygate reconcile``: the reconciler's command group.

* ``paygate reconcile settlement FILE [--data-dir DIR] [--json OUT] [--day YYYY-MM-DD]``
  matches the network's settlement file of a day against our attempts
  (``reconciler.settlement``): it reads ``DIR/paygate.db`` read-only, prints a short
  table, writes the JSON report (default ``DIR/reports/settlement-<day>.json``, mode
  0600) and records the actions in ``settlement_actions`` of ``DIR/paygate.db`` with
  ``INSERT OR IGNORE`` (running it again on the same file changes nothing). Exit
  status: 0 all matched, 1 alerts or actions, 2 a bad or unreadable file (nothing is
  written then), an input or report path that is not a regular file, or a missing
  database.
* ``paygate reconcile run [--once]`` (also the default, ``paygate reconcile [--once]``):
  the worker that resolves unknown attempts (``reconciler.run_cli``).
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import stat
import sys
import time
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from reconciler.settlement import (
    ACTIONS_SCHEMA,
    MARGIN_MS,
    Action,
    Matcher,
    OurLine,
    SettlementError,
    SettlementReader,
    day_bounds,
)
from reconciler.settlement_file import BackgroundCheck

__all__ = ["load_ours", "record_actions", "register", "settle"]

_PROG: Final = "paygate reconcile settlement"

# Our attempts of the day as settlement sees them: follow-ups (capture, refund, void,
# release, timeout reversal) carry their authorization's RRN in field 37 and its
# approval code; the amount is what an approved attempt did.
_LOAD: Final = """
SELECT a.id, a.kind, a.status, a.terminal_id, a.stan,
       CASE WHEN a.kind = 'authorization' THEN a.rrn ELSE coalesce(o.rrn, a.rrn) END,
       a.created,
       CASE WHEN a.kind = 'authorization' THEN a.approval_code
            ELSE coalesce(o.approval_code, '') END,
       CASE WHEN a.status = 'approved' AND a.approved_amount > 0 THEN a.approved_amount
            ELSE a.amount END,
       a.currency, a.transmitted
FROM attempts AS a LEFT JOIN attempts AS o ON o.id = a.original_attempt_id
WHERE a.created >= ? AND a.created < ?
"""


def register(sub: Any) -> None:
    """Add ``reconcile`` (with its subcommands) to paygate's parser."""
    reconcile: argparse.ArgumentParser = sub.add_parser(
        "reconcile", help="the reconciler: resolve unknown attempts (run, the default), "
                          "match a settlement file (settlement)",
        description="Without a subcommand: run the worker that resolves unknown attempts "
                    "(as `paygate reconcile run`).")
    commands = reconcile.add_subparsers(dest="reconcile_command", metavar="RECONCILE_COMMAND")
    settlement = commands.add_parser(
        "settlement", help="match the network's settlement file of a day against our "
                           "attempts; report, and record the clear actions",
        description="Exit status: 0 all matched, 1 alerts or actions, 2 a bad file.")
    settlement.add_argument("file", type=Path, metavar="FILE",
                            help="the settlement file (paygate netsim settle)")
    settlement.add_argument("--data-dir", type=Path, default=Path("var"),
                            help="the gateway's data directory (default: var)")
    settlement.add_argument("--json", type=Path, default=None, metavar="OUT",
                            help="where to write the JSON report (default: "
                                 "DATA_DIR/reports/settlement-DAY.json)")
    settlement.add_argument("--day", type=_day, default=None, metavar="YYYY-MM-DD",
                            help="the day the file must be for (default: the file's)")
    settlement.set_defaults(func=settle)
    # The worker's commands: `paygate reconcile run`, and the default of the group.
    from reconciler.run_cli import add_run_arguments, add_run_command, run_command

    add_run_command(commands)
    add_run_arguments(reconcile)
    reconcile.set_defaults(func=run_command)


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError("expected a day as YYYY-MM-DD") from exc


def load_ours(db_path: Path, day: date, margin_ms: int = MARGIN_MS) -> list[OurLine]:
    """Our attempts created within ``margin_ms`` of ``day`` (UTC), read-only."""
    low, high = day_bounds(day, margin_ms)
    conn = sqlite3.connect(f"file:{quote(str(db_path.resolve()))}?mode=ro", uri=True)
    try:
        make = tuple.__new__
        return [make(OurLine, row) for row in conn.execute(_LOAD, (low, high))]
    finally:
        conn.close()


def record_actions(db_path: Path, actions: Sequence[Action], now_ms: int) -> int:
    """Record ``actions`` in ``settlement_actions`` (INSERT OR IGNORE, one transaction);
    returns how many were new."""
    if not actions:
        return 0
    from gateway.store.sqlite import connect

    conn = connect(db_path)
    try:
        for statement in ACTIONS_SCHEMA:
            conn.execute(statement)
        before = conn.total_changes
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT OR IGNORE INTO settlement_actions (day, key, kind, payload, created) "
                "VALUES (?, ?, ?, ?, ?)",
                [(a.day, a.key, a.kind, _canonical(a), now_ms) for a in actions])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return conn.total_changes - before
    finally:
        conn.close()


def _canonical(action: Action) -> str:
    from dataclasses import asdict

    return json.dumps(asdict(action), sort_keys=True, separators=(",", ":"))


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr)
    return 2


def _not_regular(path: Path) -> str | None:
    """Why the settlement file at ``path`` must not be opened (a FIFO would block the
    open, a device never ends), or None; a missing file is left to the open."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else "not a regular file"


def _unwritable(out: Path) -> str | None:
    """Why the report must not be written to ``out`` (it is replaced, not written
    into: a directory would fail after the match, a device would be replaced), or
    None. Missing directories are created."""
    try:
        mode = out.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None                     # a parent that is not a directory: below
    except OSError as exc:
        return exc.strerror or str(exc)
    if mode is not None and stat.S_ISDIR(mode):
        return "it is a directory"
    if mode is not None and not stat.S_ISREG(mode):
        return "it exists and is not a regular file"
    for parent in out.parents:
        if parent.exists():
            return None if parent.is_dir() else f"{parent} is not a directory"
    return None


def settle(args: argparse.Namespace) -> int:
    """The ``settlement`` subcommand."""
    # Millions of small tuples and no reference cycles: the cyclic collector would only
    # walk them again and again (a third of the run time for a million lines).
    gc.disable()
    try:
        return _settle(args)
    finally:
        gc.enable()


def _settle(args: argparse.Namespace) -> int:
    from reconciler.report import build_report, render_table, write_report

    path: Path = args.file
    db_path: Path = args.data_dir / "paygate.db"
    refused = _not_regular(path)
    if refused:
        return _fail(f"{path}: cannot read the settlement file: {refused}")
    try:
        reader = SettlementReader(path)
    except SettlementError as exc:
        return _fail(f"{path}: bad settlement file: {exc}")
    except OSError as exc:
        return _fail(f"{path}: cannot read: {exc.strerror or exc}")
    with reader:
        header = reader.header
        day = header.day
        if args.day is not None and args.day != day:
            return _fail(f"{path} is the settlement of {day}, not of {args.day}")
        if not db_path.is_file():
            return _fail(f"no database at {db_path} (use --data-dir)")
        out: Path = args.json or args.data_dir / "reports" / f"settlement-{day.isoformat()}.json"
        refused = _unwritable(out)
        if refused:
            return _fail(f"cannot write the report to {out}: {refused}")
        # Every check of the file runs on the other core while this process matches the
        # lines as they come; nothing is written until the check says the file is whole.
        check = BackgroundCheck(path)
        failure: Exception | None = None
        try:
            # Kept referenced until the end: freeing each attempt as it is matched costs
            # more (cache misses in the hot loop) than freeing them all at once.
            ours = load_ours(db_path, day)
            matcher = Matcher(day, ours)
            matcher.feed_fields(reader.fields())
        except sqlite3.Error as exc:
            check.cancel()
            return _fail(f"{db_path}: {exc}")
        except (SettlementError, ValueError, IndexError) as exc:
            failure = exc           # a malformed line: the check says which, below
        try:
            count, totals = check.result()
        except SettlementError as exc:
            return _fail(f"{path}: bad settlement file: {exc}")
        except OSError as exc:
            return _fail(f"{path}: cannot read: {exc}")
        except RuntimeError as exc:     # the check itself failed: nothing is written
            return _fail(f"{path}: the settlement file could not be checked: {exc}")
        if failure is not None or count != matcher.lines:
            return _fail(f"{path}: bad settlement file: {failure or 'details changed while read'}")
    result = matcher.finish(totals)
    write_report(out, build_report(result, header, path.name))
    new = record_actions(db_path, result.actions, int(time.time() * 1000))
    print(render_table(result, header))
    if result.actions:
        print(f"actions recorded in {db_path} (settlement_actions): {new} new, "
              f"{len(result.actions) - new} already there")
    print(f"report: {out}")
    del ours
    return 0 if result.clean else 1
