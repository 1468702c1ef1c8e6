"""An independent compact-JWE encoder for the tests, written with ``cryptography`` only
(RFC 7516 §5.1), so that the gateway's decoder is checked against code it does not share."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def public_key(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    def uint(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
    return rsa.RSAPublicNumbers(uint(jwk["e"]), uint(jwk["n"])).public_key()


def encrypt(plaintext: bytes, jwk: dict[str, Any], *, alg: str | None = None,
            enc: str = "A256GCM", extra_header: dict[str, Any] | None = None) -> str:
    """A compact JWE of ``plaintext`` to the RSA key ``jwk``."""
    alg = alg or jwk["alg"]
    header = {"alg": alg, "enc": enc, "kid": jwk["kid"], **(extra_header or {})}
    protected = b64u(json.dumps(header, separators=(",", ":")).encode())
    digest = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    cek = os.urandom(32)
    wrapped = public_key(jwk).encrypt(
        cek, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None))
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
    return ".".join((protected, b64u(wrapped), b64u(iv), b64u(sealed[:-16]),
                     b64u(sealed[-16:])))


def card_payload(number: str = "4242424242424242", exp_month: int = 12,
                 exp_year: int = 2034, cvc: str = "123", iat: float | None = None,
                 **extra: Any) -> bytes:
    """The SDK's plaintext: ``{number, exp_month, exp_year, cvc, iat}``."""
    body: dict[str, Any] = {"number": number, "exp_month": exp_month, "exp_year": exp_year,
                            "cvc": cvc, "iat": int(time.time()) if iat is None else iat}
    body.update(extra)
    return json.dumps(body).encode()


def encrypt_card(jwk: dict[str, Any], *, alg: str | None = None, **card: Any) -> str:
    return encrypt(card_payload(**card), jwk, alg=alg)
