"""The ``paygate`` command line: one entry point, one subcommand per job.

``paygate demo`` runs the main job on embedded defaults (``gateway.demo``);
``paygate up`` the whole stack (``gateway.up``); ``paygate pki init`` and
``paygate dev-certs`` write development certificates for mutual TLS;
``paygate netsim ...`` runs the network simulator (``netsim.cli``);
``paygate edge serve`` the tokenization edge (``gateway.edge.cli``);
``paygate hsm ...`` operates the HSM's keys (``hsm_sim.cli``); ``paygate audit``,
``paygate config``, ``paygate reconcile`` and ``paygate certify`` the rest.
Every command logs through :mod:`gateway.logging`'s redacting pipeline, to stderr.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway import __version__


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run

    return run(args.data_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="paygate",
        description="paygate: a card-payment gateway (gRPC payments API, ISO 8583 "
                    "network link, HSM-backed card vault, reconciler).",
    )
    parser.add_argument("--version", action="version", version=f"paygate {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="the codec on a sample 0100/0110, then scripted "
                                       "payments through the whole stack, checked against "
                                       "the network")
    demo.add_argument("--data-dir", type=Path, help="keep the stack's files here "
                                                    "(default: a temporary folder)")
    demo.set_defaults(func=_demo)
    pki = sub.add_parser("pki", help="development certificates for mutual TLS")
    pki_sub = pki.add_subparsers(dest="pki_command", metavar="PKI_COMMAND", required=True)
    init = pki_sub.add_parser("init", help="create a dev CA with netsim (server) and gateway "
                                           "(client) certificates")
    init.add_argument("--dir", type=Path, default=Path("var/pki"),
                      help="where to write the PEM files (default: var/pki)")
    init.set_defaults(func=_pki_init)
    from netsim.cli import register as register_netsim
    register_netsim(sub)
    from gateway.edge.cli import register as register_edge
    register_edge(sub)
    from hsm_sim.cli import register as register_hsm
    register_hsm(sub)
    from gateway.payments.cli import register as register_audit
    register_audit(sub)
    from gateway.config_cli import register as register_config
    register_config(sub)
    from gateway.up import register as register_up
    register_up(sub)
    from reconciler.cli import register as register_reconcile
    register_reconcile(sub)
    from netsim.certify.cli import register as register_certify
    register_certify(sub)
    return parser


def _pki_init(args: argparse.Namespace) -> int:
    from gateway.pki import Authority

    authority = Authority("paygate dev CA")
    for name, server in (("netsim", True), ("gateway", False)):
        creds = authority.write(args.dir, name, server=server)
        print(f"{name}: cert={creds.cert} key={creds.key} ca={creds.ca}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    # Every command logs through the redacting pipeline, to stderr (stdout stays the
    # command's own output): warnings and errors, until a command configures its own level.
    from gateway.logging import configure_logging
    configure_logging("warning")
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
