"""Public RSA keys as JWKs (RFC 7517/7518): the only key material that leaves an HSM."""

from __future__ import annotations

import base64
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa


def b64url_uint(value: int) -> str:
    """An unsigned big-endian integer as unpadded base64url, as JWKs write ``n`` and ``e``."""
    raw = value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def rsa_jwk(public: rsa.RSAPublicKey, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of an RSA encryption key."""
    numbers = public.public_numbers()
    return {"kty": "RSA", "kid": kid, "use": "enc", "alg": alg,
            "n": b64url_uint(numbers.n), "e": b64url_uint(numbers.e)}


def rsa_jwk_from_numbers(n: int, e: int, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK from modulus and exponent (what a PKCS#11 token hands out)."""
    return rsa_jwk(rsa.RSAPublicNumbers(e, n).public_key(), kid, alg)


def public_key_from_jwk(jwk: dict[str, Any]) -> rsa.RSAPublicKey:
    """The RSA public key a JWK describes (for encrypting to it)."""
    def uint(text: str) -> int:
        return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
    return rsa.RSAPublicNumbers(uint(jwk["e"]), uint(jwk["n"])).public_key()
