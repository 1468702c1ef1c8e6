"""``paygate netsim``: run the card-network simulator, read its ledger, settle a day.

Owns the command-line surface of netsim only: :func:`register` adds the
``netsim`` command group (``serve``, ``ledger``, ``settle``, and ``replay`` from
:mod:`netsim.certify.replay_cli`) to paygate's parser,
and configures logging (structlog, to stderr) for ``serve``. Everything it does
goes through the package API (:class:`netsim.NetSim`, :class:`netsim.Ledger`,
:func:`netsim.write_settlement`). Cards are only ever shown masked (BIN and
last 4).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.listening import port_number
from gateway.logging import LEVELS
from gateway.loops import add_loop_argument

if TYPE_CHECKING:
    from netsim.server import NetSim

__all__ = ["register"]

_DEFAULT_PORT = 8583
_DEFAULT_LEDGER = "netsim.db"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``netsim`` command group to paygate's subcommands."""
    netsim = subparsers.add_parser(
        "netsim", help="the card-network simulator (issuer host): serve, ledger, settle",
        description="netsim: a card-network (issuer host) simulator over mutual TLS, "
                    "with test-card rules, fault injection, its own ledger and "
                    "settlement files.")
    commands = netsim.add_subparsers(dest="netsim_command", metavar="COMMAND", required=True)

    serve = commands.add_parser(
        "serve", help="run netsim until SIGINT/SIGTERM",
        description="Run netsim over mutual TLS until SIGINT or SIGTERM. Prints "
                    "'netsim listening on HOST:PORT' once bound.")
    serve.add_argument("--cert", required=True, type=Path, help="server certificate (PEM)")
    serve.add_argument("--key", required=True, type=Path, help="server private key (PEM)")
    serve.add_argument("--ca", required=True, type=Path,
                       help="CA (PEM) that client certificates must chain to")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default %(default)s)")
    serve.add_argument("--port", type=port_number, default=_DEFAULT_PORT,
                       help="port to bind, 0 for any free port (default %(default)s)")
    serve.add_argument("--port-file", type=Path,
                       help="also write the bound port to this file once listening")
    serve.add_argument("--ledger", type=Path, default=Path(_DEFAULT_LEDGER),
                       help="ledger file, created if missing (default %(default)s)")
    add_loop_argument(serve)
    serve.add_argument("--latency", type=float, default=0.0,
                       help="seconds added before each response")
    serve.add_argument("--jitter", type=float, default=0.0,
                       help="up to this many more seconds per response, uniformly random")
    serve.add_argument("--drop-rate", type=float, default=0.0,
                       help="probability a response is not sent (the request is recorded)")
    serve.add_argument("--reset-rate", type=float, default=0.0,
                       help="probability a request resets its connection instead of an answer")
    serve.add_argument("--slow-delay", type=float, default=3.0,
                       help="seconds before the slow test card is answered (default %(default)s)")
    serve.add_argument("--seed", type=int, help="seed for the fault decisions")
    serve.add_argument("--faults-file", type=Path,
                       help="JSON file of faults (latency, jitter, drop_rate, reset_rate, "
                            "refuse) applied at run time on SIGHUP")
    serve.add_argument("--log-level", default="info",
                       choices=LEVELS,
                       help="log level on stderr (default %(default)s)")
    serve.add_argument("--record", type=Path, metavar="FILE",
                       help="write every frame to FILE (JSON lines, replayable with "
                            "`paygate netsim replay`; non-test PANs and CVCs masked)")
    serve.set_defaults(func=_serve)

    from netsim.certify.replay_cli import register_replay
    register_replay(commands)

    ledger = commands.add_parser("ledger", help="print the ledger's entries (cards masked)",
                                 description="Print netsim's ledger entries, oldest first.")
    ledger.add_argument("--ledger", type=Path, default=Path(_DEFAULT_LEDGER),
                        help="ledger file (default %(default)s)")
    ledger.add_argument("--day", type=_day, help="only entries of this UTC day (YYYY-MM-DD)")
    ledger.add_argument("--kind", choices=("authorization", "capture", "refund", "reversal"),
                        help="only entries of this kind")
    ledger.add_argument("--json", action="store_true", help="print a JSON array")
    ledger.set_defaults(func=_ledger)

    settle = commands.add_parser("settle", help="write a day's settlement file",
                                 description="Write the settlement file of one UTC day "
                                             "(format: netsim/SETTLEMENT.md).")
    settle.add_argument("--ledger", type=Path, default=Path(_DEFAULT_LEDGER),
                        help="ledger file (default %(default)s)")
    settle.add_argument("--day", type=_day, required=True, help="the UTC day (YYYY-MM-DD)")
    settle.add_argument("--out", type=Path, required=True, help="file to write")
    settle.set_defaults(func=_settle)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a day as YYYY-MM-DD") from None


def _fail(message: str) -> int:
    print(f"paygate netsim: {message}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- serve


def _configure_logging(level: str) -> None:
    """One JSON object per line on stderr, through the gateway's redacting pipeline (so
    no PAN, track data or CVC reaches netsim's log either, whatever a call site passes)."""
    from gateway.logging import configure_logging

    configure_logging(level, json=True)


def _serve(args: argparse.Namespace) -> int:
    import sqlite3
    import ssl

    from gateway.loops import run
    from gateway.pki import Credentials, server_context
    from netsim.faults import Faults
    from netsim.ledger import Ledger
    from netsim.server import NetSim

    _configure_logging(args.log_level)
    try:
        faults = Faults(latency=args.latency, jitter=args.jitter, drop_rate=args.drop_rate,
                        reset_rate=args.reset_rate, seed=args.seed)
    except (TypeError, ValueError) as exc:
        return _fail(str(exc))
    if args.slow_delay < 0:
        return _fail("--slow-delay must be >= 0")
    try:
        context = server_context(Credentials(cert=args.cert, key=args.key, ca=args.ca))
    except (OSError, ssl.SSLError) as exc:
        return _fail(f"cannot load the TLS credentials: {exc}")
    try:
        ledger = Ledger(args.ledger)
    except (OSError, sqlite3.Error) as exc:
        return _fail(f"cannot open the ledger {args.ledger}: {exc}")
    recorder = None
    if args.record is not None:
        from netsim.certify.recorder import Recorder

        try:
            recorder = Recorder(args.record)
        except OSError as exc:
            ledger.close()
            return _fail(f"cannot write the recording {args.record}: {exc}")
    sim = NetSim(context, ledger, host=args.host, port=args.port, faults=faults,
                 slow_delay=args.slow_delay,
                 on_frame=recorder.frame if recorder is not None else None)
    try:
        return run(_run(sim, args.port_file, args.faults_file), args.loop)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc}")
    finally:
        ledger.close()
        if recorder is not None:
            recorder.close()


async def _run(sim: NetSim, port_file: Path | None, faults_file: Path | None) -> int:
    import asyncio
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if faults_file is not None:
        loop.add_signal_handler(signal.SIGHUP, _reload_faults, sim, faults_file)
    async with sim:
        print(f"netsim listening on {sim.host}:{sim.port}", flush=True)
        if port_file is not None:
            tmp = port_file.with_name(f".{port_file.name}.tmp")
            tmp.write_text(f"{sim.port}\n")
            os.replace(tmp, port_file)
        await stop.wait()
    print("netsim stopped", flush=True)
    return 0


_FAULT_KEYS = ("latency", "jitter", "drop_rate", "reset_rate", "refuse")


def _reload_faults(sim: NetSim, path: Path) -> None:
    """SIGHUP: apply the faults in the JSON file ``path`` to the running netsim.

    The file holds any of latency, jitter, drop_rate, reset_rate (numbers) and
    refuse (boolean); keys it leaves out keep their value. A bad file changes
    nothing and is logged.
    """
    import structlog

    log = structlog.get_logger("netsim")
    try:
        wanted = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(wanted, dict) or set(wanted) - set(_FAULT_KEYS):
            raise ValueError(f"expected an object with keys among {', '.join(_FAULT_KEYS)}")
        before = {key: getattr(sim.faults, key) for key in _FAULT_KEYS}
        try:
            for key, value in wanted.items():
                setattr(sim.faults, key, value)
        except (TypeError, ValueError):
            for key, value in before.items():
                setattr(sim.faults, key, value)
            raise
    except (OSError, ValueError, TypeError) as exc:
        log.error("faults.reload_failed", path=str(path), error=str(exc))
        return
    log.warning("faults.reloaded", **{key: getattr(sim.faults, key) for key in _FAULT_KEYS})


# ---------------------------------------------------------------- ledger


def _ledger(args: argparse.Namespace) -> int:
    import sqlite3

    from netsim.ledger import Ledger

    try:
        entries = Ledger(args.ledger, create=False).entries(kind=args.kind, day=args.day)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return _fail(f"cannot read the ledger {args.ledger}: {exc}")
    if args.json:
        rows = []
        for e in entries:
            row: dict[str, Any] = {"id": e.id, "kind": str(e.kind), "day": e.day.isoformat(),
                                   "created_at": e.created_at.isoformat()}
            for name in ("mti", "processing_code", "stan", "transmitted", "rrn", "terminal",
                         "merchant", "acquirer", "amount", "currency"):
                row[name] = getattr(e, name)
            row["card"] = e.masked_card
            for name in ("approval_code", "response_code", "outcome", "effect", "changed",
                         "authorization_id", "original_stan", "original_transmitted"):
                row[name] = getattr(e, name)
            rows.append(row)
        json.dump(rows, sys.stdout, indent=2)
        print()
        return 0
    columns = ("time", "kind", "mti", "stan", "rrn", "terminal", "merchant", "card",
               "amount", "cur", "rc", "approval", "outcome", "effect", "orig")
    widths = (19, 13, 4, 6, 12, 8, 15, 16, 12, 3, 2, 8, 18, 12, 6)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for e in entries:
        values = (e.created_at.strftime("%Y-%m-%d %H:%M:%S"), str(e.kind), e.mti, e.stan, e.rrn,
                  e.terminal, e.merchant, e.masked_card or "-", str(e.amount), e.currency,
                  e.response_code, e.approval_code or "-", e.outcome, str(e.effect),
                  e.original_stan or "-")
        print("  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip())
    print(f"{len(entries)} entries")
    return 0


# ---------------------------------------------------------------- settle


def _settle(args: argparse.Namespace) -> int:
    import sqlite3

    from netsim.ledger import Ledger
    from netsim.settlement import write_settlement

    try:
        settlement = write_settlement(Ledger(args.ledger, create=False), args.day, args.out)
    except (FileNotFoundError, sqlite3.Error) as exc:
        return _fail(f"cannot read the ledger {args.ledger}: {exc}")
    except OSError as exc:
        return _fail(f"cannot write {args.out}: {exc}")
    print(f"wrote {args.out}: {settlement.trailer.count} details for {args.day.isoformat()}")
    for t in settlement.trailer.totals.values():
        print(f"  {t.currency}: debits {t.debit_count} / {t.debit_total}, credits "
              f"{t.credit_count} / {t.credit_total}, memo {t.memo_count} / {t.memo_total}")
    return 0
