"""``paygate netsim replay FILE``: netsim plays the network from a recording or a case.

FILE is a recording (JSON lines, :mod:`netsim.certify.recorder`) or one case file
(JSON; the ``suite.json`` next to it supplies its templates). netsim listens over
mutual TLS like ``serve``, checks every message the gateway sends against the
script and answers with the recorded or scripted replies, until the script is done
(every exchange came and was answered), ``--timeout`` passes, or SIGINT/SIGTERM.
It then prints every mismatch (field, expected, actual; card data masked) and exits
0 when there was none, 1 otherwise (2: bad file or credentials).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import ssl
import sys
from pathlib import Path
from typing import Any

__all__ = ["load_script", "register_replay"]


def register_replay(commands: Any) -> None:
    """Add ``replay`` to the ``netsim`` command group."""
    replay = commands.add_parser(
        "replay", help="play the network from a recording or a case file and check "
                       "every message received",
        description="Serve a recorded session (or one certification case) over mutual TLS: "
                    "check each message received field by field, answer with the recorded "
                    "reply, report every mismatch. Exit 0 when everything matched.")
    replay.add_argument("file", type=Path, metavar="FILE",
                        help="a recording (JSON lines) or a case file (JSON)")
    replay.add_argument("--cert", required=True, type=Path, help="server certificate (PEM)")
    replay.add_argument("--key", required=True, type=Path, help="server private key (PEM)")
    replay.add_argument("--ca", required=True, type=Path,
                        help="CA (PEM) that client certificates must chain to")
    replay.add_argument("--host", default="127.0.0.1", help="address to bind")
    replay.add_argument("--port", type=int, default=8583, help="port to bind, 0 for any")
    replay.add_argument("--port-file", type=Path, help="write the bound port here")
    replay.add_argument("--timeout", type=float, default=300.0,
                        help="give up after this many seconds (default %(default)s)")
    replay.add_argument("--min-delay", type=float, default=0.1,
                        help="recorded reply delays up to this many seconds are not "
                             "reproduced (default %(default)s)")
    replay.set_defaults(func=_replay)


def load_script(path: Path, min_delay: float = 0.1) -> Any:
    """The exchanges of a recording or of a case file (CaseError if neither)."""
    from netsim.certify.recording import load_recording
    from netsim.certify.script import load_case

    text = path.read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except ValueError:
        whole = None
    if isinstance(whole, dict) and "exchanges" in whole:
        templates: dict[str, Any] = {}
        suite = path.parent / "suite.json"
        if suite.exists():
            templates = json.loads(suite.read_text(encoding="utf-8")).get("templates", {})
        return load_case(path, templates).exchanges
    return load_recording(path, min_delay)


def _replay(args: argparse.Namespace) -> int:
    from gateway.pki import Credentials, server_context
    from netsim.certify.host import ReplayHost
    from netsim.certify.matchers import CaseError

    try:
        exchanges = load_script(args.file, args.min_delay)
    except (CaseError, OSError) as exc:
        print(f"paygate netsim replay: {exc}", file=sys.stderr)
        return 2
    try:
        context = server_context(Credentials(cert=args.cert, key=args.key, ca=args.ca))
    except (OSError, ssl.SSLError) as exc:
        print(f"paygate netsim replay: cannot load the TLS credentials: {exc}", file=sys.stderr)
        return 2
    host = ReplayHost(context, host=args.host, port=args.port)
    return asyncio.run(_serve(host, args.file.name, exchanges, args.timeout, args.port_file))


async def _serve(host: Any, name: str, exchanges: Any, timeout: float,
                 port_file: Path | None) -> int:
    from netsim.certify.runner import QUIET

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await host.start()
    try:
        script = host.play(name, exchanges)
        print(f"netsim replaying {len(exchanges)} exchanges of {name} on "
              f"{host.host}:{host.port}", flush=True)
        if port_file is not None:
            port_file.write_text(f"{host.port}\n")
        waiters = {asyncio.ensure_future(script.done.wait()), asyncio.ensure_future(stop.wait())}
        _, pending = await asyncio.wait(waiters, timeout=timeout,
                                        return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if not stop.is_set():
            await asyncio.sleep(QUIET)
    finally:
        await host.stop()
    mismatches = [*script.mismatches, *script.missing()]
    for m in mismatches:
        print(m.render(), flush=True)
    print(f"replay {'passed' if not mismatches else 'FAILED'}: {len(script.requests)} of "
          f"{len(exchanges)} exchanges, {len(mismatches)} mismatches", flush=True)
    return 0 if not mismatches else 1
