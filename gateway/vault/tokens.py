"""Format-preserving vault tokens.

A token has the PAN's length, is all digits and keeps the PAN's last 4; every
other digit is random (from the HSM's generator, never derived from the PAN),
and the whole fails the Luhn check, so a token can never be mistaken for a
card number (by us, by a log scanner, or by a network).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from gateway.cards import luhn_ok

# A byte below 250 (= 25 * 10, which keeps the digits uniform) becomes the ASCII digit
# byte % 10; bytes 250 to 255 are dropped.
_DIGIT_OF: Final = bytes(48 + byte % 10 for byte in range(256))
_REJECTED: Final = bytes(range(250, 256))


def random_digits(count: int, random_bytes: Callable[[int], bytes]) -> str:
    """``count`` uniformly random decimal digits (rejection sampling on bytes)."""
    out = b""
    while len(out) < count:
        out += random_bytes(count - len(out) + 8).translate(_DIGIT_OF, _REJECTED)
    return out[:count].decode("ascii")


def make_token(pan: str, random_bytes: Callable[[int], bytes]) -> str:
    """A fresh token for ``pan``: same length, last 4 kept, random rest, Luhn-invalid."""
    head = random_digits(len(pan) - 4, random_bytes)
    token = head + pan[-4:]
    if luhn_ok(token):
        # Changing one digit always changes the Luhn sum mod 10: flip the last random one.
        last = (ord(head[-1]) - 48 + 1) % 10
        token = head[:-1] + chr(48 + last) + pan[-4:]
    return token


def looks_like_token(value: str) -> bool:
    """Shape check for a token presented by a caller (12 to 19 digits, Luhn-invalid)."""
    return value.isascii() and value.isdigit() and 12 <= len(value) <= 19 and not luhn_ok(value)
