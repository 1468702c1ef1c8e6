"""``paygate hsm ...``: operate the configured HSM (list keys, rotate, retire, health).

The backend comes from the gateway's configuration, exactly as ``paygate up``
reads it (``--config`` or ``$PAYGATE_CONFIG``, then ``PAYGATE_*`` variables; see
``gateway.config``); ``--data-dir`` overrides the data directory, under which the
software HSM keeps its key store (``hsm/``) unless ``[hsm] directory`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from hsm_sim.config import open_hsm
from hsm_sim.interface import Hsm, HsmError


def register(sub: Any) -> None:
    hsm = sub.add_parser("hsm", help="list, rotate and retire HSM keys; health")
    hsm.add_argument("--config", type=Path, help="TOML configuration file (as paygate up's)")
    hsm.add_argument("--data-dir", type=Path,
                     help="data directory (default: the configuration's, var; the software "
                          "HSM lives in DATA_DIR/hsm)")
    hsm_sub = hsm.add_subparsers(dest="hsm_command", metavar="HSM_COMMAND", required=True)
    hsm_sub.add_parser("keys", help="every key with its status").set_defaults(func=_keys)
    hsm_sub.add_parser("jwks", help="print the public JWKS").set_defaults(func=_jwks)
    hsm_sub.add_parser("health", help="self-test").set_defaults(func=_health)
    hsm_sub.add_parser("rotate-jwe", help="new client-encryption key pair (new kid)"
                       ).set_defaults(func=_rotate_jwe)
    hsm_sub.add_parser("rotate-dek", help="new vault data-encryption key version"
                       ).set_defaults(func=_rotate_dek)
    retire_jwe = hsm_sub.add_parser("retire-jwe", help="stop decrypting with a kid")
    retire_jwe.add_argument("kid")
    retire_jwe.set_defaults(func=_retire_jwe)
    retire_dek = hsm_sub.add_parser("retire-dek", help="stop unsealing under a DEK version "
                                    "(re-seal the vault first)")
    retire_dek.add_argument("version", type=int)
    retire_dek.set_defaults(func=_retire_dek)


def _open(args: argparse.Namespace) -> Hsm:
    # The gateway's configuration owns [hsm] (imported here: hsm_sim sits below gateway).
    from gateway.up import stack_config

    config = stack_config(argparse.Namespace(config=args.config, data_dir=args.data_dir))
    return open_hsm(config.hsm)


def _run(args: argparse.Namespace, action: Any) -> int:
    from gateway.config import ConfigError

    try:
        hsm = _open(args)
    except ConfigError as exc:
        print(f"paygate hsm: {exc}")
        return 2
    except HsmError as exc:
        print(f"paygate hsm: {exc}")
        return 1
    try:
        action(hsm)
    except HsmError as exc:
        print(f"paygate hsm: {exc}")
        return 1
    finally:
        hsm.close()
    return 0


def _keys(args: argparse.Namespace) -> int:
    def show(hsm: Hsm) -> None:
        print(f"{'kind':5} {'id':24} {'status':13} {'alg':13} created")
        for key in hsm.keys():  # noqa: SIM118 -- Hsm.keys() lists key metadata
            print(f"{key.kind:5} {key.key_id:24} {key.status:13} {key.alg:13} {key.created}")
    return _run(args, show)


def _jwks(args: argparse.Namespace) -> int:
    return _run(args, lambda hsm: print(json.dumps(hsm.jwks(), indent=2)))


def _health(args: argparse.Namespace) -> int:
    def show(hsm: Hsm) -> None:
        health = hsm.health()
        print(f"{health.backend}: {'ok' if health.ok else 'FAILING ' + health.detail}; "
              f"active kid {health.active_kid}, active DEK v{health.active_dek}; "
              f"JWE algs {', '.join(sorted(health.algorithms))}")
        if not health.ok:
            raise HsmError("self-test failed")
    return _run(args, show)


def _rotate_jwe(args: argparse.Namespace) -> int:
    return _run(args, lambda hsm: print(f"new active kid {hsm.rotate_jwe_key()}"))


def _rotate_dek(args: argparse.Namespace) -> int:
    return _run(args, lambda hsm: print(f"new active DEK v{hsm.rotate_dek()}"))


def _retire_jwe(args: argparse.Namespace) -> int:
    return _run(args, lambda hsm: (hsm.retire_jwe_key(args.kid), print(f"retired {args.kid}")))


def _retire_dek(args: argparse.Namespace) -> int:
    return _run(args, lambda hsm: (hsm.retire_dek(args.version),
                                   print(f"retired DEK v{args.version}")))
