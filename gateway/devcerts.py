"""Development certificates for every mutual-TLS hop, in one folder (``paygate dev-certs``).

One dev CA (``ca.crt``, ``ca.key``) and, each as ``NAME.crt`` + ``NAME.key`` (keys 0600):

* ``gateway-server``: the gRPC server's certificate (localhost, 127.0.0.1);
* ``netsim``: the network simulator's server certificate;
* ``gateway``: the gateway's client certificate towards the network;
* ``checkout-service``: an internal caller's client certificate (CN = checkout-service,
  the identity the embedded configuration allows for the demo merchants).

Idempotent: existing files are kept and only missing certificates are issued, by the CA
saved in the folder (so they chain to the same ``ca.crt``). ``force`` makes a new CA and
replaces everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.pki import Authority

#: (name, is a server certificate), in the order they are issued.
DEV_CERTS: tuple[tuple[str, bool], ...] = (
    ("gateway-server", True),
    ("netsim", True),
    ("gateway", False),
    ("checkout-service", False),
)


class DevCertsError(Exception):
    """The folder holds certificates that new ones could not chain to."""


@dataclass(frozen=True)
class Written:
    """One certificate: its files and whether this run wrote them."""

    name: str
    cert: Path
    key: Path
    created: bool


def write_dev_certs(out: Path, *, force: bool = False,
                    common_name: str = "paygate dev CA") -> list[Written]:
    """Write the dev CA and :data:`DEV_CERTS` under ``out``; see the module docstring."""
    ca_crt, ca_key = out / "ca.crt", out / "ca.key"
    missing = [name for name, _ in DEV_CERTS
               if force or not ((out / f"{name}.crt").exists() and (out / f"{name}.key").exists())]
    authority: Authority | None = None
    if force or not (ca_crt.exists() or ca_key.exists()):
        present = [name for name, _ in DEV_CERTS
                   if (out / f"{name}.crt").exists() or (out / f"{name}.key").exists()]
        if present and not force:
            raise DevCertsError(f"{out} holds {present[0]}.crt or .key but no CA; "
                                "use --force to start over")
        out.mkdir(parents=True, exist_ok=True)
        authority = Authority(common_name)
        authority.save(out)
        missing = [name for name, _ in DEV_CERTS]
    elif missing:
        if not (ca_crt.exists() and ca_key.exists()):
            raise DevCertsError(f"{out} has {'ca.crt' if ca_crt.exists() else 'ca.key'} "
                                f"without {'ca.key' if ca_crt.exists() else 'ca.crt'}: cannot "
                                "issue certificates that chain to it; use --force to start over")
        try:
            authority = Authority.load(out)
        except ValueError as exc:
            raise DevCertsError(f"cannot load the CA in {out}: {exc}") from None
    written = []
    for name, server in DEV_CERTS:
        if name in missing:
            assert authority is not None
            creds = authority.write(out, name, server=server)
            written.append(Written(name, creds.cert, creds.key, created=True))
        else:
            written.append(Written(name, out / f"{name}.crt", out / f"{name}.key",
                                   created=False))
    return written
