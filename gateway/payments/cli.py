"""``paygate audit verify``: walk the events hash chain of a data directory's store.

Exit status: 0 the chain is intact, 1 it is broken (the first bad seq is
printed), 2 there is nothing to verify (no database, or no events table) or
the arguments are wrong.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    audit = sub.add_parser("audit", help="check the payments audit trail (events hash chain)")
    audit_sub = audit.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND",
                                     required=True)
    verify = audit_sub.add_parser("verify", help="walk the events chain and report the first "
                                                 "edited, deleted or reordered row")
    verify.add_argument("--data-dir", type=Path, default=Path("var"),
                        help="the gateway's data directory (default: var)")
    verify.add_argument("--db", type=Path, default=None,
                        help="the SQLite file (default: DATA_DIR/paygate.db)")
    verify.add_argument("--anchor", default=None, metavar="SEQ:HASH",
                        help="a seq and hash saved from an earlier run: the chain must still "
                             "reach it with that hash (detects a truncated tail)")
    verify.set_defaults(func=_verify)


def _verify(args: argparse.Namespace) -> int:
    from gateway.payments.audit import Anchor, verify_sqlite

    path: Path = args.db if args.db is not None else args.data_dir / "paygate.db"
    try:
        anchor = None if args.anchor is None else Anchor.parse(args.anchor)
    except ValueError as exc:
        print(f"paygate audit verify: {exc}", file=sys.stderr)
        return 2
    try:
        result = verify_sqlite(path, anchor=anchor)
    except FileNotFoundError:
        print(f"paygate audit verify: no database at {path} (use --data-dir or --db)",
              file=sys.stderr)
        return 2
    except LookupError as exc:
        print(f"paygate audit verify: {exc}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as exc:
        print(f"paygate audit verify: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    if result.ok:
        print(f"ok: {result.checked} events, chain intact, last hash {result.last_hash} "
              f"(seq {result.last_seq})")
        return 0
    print(f"BROKEN at seq {result.first_bad_seq}: {result.problem} "
          f"({result.checked} events verified before it)")
    return 1
