"""Choosing and opening an HSM backend from its configuration (:class:`HsmConfig`).

``backend`` is ``software`` (the default: key store under ``directory``) or
``pkcs11`` (``pkcs11_module``, ``token_label``, ``pin``). Every paygate command
reads it from the gateway's configuration (``gateway.config``: the ``[hsm]``
table of the TOML file, ``PAYGATE_HSM_*`` and the older ``PAYGATE_HSM`` /
``PAYGATE_PKCS11_*`` environment variables), so that ``paygate hsm`` operates on
the very HSM ``paygate up`` uses.
"""

from __future__ import annotations

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


def open_hsm(config: HsmConfig) -> Hsm:
    """The configured backend, started (keys generated on first start)."""
    if config.backend == "software":
        from hsm_sim.software import SoftwareHsm
        return SoftwareHsm(config.directory)
    if config.backend == "pkcs11":
        from hsm_sim.pkcs11 import Pkcs11Hsm
        if not config.pin:
            raise KeyStoreError("the PKCS#11 PIN is not set ([hsm] pin, or PAYGATE_HSM_PIN)")
        hsm: Hsm = Pkcs11Hsm(config.pkcs11_module, config.token_label, config.pin)
        return hsm
    raise KeyStoreError(f"unknown HSM backend {config.backend!r} (software or pkcs11)")
