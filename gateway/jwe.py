"""Compact JWE (RFC 7516) as the iframe SDK sends it, opened through the HSM.

Accepted: ``alg`` RSA-OAEP-256 or RSA-OAEP (what the HSM backend supports),
``enc`` A256GCM, a ``kid`` naming one of the HSM's keys, no ``zip``, no
``crit``. The protected header is the AEAD's additional data, so changing any
of the five parts makes decryption fail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final

from hsm_sim.interface import (
    JWE_ENC,
    DecryptError,
    Hsm,
    KeyNotFound,
    UnsupportedAlgorithm,
)

MAX_COMPACT_LEN: Final = 8192
_B64URL: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_URL_TO_STD: Final = bytes.maketrans(b"-_", b"+/")
_KNOWN_HEADERS: Final = frozenset({"alg", "enc", "kid", "typ", "cty"})


class JweError(Exception):
    """A JWE we refuse; ``code`` is stable (used by the HTTP edge)."""

    code = "jwe_invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedJwe(JweError):
    code = "malformed_jwe"


class UnsupportedJwe(JweError):
    code = "unsupported_algorithm"


class UnknownKeyId(JweError):
    code = "unknown_key"


class UndecryptableJwe(JweError):
    code = "decryption_failed"


def b64url_decode(part: str, what: str) -> bytes:
    """Strict unpadded base64url (RFC 7515 §2): no padding, no other characters."""
    raw = part.encode("ascii", "replace")
    # What is left after deleting every base64url character is what does not belong.
    if not raw or len(raw) % 4 == 1 or raw.translate(None, _B64URL):
        raise MalformedJwe(f"the JWE {what} is not base64url")
    try:
        return binascii.a2b_base64(raw.translate(_URL_TO_STD) + b"=" * (-len(raw) % 4))
    except (binascii.Error, ValueError):
        raise MalformedJwe(f"the JWE {what} is not base64url") from None


@dataclass(frozen=True)
class CompactJwe:
    """The five parts of a compact JWE, decoded."""

    header: dict[str, Any]
    protected: bytes = field(repr=False)      # the ASCII header segment = the AAD
    encrypted_key: bytes = field(repr=False)
    iv: bytes = field(repr=False)
    ciphertext: bytes = field(repr=False)
    tag: bytes = field(repr=False)
    digest: bytes = field(repr=False)         # SHA-256 of the decoded parts (replay key)

    @property
    def kid(self) -> str:
        return str(self.header["kid"])

    @property
    def alg(self) -> str:
        return str(self.header["alg"])


def parse(compact: str, accepted_algs: frozenset[str]) -> CompactJwe:
    """Split and check a compact JWE. Raises a :class:`JweError` subclass."""
    if not isinstance(compact, str) or not compact:
        raise MalformedJwe("encrypted_card must be a compact JWE string")
    if len(compact) > MAX_COMPACT_LEN:
        raise MalformedJwe("the JWE is too long")
    parts = compact.split(".")
    if len(parts) != 5:
        raise MalformedJwe("a compact JWE has five parts separated by dots")
    header_raw = b64url_decode(parts[0], "header")
    try:
        header = json.loads(header_raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise MalformedJwe("the JWE header is not JSON") from None
    if not isinstance(header, dict):
        raise MalformedJwe("the JWE header is not a JSON object")
    if "crit" in header or "zip" in header:
        raise UnsupportedJwe("the JWE header uses 'crit' or 'zip', which are not supported")
    alg, enc, kid = header.get("alg"), header.get("enc"), header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise MalformedJwe("the JWE header has no 'kid'")
    if alg not in accepted_algs:
        raise UnsupportedJwe(f"'alg' must be one of {', '.join(sorted(accepted_algs))}")
    if enc != JWE_ENC:
        raise UnsupportedJwe(f"'enc' must be {JWE_ENC}")
    protected = parts[0].encode("ascii")
    key = b64url_decode(parts[1], "encrypted key")
    iv = b64url_decode(parts[2], "initialization vector")
    ciphertext = b64url_decode(parts[3], "ciphertext")
    tag = b64url_decode(parts[4], "authentication tag")
    # The replay key is taken over the decoded bytes, not the string: base64url lets the
    # last character of a part carry unused bits, so one JWE has several spellings.
    digest = hashlib.sha256()
    for piece in (protected, key, iv, ciphertext, tag):
        digest.update(len(piece).to_bytes(4, "big"))
        digest.update(piece)
    return CompactJwe(header=header, protected=protected, encrypted_key=key, iv=iv,
                      ciphertext=ciphertext, tag=tag, digest=digest.digest())


def open_compact(hsm: Hsm, jwe: CompactJwe) -> bytes:
    """Decrypt through the HSM: the plaintext, or a :class:`JweError`."""
    if len(jwe.iv) != 12 or len(jwe.tag) != 16:
        raise UndecryptableJwe("the JWE could not be decrypted")
    try:
        return hsm.open_jwe(jwe.kid, jwe.alg, jwe.encrypted_key, jwe.iv, jwe.ciphertext,
                            jwe.tag, jwe.protected)
    except KeyNotFound:
        raise UnknownKeyId("the JWE 'kid' names no current key; fetch /v1/keys again") from None
    except UnsupportedAlgorithm:
        raise UnsupportedJwe(f"'alg' {jwe.alg} is not supported by this gateway") from None
    except DecryptError:
        raise UndecryptableJwe("the JWE could not be decrypted") from None


def encrypt_compact(plaintext: bytes, jwk: dict[str, Any], alg: str | None = None) -> str:
    """Encrypt to a JWK as the iframe SDK does (for tools, the demo and benchmarks).

    The browser does this with WebCrypto; the gateway itself never needs to.
    """
    import os

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from hsm_sim.jwk import public_key_from_jwk

    chosen = alg or str(jwk.get("alg", "RSA-OAEP-256"))
    header = json.dumps({"alg": chosen, "enc": JWE_ENC, "kid": jwk["kid"]},
                        separators=(",", ":")).encode()
    protected = base64.urlsafe_b64encode(header).rstrip(b"=")
    digest = hashes.SHA256() if chosen == "RSA-OAEP-256" else hashes.SHA1()
    cek, iv = os.urandom(32), os.urandom(12)
    wrapped = public_key_from_jwk(jwk).encrypt(
        cek, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None))
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected)
    parts = [protected] + [base64.urlsafe_b64encode(p).rstrip(b"=")
                           for p in (wrapped, iv, sealed[:-16], sealed[-16:])]
    return b".".join(parts).decode("ascii")
