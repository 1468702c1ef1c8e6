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


#: The keys of a recorded frame (a recording's line): an object with one is no case.
_FRAME_KEYS = frozenset({"t", "dir", "mti", "fields", "hex"})


def load_script(path: Path, min_delay: float = 0.1) -> Any:
    """The exchanges of a recording or of a case file (CaseError if neither).

    A file that is one JSON object is a case unless it has a recorded frame's keys (a
    recording of one line); a JSON array is neither; anything else is read as JSON lines.
    """
    from netsim.certify.matchers import CaseError
    from netsim.certify.recording import load_recording
    from netsim.certify.script import load_case, load_templates, read_text

    text = read_text(path)
    if not text.strip():
        raise CaseError(f"{path}: empty, nothing to replay")
    try:
        whole = json.loads(text)
    except RecursionError:
        raise CaseError(f"{path}: not valid JSON (nested too deeply)") from None
    except ValueError:
        whole = None            # JSON lines: a recording (load_recording names a bad line)
    if isinstance(whole, list):
        raise CaseError(f"{path}: $: expected a case (an object with name, payment, "
                        "exchanges, outcome) or a recording (JSON lines), not an array")
    if isinstance(whole, dict) and ("exchanges" in whole or not _FRAME_KEYS & set(whole)):
        exchanges = load_case(path, load_templates(path)).exchanges
    else:
        exchanges = load_recording(path, min_delay)
    if not exchanges:
        raise CaseError(f"{path}: no exchanges, nothing to replay")
    return exchanges


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
