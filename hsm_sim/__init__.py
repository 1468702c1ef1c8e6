"""The HSM key interface (``hsm_sim.interface.Hsm``, a ``Protocol``) and its backends:
a software HSM (``hsm_sim.software``, the embedded default) and PKCS#11
(``hsm_sim.pkcs11``, tested against SoftHSM2).

The gateway asks an HSM to publish its public keys, open client-side JWEs,
seal and unseal vault data, fingerprint cards and make random bytes; private
keys, the KEK and DEKs never come out. See ``hsm_sim/README.md`` for the
algorithm matrix per backend.
"""

from hsm_sim.interface import (
    JWE_ALGS,
    DecryptError,
    Health,
    Hsm,
    HsmError,
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    Sealed,
    UnsupportedAlgorithm,
)
from hsm_sim.software import SoftwareHsm

__all__ = [
    "JWE_ALGS",
    "DecryptError",
    "Health",
    "Hsm",
    "HsmError",
    "KeyInfo",
    "KeyNotFound",
    "KeyStoreError",
    "Sealed",
    "SoftwareHsm",
    "UnsupportedAlgorithm",
]
