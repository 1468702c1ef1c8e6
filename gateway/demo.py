"""``paygate demo`` (what ``make run`` runs): the main job on embedded defaults.

1. The ISO 8583 codec: a realistic 0100 and its 0110, encoded, framed,
   decoded and pretty-printed with the PAN masked.
2. Payments: the whole stack (``gateway.stack``) on embedded defaults in a
   temporary data dir (or ``--data-dir``), scripted payments through the public
   gRPC and HTTP interfaces (``gateway.traffic``: approved, automatic capture,
   declined, partial capture and refund, voided, a lost response the reconciler
   reverses), a table, every outcome checked against netsim's ledger, and the
   data dir checked for PANs in clear. Exits non-zero on any disagreement.
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from gateway import __version__

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

def codec_demo() -> None:
    import codec
    from codec import examples, framing, specs

    spec = codec.load_spec(specs.network, "network")
    print(f"paygate {__version__} - ISO 8583 codec demo (implementation: "
          f"{codec.IMPLEMENTATION})\n")
    for title, doc in (("Authorization request", examples.auth_request()),
                       ("Authorization response", examples.auth_response())):
        wire = codec.encode(doc, spec)
        frame = framing.frame(wire)
        decoded = codec.decode(wire, spec)
        same = all(decoded[k] == v for k, v in doc.items())
        print(f"== {title} {doc['t']}: {len(wire)} bytes on the wire, "
              f"{len(frame)} framed (2-byte length header {frame[:2].hex()}); "
              f"decode(encode(x)) == x: {same}")
        print(codec.describe(decoded, spec))
        print()


async def payments_demo(config: GatewayConfig) -> bool:
    """The stack up on ``config``, the scripted payments, the table; True if all agree."""
    from gateway.stack import Stack
    from gateway.traffic import render, run_traffic

    async with Stack(config) as stack:
        assert stack.info is not None
        print(f"== Payments through the public interfaces: gRPC {stack.info.grpc} (mutual TLS), "
              f"HTTP edge {stack.info.http}, netsim {stack.info.netsim}")
        rows = await run_traffic(stack)
    print(render(rows))
    agree = all(row.agrees for row in rows)
    print(f"every outcome agrees with netsim's ledger: {'yes' if agree else 'NO'}")
    return agree


def pan_leaks(data_dir: Path) -> list[str]:
    """Files under ``data_dir`` holding a demo PAN in clear (there must be none)."""
    from gateway.traffic import SCENARIOS

    pans = [pan.encode() for _name, pan, _amount, _run in SCENARIOS]
    return [p.name for p in data_dir.rglob("*")
            if p.is_file() and any(pan in p.read_bytes() for pan in pans)]


def run(data_dir: Path | None = None) -> int:
    """``paygate demo``: the codec, then the stack and its payments; non-zero on any
    disagreement with the network or any PAN found in clear in the data dir."""
    from gateway.config import load_config
    from gateway.logging import configure_logging

    configure_logging("warning")
    codec_demo()
    with tempfile.TemporaryDirectory(prefix="paygate-demo-") as tmp:
        folder = data_dir or Path(tmp)
        config = load_config(None, {"PAYGATE_DATA_DIR": str(folder),
                                    "PAYGATE_GRPC_LISTEN": "127.0.0.1:0",
                                    "PAYGATE_HTTP_LISTEN": "127.0.0.1:0",
                                    "PAYGATE_NETWORK_PORT": "0"})
        agree = asyncio.run(payments_demo(config))
        leaks = pan_leaks(folder)
        files = sorted(p.name for p in folder.glob("*") if p.is_file())
        print(f"data dir {folder}: {files}; PAN in clear in {leaks or 'none of them'}")
    return 0 if agree and not leaks else 1
