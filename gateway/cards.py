"""Card numbers as the gateway checks them: Luhn, brand, expiry, and a masked view.

``Card`` holds a PAN in memory for the short time the vault and the network
path need it; its ``repr`` and ``str`` show it masked (first 6 / last 4), so
a stray log line or traceback cannot leak it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Final

from codec.errors import mask_pan

# Brand, then (prefix ranges as (low, high) on the leading digits, allowed lengths, CVC length).
_BRANDS: Final[tuple[tuple[str, tuple[tuple[str, str], ...], frozenset[int], int], ...]] = (
    ("amex", (("34", "34"), ("37", "37")), frozenset({15}), 4),
    ("diners", (("300", "305"), ("36", "36"), ("38", "39")), frozenset({14, 16, 17, 18, 19}), 3),
    ("discover", (("6011", "6011"), ("644", "649"), ("65", "65"),
                  ("622126", "622925")), frozenset({16, 17, 18, 19}), 3),
    ("jcb", (("3528", "3589"),), frozenset({16, 17, 18, 19}), 3),
    ("unionpay", (("62", "62"), ("81", "81")), frozenset({16, 17, 18, 19}), 3),
    ("mastercard", (("51", "55"), ("2221", "2720")), frozenset({16}), 3),
    ("visa", (("4", "4"),), frozenset({13, 16, 19}), 3),
)

BRANDS: Final[frozenset[str]] = frozenset(b[0] for b in _BRANDS)


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` (decimal digits only) passes the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def luhn_digit(partial: str) -> str:
    """The check digit that makes ``partial + digit`` pass Luhn."""
    for digit in "0123456789":
        if luhn_ok(partial + digit):
            return digit
    raise AssertionError("unreachable")  # pragma: no cover


def brand_of(pan: str) -> str | None:
    """The card brand from the leading digits and the length, or ``None``.

    Discover's 622126-622925 range is co-branded with UnionPay; it is checked
    first, so those cards are reported as Discover (as Discover routes them).
    """
    for brand, ranges, lengths, _cvc in _BRANDS:
        if len(pan) not in lengths:
            continue
        for low, high in ranges:
            head = pan[:len(low)]
            if low <= head <= high:
                return brand
    return None


def cvc_length(brand: str) -> int:
    """How many digits the brand's security code has (4 for Amex, 3 otherwise)."""
    for name, _ranges, _lengths, cvc in _BRANDS:
        if name == brand:
            return cvc
    raise ValueError(f"unknown brand {brand!r}")


def expired(exp_month: int, exp_year: int, today: dt.date | None = None) -> bool:
    """A card is valid through the last day of its expiry month."""
    today = today or dt.datetime.now(dt.UTC).date()
    return (exp_year, exp_month) < (today.year, today.month)


@dataclass(frozen=True)
class Card:
    """A card in clear, in memory only. Never logged: its repr is masked."""

    pan: str = field(repr=False)
    exp_month: int
    exp_year: int
    brand: str

    @property
    def last4(self) -> str:
        return self.pan[-4:]

    @property
    def bin(self) -> str:
        return self.pan[:6]

    @property
    def masked(self) -> str:
        return mask_pan(self.pan)

    def __repr__(self) -> str:
        return (f"Card({self.masked}, {self.exp_month:02d}/{self.exp_year}, "
                f"brand={self.brand!r})")

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("a Card in clear is not picklable")
