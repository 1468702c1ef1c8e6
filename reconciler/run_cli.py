"""``paygate reconcile run [--once]``: the reconciler alone, outside ``paygate up``.

It opens the gateway's store (``DATA_DIR/paygate.db``) and STAN counter
(``DATA_DIR/stan.db``), connects to the network as configured (``network.host``,
``network.port``, the gateway's client certificate: netsim must be running, e.g.
``paygate netsim serve``) and works the durable queue: every attempt left unknown
is reversed (authorizations) or repeated (captures, voids, releases, refunds) until
the network has answered. Without ``--once`` it runs until SIGINT/SIGTERM; with
``--once`` it stops as soon as a pass finds nothing due, and prints a JSON summary
either way. ``paygate up`` runs the same worker in its own process (``gateway.stack``):
run this one only while the gateway is down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gateway.listening import port_number
from gateway.loops import add_loop_argument, run

#: Seconds between passes while nothing is due (without ``--once``).
INTERVAL = 0.5


def add_run_command(reconcile_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``run`` to the ``paygate reconcile`` subcommands; returns its parser."""
    parser: argparse.ArgumentParser = reconcile_subparsers.add_parser(
        "run", help="resolve every attempt left unknown (reversals, repeats) against the "
                    "network; loops until stopped, or --once")
    add_run_arguments(parser)
    parser.set_defaults(func=run_command)
    return parser


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true",
                        help="stop when a pass finds nothing due (default: loop until "
                             "SIGINT/SIGTERM)")
    add_loop_argument(parser)
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: var)")
    parser.add_argument("--netsim-port", type=port_number,
                        help="port of the network (default: network.port of the config)")


def run_command(args: argparse.Namespace) -> int:
    """The ``run`` subcommand (also fine as ``paygate reconcile``'s default: arguments
    missing from ``args`` take their defaults)."""
    from gateway.config import ConfigError
    from gateway.logging import configure_logging
    from gateway.up import stack_config

    options = argparse.Namespace(config=getattr(args, "config", None),
                                 data_dir=getattr(args, "data_dir", None),
                                 netsim_port=getattr(args, "netsim_port", None),
                                 grpc=None, http=None)
    try:
        config = stack_config(options)
    except ConfigError as exc:
        print(f"paygate reconcile run: {exc}")
        return 2
    configure_logging(config.logging.level, json=config.logging.json)
    return run(reconcile(config, once=bool(getattr(args, "once", False))),
               getattr(args, "loop", "auto"))


async def reconcile(config: Any, *, once: bool, interval: float = INTERVAL) -> int:
    """Work the queue of the store under ``config.data_dir``: 0; 1 if the network cannot
    be reached; 2 without a database or the gateway's client certificate."""
    from gateway.network import NetworkClient, NotSent, SqliteStanStore, TraceAllocator
    from gateway.payments.sqlite_store import SqlitePaymentStore
    from gateway.pki import client_context
    from gateway.store.sqlite import SqliteDatabase
    from reconciler.queue import ReconcilerQueue
    from reconciler.worker import LateReplies, Reconciler

    data: Path = config.data_dir
    net = config.network
    if not (data / "paygate.db").is_file():
        print(f"paygate reconcile run: no database at {data / 'paygate.db'} (use --data-dir)")
        return 2
    try:
        tls = client_context(net.tls.credentials())
    except (OSError, ValueError) as exc:
        print(f"paygate reconcile run: the gateway's client certificate: {exc}")
        return 2
    db = SqliteDatabase(data / "paygate.db")
    stans = SqliteStanStore(data / "stan.db", reserve=config.network.stan_reserve)
    try:
        store = SqlitePaymentStore(db)
        queue = ReconcilerQueue(db)
        trace = TraceAllocator(stans, net.terminal_id)
        late = LateReplies()
        client = NetworkClient(net.host, net.port, tls,
                               terminal_id=net.terminal_id, acquirer_id=net.acquirer_id,
                               trace=trace, deadline=net.deadline_seconds,
                               max_in_flight=net.max_in_flight, connections=net.connections,
                               on_late_response=late)
        try:
            await client.start()
        except NotSent as exc:
            print(f"paygate reconcile run: the network at {net.host}:{net.port} is not "
                  f"reachable ({exc.reason})")
            return 1
        try:
            reconciler = Reconciler(store, queue, client, trace, config.merchant_directory(),
                                    acquirer_id=net.acquirer_id,
                                    stale_after=max(30.0, 5 * net.deadline_seconds))
            late.target = reconciler.on_late_response
            if once:
                while (await reconciler.run_once()).due:
                    pass
            else:
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                await reconciler.run(stop, interval)
        finally:
            await client.close()
        pending = await queue.entries()
        print(json.dumps({**asdict(reconciler.stats), "pending": len(pending),
                          "checkpoint": await queue.checkpoint()}), flush=True)
        return 0
    finally:
        stans.close()
        db.close()
