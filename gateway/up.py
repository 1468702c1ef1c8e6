"""``paygate up``: the whole stack on embedded defaults until SIGINT/SIGTERM.

Configuration comes from ``--config`` / ``PAYGATE_CONFIG`` and ``PAYGATE_*``
variables (``gateway.config``); ``--data-dir`` and the listen flags override
them. On first start the dev certificates, the HSM keys and the demo merchants
are created under the data dir; ``DATA_DIR/stack.json`` says where everything is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole stack (netsim, gateway gRPC + HTTP edge) "
                                   "on embedded defaults")
    add_stack_arguments(up)
    up.set_defaults(func=_up)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: var)")
    parser.add_argument("--grpc", help="gRPC listen address, e.g. 127.0.0.1:50051")
    parser.add_argument("--http", help="HTTP edge listen address, e.g. 127.0.0.1:8080")
    parser.add_argument("--netsim-port", type=int, help="port of the embedded netsim (0: any)")


def stack_config(args: argparse.Namespace) -> Any:
    """The configuration with the command line's overrides applied."""
    import os

    from gateway.config import load_config

    env = dict(os.environ)
    for flag, name in (("data_dir", "PAYGATE_DATA_DIR"), ("grpc", "PAYGATE_GRPC_LISTEN"),
                       ("http", "PAYGATE_HTTP_LISTEN"), ("netsim_port", "PAYGATE_NETWORK_PORT")):
        value = getattr(args, flag, None)
        if value is not None:
            env[name] = str(value)
    return load_config(args.config, env)


async def serve_until_signal(config: Any, *, announce: bool = True) -> int:
    from gateway.stack import Stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with Stack(config) as stack:
        assert stack.info is not None
        if announce:
            print(json.dumps(stack.info.as_json(), indent=2), flush=True)
            print(f"paygate is up; {config.data_dir / 'stack.json'} has these details. "
                  "Ctrl-C stops it.", flush=True)
        await stop.wait()
    return 0


def _up(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError
    from gateway.logging import configure_logging

    try:
        config = stack_config(args)
    except ConfigError as exc:
        print(f"paygate up: {exc}")
        return 2
    configure_logging(config.logging.level, json=config.logging.json)
    return asyncio.run(serve_until_signal(config))
