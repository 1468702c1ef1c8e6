"""What the gateway may ask of an HSM, and nothing more.

The gateway never holds a private key, the key-encryption key (KEK) or a data-
encryption key (DEK): it hands ciphertext in and gets plaintext (or sealed
blobs) out. Every backend implements :class:`Hsm`:

* ``jwks()``: the public keys for client-side encryption, as a JWKS;
* ``open_jwe(...)``: unwrap a JWE content-encryption key with RSA-OAEP (SHA-1)
  or RSA-OAEP-256 and AEAD-decrypt (A256GCM) with it, in one call, so that the
  content-encryption key never leaves the HSM either;
* ``seal`` / ``unseal``: AES-256-GCM for the vault under versioned DEKs, which
  are themselves wrapped by a KEK that never leaves the HSM;
* ``fingerprint``: a keyed HMAC-SHA256 for card de-duplication;
* ``random``; ``rotate_jwe_key`` / ``rotate_dek`` (a new ``kid`` / DEK
  version; old ones still decrypt until retired), ``retire_jwe_key`` /
  ``retire_dek``; ``health``.

Every failure to decrypt (wrong key, tampered ciphertext, bad padding, bad
tag) raises :class:`DecryptError`, whose message is always the same and says
nothing about the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol, runtime_checkable

JweAlg = Literal["RSA-OAEP", "RSA-OAEP-256"]
JWE_ALGS: Final[frozenset[str]] = frozenset({"RSA-OAEP", "RSA-OAEP-256"})
JWE_ENC: Final = "A256GCM"

#: Sealed blob layout: 12-byte nonce, ciphertext, 16-byte GCM tag.
NONCE_LEN: Final = 12
TAG_LEN: Final = 16
RSA_BITS: Final = 2048


class HsmError(Exception):
    """Base of every error an HSM backend raises. Messages never carry data."""


class DecryptError(HsmError):
    """Decryption failed. Deliberately says nothing more (no oracle, no data)."""

    def __init__(self) -> None:
        super().__init__("decryption failed")

    def __reduce__(self) -> tuple[type[DecryptError], tuple[()]]:
        return (DecryptError, ())


class KeyNotFound(HsmError):
    """No usable key with that id: unknown, or retired."""

    def __init__(self, kind: str, key_id: str | int) -> None:
        super().__init__(f"no usable {kind} key {key_id!r} (unknown or retired)")
        self.kind = kind
        self.key_id = key_id

    def __reduce__(self) -> tuple[type[KeyNotFound], tuple[str, str | int]]:
        return (KeyNotFound, (self.kind, self.key_id))


class UnsupportedAlgorithm(HsmError):
    """This backend cannot do that algorithm (e.g. RSA-OAEP-256 on SoftHSM 2.6.1)."""

    def __init__(self, alg: str, backend: str) -> None:
        super().__init__(f"{backend} does not support {alg}")
        self.alg = alg
        self.backend = backend

    def __reduce__(self) -> tuple[type[UnsupportedAlgorithm], tuple[str, str]]:
        return (UnsupportedAlgorithm, (self.alg, self.backend))


class KeyStoreError(HsmError):
    """The HSM cannot start or persist its keys (bad master key, unsafe file mode…)."""


@dataclass(frozen=True)
class Sealed:
    """Vault ciphertext: the DEK version it was sealed under, and nonce‖ciphertext‖tag."""

    key_version: int
    blob: bytes = field(repr=False)

    def __repr__(self) -> str:
        return f"Sealed(key_version={self.key_version}, blob=<{len(self.blob)} bytes>)"


@dataclass(frozen=True)
class KeyInfo:
    """Public metadata of one key (never its material)."""

    kind: Literal["jwe", "dek"]
    key_id: str                    # kid for JWE keys, "v<N>" for DEKs
    status: Literal["active", "decrypt-only", "retired"]
    created: int                   # unix seconds
    alg: str                       # JWE alg advertised, or "A256GCM" for DEKs


@dataclass(frozen=True)
class Health:
    """What ``health()`` reports: fit for service, and why not if not."""

    ok: bool
    backend: str
    detail: str = ""
    algorithms: frozenset[str] = frozenset()
    active_kid: str | None = None
    active_dek: int | None = None


@runtime_checkable
class Hsm(Protocol):
    """The HSM key interface. Private keys, the KEK and DEKs never come out of it."""

    @property
    def backend(self) -> str:
        """A short name for logs and health: ``software`` or ``pkcs11``."""
        ...

    @property
    def jwe_algorithms(self) -> frozenset[str]:
        """The JWE ``alg`` values ``open_jwe`` accepts on this backend."""
        ...

    def jwks(self) -> dict[str, Any]:
        """``{"keys": [...]}``: public RSA keys (``kty``, ``n``, ``e``, ``kid``, ``alg``,
        ``use: enc``) of every key that still decrypts, the active one first."""
        ...

    def open_jwe(self, kid: str, alg: str, encrypted_key: bytes, iv: bytes,
                 ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        """Unwrap the JWE CEK under key ``kid`` with ``alg`` and A256GCM-decrypt with it.

        Raises :class:`KeyNotFound` for an unknown or retired ``kid``,
        :class:`UnsupportedAlgorithm` for an ``alg`` the backend cannot do, and
        :class:`DecryptError` for everything else that fails.
        """
        ...

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        """AES-256-GCM under the active DEK, with a fresh random nonce."""
        ...

    def unseal(self, sealed: Sealed, aad: bytes) -> bytes:
        """Open a sealed blob (any DEK version not yet retired)."""
        ...

    def fingerprint(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the HSM's fingerprint key (32 bytes)."""
        ...

    def random(self, n: int) -> bytes:
        """``n`` random bytes from the HSM's generator."""
        ...

    def rotate_jwe_key(self) -> str:
        """Generate a new RSA key pair, make it active, and return its ``kid``.
        The previous keys still decrypt until retired."""
        ...

    def retire_jwe_key(self, kid: str) -> None:
        """Stop decrypting with ``kid`` and drop it from the JWKS (not the active key)."""
        ...

    def rotate_dek(self) -> int:
        """Generate a new DEK (wrapped by the KEK), make it active, return its version."""
        ...

    def retire_dek(self, version: int) -> None:
        """Stop unsealing under DEK ``version`` (not the active one)."""
        ...

    def keys(self) -> list[KeyInfo]:
        """Metadata of every key the HSM holds, retired ones included."""
        ...

    def health(self) -> Health:
        """A cheap self-test (seal and unseal a probe) and the active key ids."""
        ...

    def close(self) -> None:
        """Release sessions and handles."""
        ...
