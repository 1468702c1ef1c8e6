"""Choosing and opening an HSM backend from configuration (flags or environment).

``PAYGATE_HSM`` is ``software`` (the default: key store under the data dir) or
``pkcs11`` (``PAYGATE_PKCS11_MODULE``, ``PAYGATE_PKCS11_TOKEN`` (label),
``PAYGATE_PKCS11_PIN``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hsm_sim.interface import Hsm, KeyStoreError

DEFAULT_PKCS11_MODULE = "/usr/lib/softhsm/libsofthsm2.so"


@dataclass(frozen=True)
class HsmConfig:
    backend: str = "software"
    directory: Path = Path("var/hsm")
    pkcs11_module: str = DEFAULT_PKCS11_MODULE
    token_label: str = "paygate"
    pin: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, directory: Path, environ: dict[str, str] | None = None) -> HsmConfig:
        env = os.environ if environ is None else environ
        return cls(backend=env.get("PAYGATE_HSM", "software"), directory=directory,
                   pkcs11_module=env.get("PAYGATE_PKCS11_MODULE", DEFAULT_PKCS11_MODULE),
                   token_label=env.get("PAYGATE_PKCS11_TOKEN", "paygate"),
                   pin=env.get("PAYGATE_PKCS11_PIN", ""))


def open_hsm(config: HsmConfig) -> Hsm:
    """The configured backend, started (keys generated on first start)."""
    if config.backend == "software":
        from hsm_sim.software import SoftwareHsm
        return SoftwareHsm(config.directory)
    if config.backend == "pkcs11":
        from hsm_sim.pkcs11 import Pkcs11Hsm
        if not config.pin:
            raise KeyStoreError("PAYGATE_PKCS11_PIN is not set")
        hsm: Hsm = Pkcs11Hsm(config.pkcs11_module, config.token_label, config.pin)
        return hsm
    raise KeyStoreError(f"unknown HSM backend {config.backend!r} (software or pkcs11)")
