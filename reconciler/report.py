"""The settlement report: JSON for machines, a short table for people.

The JSON (``format`` ``paygate.settlement-report/1``, canonical: sorted keys, no
spaces) holds the file's header, a ``summary`` (counts per class; per currency the
amounts per class and the file's totals), every class with its items, the actions
and the alerts. ``matched`` is a table (``columns`` and ``rows``: line sequence,
attempt id, how they were paired) since a day may have a million of them; the
other classes list each line (all its fields) and/or attempt (id, kind, status,
trace, amount) with a note. No card data: the file has none, nor do attempts.

Nothing in it depends on when it was made, so the same file and the same store give
byte-for-byte the same report.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from gateway.payments import money
from reconciler.settlement import (
    CLASSES,
    MATCHED,
    NEXT_DAY,
    Header,
    Item,
    NetLine,
    OurLine,
    Reconciliation,
)

__all__ = ["FORMAT", "build_report", "render_table", "write_report"]

FORMAT: Final = "paygate.settlement-report/1"
#: How many alerts the table shows (the JSON has them all).
TABLE_ALERTS: Final = 20


def _line(line: NetLine | None) -> dict[str, Any] | None:
    return None if line is None else line._asdict()


def _ours(ours: OurLine | None) -> dict[str, Any] | None:
    return None if ours is None else ours._asdict()


def _item(item: Item) -> dict[str, Any]:
    return {"line": _line(item.line), "attempt": _ours(item.ours), "note": item.note,
            "by": item.by, "action": item.action}


def build_report(result: Reconciliation, header: Header, source: str) -> dict[str, Any]:
    """The JSON document of ``result`` (``source``: the file's name, as given)."""
    summary = result.summary
    report: dict[str, Any] = {
        "format": FORMAT,
        "day": result.day.isoformat(),
        "file": {"name": source, "network": header.network, "version": header.version,
                 "created_at": header.created_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                 "lines": summary.lines},
        "summary": {
            "clean": result.clean,
            "attempts": summary.attempts,
            "counts": summary.counts,
            "actions": len(result.actions),
            "alerts": len(result.alerts),
            "currencies": {
                currency: {"code": _alpha(currency), "amounts": summary.amounts.get(currency, {}),
                           "network": summary.network.get(currency, {})}
                for currency in sorted(summary.amounts.keys() | summary.network.keys())},
        },
        MATCHED: {"columns": ["seq", "attempt_id", "by"],
                  "rows": result.matched},      # tuples: JSON arrays
        "actions": [asdict(a) for a in result.actions],
        "alerts": [asdict(a) for a in result.alerts],
    }
    for cls in CLASSES[1:]:
        report[cls] = [_item(i) for i in result.items(cls)]
    return report


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write ``report`` to ``path`` atomically, readable by its owner only (0600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            # dumps, not dump: only the one-shot encoder is the C one.
            fh.write(json.dumps(report, sort_keys=True, separators=(",", ":")) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


_BY_NUMERIC: Final = {c.numeric: c for c in money.CURRENCIES.values()}


def _alpha(numeric: str) -> str:
    found = _BY_NUMERIC.get(numeric)
    return "" if found is None else found.code


def _money(numeric: str, amount: int) -> str:
    currency = _BY_NUMERIC.get(numeric)
    if currency is None:
        return f"{numeric} {amount}"
    if currency.exponent == 0:
        return f"{currency.code.upper()} {amount}"
    major, minor = divmod(amount, 10 ** currency.exponent)
    return f"{currency.code.upper()} {major}.{minor:0{currency.exponent}d}"


def render_table(result: Reconciliation, header: Header) -> str:
    """A short text for people: counts and amounts per class, the actions, the alerts."""
    s = result.summary
    out = [f"settlement {result.day.isoformat()} from {header.network} (file made "
           f"{header.created_at:%Y-%m-%dT%H:%M:%SZ}): {s.lines} lines, {s.attempts} "
           f"attempts of ours",
           f"{'class':<16} {'count':>9}  amounts"]
    for cls in CLASSES:
        amounts = ", ".join(_money(c, per[cls]) for c, per in s.amounts.items() if cls in per)
        out.append(f"{cls:<16} {s.counts.get(cls, 0):>9}  {amounts}".rstrip())
    for currency, totals in s.network.items():
        out.append(f"network {(_alpha(currency) or currency).upper()}: debit "
                   f"{_money(currency, totals['debit'])}, credit "
                   f"{_money(currency, totals['credit'])}, net {_money(currency, totals['net'])}")
    if result.actions:
        out.append(f"actions: {len(result.actions)}")
        out.extend(f"  {a.kind} terminal {a.terminal} stan {a.stan} rrn {a.rrn} "
                   f"{_money(a.currency, a.amount)}: {a.reason}"
                   for a in result.actions[:TABLE_ALERTS])
    alerts = [a for a in result.alerts if a.cls != NEXT_DAY]
    if alerts:
        out.append(f"alerts: {len(alerts)}")
        out.extend(f"  {a.cls}: {a.detail}" for a in alerts[:TABLE_ALERTS])
        if len(alerts) > TABLE_ALERTS:
            out.append(f"  ... and {len(alerts) - TABLE_ALERTS} more (see the JSON report)")
    if result.clean:
        out.append("all matched")
    return "\n".join(out)
