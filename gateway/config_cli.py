"""``paygate config show`` (the effective configuration, secrets masked) and
``paygate dev-certs`` (a dev CA and the certificates of every mutual-TLS hop)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    """Add the ``config`` and ``dev-certs`` commands to paygate's subcommands."""
    config = sub.add_parser("config", help="the gateway's configuration (TOML + environment)")
    config_sub = config.add_subparsers(dest="config_command", metavar="CONFIG_COMMAND",
                                       required=True)
    show = config_sub.add_parser(
        "show", help="print the effective configuration as TOML, secrets masked",
        description="Print the effective configuration (embedded defaults, the TOML file, "
                    "PAYGATE_* environment variables) as TOML, secrets masked. Exits 1 "
                    "if it is not valid.")
    show.add_argument("--config", type=Path,
                      help="the TOML file (default: $PAYGATE_CONFIG, else none)")
    show.set_defaults(func=_show)

    certs = sub.add_parser(
        "dev-certs", help="a dev CA and certificates for every mutual-TLS hop",
        description="Write a dev CA (ca.crt, ca.key) and gateway-server, netsim (server) and "
                    "gateway, checkout-service (client) certificates as NAME.crt/NAME.key "
                    "(keys 0600). Existing files are kept unless --force.")
    certs.add_argument("--out", type=Path,
                       help="folder to write (default: DATA_DIR/pki of the configuration)")
    certs.add_argument("--config", type=Path,
                       help="the TOML file giving DATA_DIR (default: $PAYGATE_CONFIG)")
    certs.add_argument("--force", action="store_true",
                       help="make a new CA and replace every certificate")
    certs.set_defaults(func=_dev_certs)


def _show(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config, render_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"paygate config: {exc}", file=sys.stderr)
        return 1
    sys.stdout.write(render_config(config))
    return 0


def _dev_certs(args: argparse.Namespace) -> int:
    from gateway.devcerts import DevCertsError, write_dev_certs

    out: Path | None = args.out
    if out is None:
        from gateway.config import ConfigError, load_config

        try:
            out = load_config(args.config).data_dir / "pki"
        except ConfigError as exc:
            print(f"paygate dev-certs: {exc}", file=sys.stderr)
            return 1
    try:
        written = write_dev_certs(out, force=args.force)
    except (DevCertsError, OSError) as exc:
        print(f"paygate dev-certs: {exc}", file=sys.stderr)
        return 1
    print(f"ca: {out / 'ca.crt'}")
    for w in written:
        print(f"{w.name}: {'created' if w.created else 'kept'} cert={w.cert} key={w.key}")
    return 0
