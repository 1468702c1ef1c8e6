"""``paygate up``: the whole stack on embedded defaults until SIGINT/SIGTERM.

Configuration comes from ``--config`` / ``PAYGATE_CONFIG`` and ``PAYGATE_*``
variables (``gateway.config``); ``--data-dir`` and the listen flags override
them. On first start the dev certificates, the HSM keys and the demo merchants
are created under the data dir; ``DATA_DIR/stack.json`` says where everything is.
``--no-netsim`` leaves the network out: the gateway connects to the one at
``network.host:network.port`` (e.g. ``paygate netsim serve`` in a process of its own,
so that the network outlives a crash of the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from pathlib import Path
from typing import Any

from gateway.listening import port_number
from gateway.loops import add_loop_argument, run


def register(sub: Any) -> None:
    up = sub.add_parser("up", help="run the whole stack (netsim, gateway gRPC + HTTP edge) "
                                   "on embedded defaults")
    add_stack_arguments(up)
    up.add_argument("--demo", action="store_true",
                    help="once up, run the demo payments against it and print how to call it")
    up.add_argument("--exit-after-demo", action="store_true",
                    help="with --demo: stop after the demo (exit 1 on any disagreement)")
    up.add_argument("--no-demo-checkout", action="store_true",
                    help="do not serve the demo checkout page (/demo/checkout) on the edge")
    add_loop_argument(up)
    up.set_defaults(func=_up)


def add_stack_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML configuration file")
    parser.add_argument("--data-dir", type=Path, help="data directory (default: var)")
    parser.add_argument("--grpc", help="gRPC listen address, e.g. 127.0.0.1:50051")
    parser.add_argument("--http", help="HTTP edge listen address, e.g. 127.0.0.1:8080")
    parser.add_argument("--netsim-port", type=port_number,
                        help="port of the embedded netsim (0: any); with --no-netsim, the "
                             "port of the external network (network.port)")
    parser.add_argument("--no-netsim", action="store_true",
                        help="do not run the embedded netsim: connect to the network at "
                             "network.host:network.port (config, PAYGATE_NETWORK_PORT or "
                             "--netsim-port), e.g. a `paygate netsim serve` of its own")


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


HOW_TO_CALL = """
Call it (Python, stubs from proto/paygate/v1; the same works with grpcurl):

    import asyncio, json
    from gateway.api.server import client_channel
    from gateway.pki import Credentials
    from paygate.v1 import payments_pb2 as pb, payments_pb2_grpc

    info = json.load(open("{stack_json}"))
    creds = Credentials(info["tls"]["client_cert"], info["tls"]["client_key"], info["tls"]["ca"])

    async def main():
        async with client_channel(info["grpc"], creds) as channel:
            stub = payments_pb2_grpc.PaymentsStub(channel)
            intent = await stub.CreatePaymentIntent(pb.CreatePaymentIntentRequest(
                merchant_id="acme", amount=1999, currency="eur",
                capture_method=pb.CAPTURE_METHOD_MANUAL), metadata=[("idempotency-key", "k1")])
            print(intent)

    asyncio.run(main())

Tokenize a card: GET {http}/v1/keys, then POST {http}/v1/tokens (README: "Tokenize a card").
"""


async def serve_until_signal(config: Any, *, announce: bool = True, demo: bool = False,
                             exit_after_demo: bool = False, embedded_netsim: bool = True,
                             demo_checkout: bool = True) -> int:
    from gateway.stack import Stack

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    status = 0
    async with Stack(config, embedded_netsim=embedded_netsim,
                     demo_checkout=demo_checkout) as stack:
        assert stack.info is not None
        if announce:
            print(json.dumps(stack.info.as_json(), indent=2), flush=True)
        if demo:
            from gateway.traffic import render, run_traffic

            rows = await run_traffic(stack)
            print(render(rows), flush=True)
            agree = all(row.agrees for row in rows)
            print(f"every outcome agrees with netsim's ledger: {'yes' if agree else 'NO'}")
            status = 0 if agree else 1
        if announce:
            print(HOW_TO_CALL.format(stack_json=config.data_dir / "stack.json",
                                     http=stack.info.http), flush=True)
        if stack.checkout_url:
            print(f"Demo checkout (the card iframe SDK; test card 4242 4242 4242 4242, any "
                  f"future expiry, any CVC): {stack.checkout_url}", flush=True)
        if not exit_after_demo:
            print("paygate is up; Ctrl-C stops it.", flush=True)
            await stop.wait()
    return status


def _up(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError
    from gateway.listening import CannotListen
    from gateway.logging import configure_logging

    if args.demo and args.no_netsim:
        print("paygate up: --demo checks its payments against the embedded netsim's ledger; "
              "it cannot be combined with --no-netsim")
        return 2
    if args.exit_after_demo and not args.demo:
        print("paygate up: --exit-after-demo stops after the demo; it needs --demo")
        return 2
    try:
        config = stack_config(args)
    except ConfigError as exc:
        print(f"paygate up: {exc}")
        return 2
    configure_logging(config.logging.level, json=config.logging.json)
    try:
        return run(serve_until_signal(config, demo=args.demo,
                                      exit_after_demo=args.exit_after_demo,
                                      embedded_netsim=not args.no_netsim,
                                      demo_checkout=not args.no_demo_checkout), args.loop)
    except CannotListen as exc:   # the stack has closed what it had started
        print(f"paygate up: {exc}")
        return 1
