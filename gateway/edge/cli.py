"""``paygate edge serve``: the tokenization edge on its own (``paygate up`` will
run it beside the gRPC service)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gateway.listening import port_number
from gateway.logging import LEVELS
from gateway.loops import add_loop_argument, loop_factory, run


def non_negative(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        number = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def register(sub: Any) -> None:
    edge = sub.add_parser("edge", help="the HTTP edge for the iframe SDK (JWKS, tokens)")
    edge_sub = edge.add_subparsers(dest="edge_command", metavar="EDGE_COMMAND", required=True)
    serve = edge_sub.add_parser("serve", help="serve /v1/keys and /v1/tokens")
    serve.add_argument("--config", type=Path,
                       help="TOML configuration file (as paygate up's: its [hsm] and data_dir)")
    serve.add_argument("--data-dir", type=Path,
                       help="store, HSM key store (software HSM) and logs (default: the "
                            "configuration's, var)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=port_number, default=8080,
                       help="TCP port, 0 to 65535 (0: any free one; default: 8080)")
    serve.add_argument("--port-file", type=Path, help="write the bound port here")
    serve.add_argument("--merchants", type=Path,
                       help="merchant directory (JSON); default: the demo merchants")
    serve.add_argument("--hsm-threads", type=non_negative, default=None,
                       help="threads for HSM calls (default: one per core for the software "
                            "HSM, 1 for PKCS#11; 0 = on the event loop)")
    add_loop_argument(serve)
    serve.add_argument("--log-level", choices=LEVELS, default="info")
    serve.add_argument("--json-logs", action="store_true", help="one JSON object per line")
    serve.add_argument("--access-log", action="store_true",
                       help="log every request (method, path, status, size, time), redacted")
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError
    from gateway.edge.server import PortFileError, build_tokenization, load_merchants, serve
    from gateway.listening import CannotListen
    from gateway.logging import configure_logging
    from gateway.merchants import MerchantConfigError
    from gateway.up import stack_config
    from hsm_sim.config import open_hsm
    from hsm_sim.interface import HsmError

    configure_logging(args.log_level, json=args.json_logs)
    try:
        config = stack_config(argparse.Namespace(config=args.config, data_dir=args.data_dir))
    except ConfigError as exc:
        print(f"paygate edge serve: {exc}")
        return 2
    try:
        merchants = load_merchants(args.merchants)
    except MerchantConfigError as exc:
        print(f"paygate edge serve: --merchants: {exc}")
        return 2
    loop_factory(args.loop)   # refuse --loop uvloop without uvloop before any work
    try:
        tokenization = build_tokenization(config.data_dir, open_hsm(config.hsm),
                                          hsm_threads=args.hsm_threads)
    except HsmError as exc:   # as `paygate hsm`: e.g. a master key file others can read
        print(f"paygate edge serve: {exc}")
        return 1
    try:
        run(serve(tokenization, merchants, args.host, args.port,
                  port_file=args.port_file, access_log=args.access_log), args.loop)
    except (CannotListen, PortFileError) as exc:
        print(f"paygate edge serve: {exc}")
        return 1
    finally:
        tokenization.close()
    return 0
