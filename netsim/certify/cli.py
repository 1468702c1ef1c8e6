"""``paygate certify SUITE``: run a certification suite, print the table, write JUnit.

SUITE is a suite directory or the name of a shipped suite (``base``). The gateway
runs in this process (:func:`netsim.certify.runner.run_suite`) on loopback ports,
its data in a temporary directory unless ``--data-dir`` is given; ``--config`` and
``PAYGATE_*`` variables configure it on top of the certification settings. With
``--stack STACK_JSON`` the gateway is one the user starts (``paygate up --no-netsim
--netsim-port PORT``) once the replay host listens on ``--netsim-port``. Exit
status: 0 when every case passed, 1 when one failed, 2 on a bad suite or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["register", "resolve_suite"]


def register(sub: Any) -> None:
    certify = sub.add_parser(
        "certify", help="run a certification suite against the gateway (pass/fail, JUnit)",
        description="Run the scripted network cases of SUITE against a gateway started "
                    "for the run, print a pass/fail table and exit non-zero on any failure.")
    certify.add_argument("suite", metavar="SUITE",
                         help="a suite directory, or a shipped suite's name (base)")
    certify.add_argument("--junit", type=Path, metavar="FILE", help="write JUnit XML here")
    certify.add_argument("--case", action="append", default=[], metavar="NAME",
                         help="run only this case (repeatable)")
    certify.add_argument("--config", type=Path, help="gateway TOML configuration file")
    certify.add_argument("--data-dir", type=Path,
                         help="the gateway's data directory (default: a temporary one)")
    certify.add_argument("--stack", type=Path, metavar="STACK_JSON",
                         help="certify a gateway you start yourself: listen on --netsim-port, "
                              "wait for `paygate up --no-netsim --netsim-port PORT` to sign on "
                              "and to write this stack.json (its data dir holds the PKI)")
    certify.add_argument("--netsim-port", type=int, default=8583,
                         help="with --stack: the port to listen on (default %(default)s)")
    certify.set_defaults(func=_certify)


def resolve_suite(name: str) -> Path:
    """A suite directory: ``name`` itself, or the shipped suite of that name."""
    from netsim.certify import SUITES

    path = Path(name)
    if path.is_dir():
        return path
    return SUITES / name


def _certify(args: argparse.Namespace) -> int:
    from gateway.logging import configure_logging
    from netsim.certify.matchers import CaseError
    from netsim.certify.report import table, write_junit
    from netsim.certify.runner import run_suite
    from netsim.certify.script import load_suite

    try:
        suite = load_suite(resolve_suite(args.suite))
    except CaseError as exc:
        print(f"paygate certify: {exc}", file=sys.stderr)
        return 2
    configure_logging(os.environ.get("PAYGATE_LOGGING_LEVEL", "error"))
    settings = {k: v for k, v in os.environ.items() if k.startswith("PAYGATE_")}
    print(f"certify: suite {suite.name} ({len(suite.cases)} cases) from {suite.path}",
          flush=True)

    def progress(result: Any) -> None:
        print(f"  {'pass' if result.passed else 'FAIL'}  {result.name}", flush=True)

    with tempfile.TemporaryDirectory(prefix="paygate-certify-") as tmp:
        data_dir = args.data_dir or Path(tmp)
        try:
            if args.stack is not None:
                data_dir = args.stack.resolve().parent
                print(f"certify: waiting on 127.0.0.1:{args.netsim_port} for the gateway "
                      f"(paygate up --no-netsim --netsim-port {args.netsim_port})", flush=True)
            results = asyncio.run(run_suite(suite, data_dir, only=args.case,
                                            config_file=args.config, settings=settings,
                                            on_result=progress, external=args.stack,
                                            port=args.netsim_port if args.stack else 0))
        except (ValueError, TimeoutError) as exc:
            print(f"paygate certify: {exc}", file=sys.stderr)
            return 2
    print(table(results))
    if args.junit is not None:
        write_junit(args.junit, suite.name, results)
        print(f"wrote {args.junit}")
    return 0 if all(r.passed for r in results) else 1
