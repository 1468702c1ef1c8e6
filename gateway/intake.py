"""Card intake: a client-side encrypted card (compact JWE) becomes a vault token.

The order of checks is fixed: the JWE's shape and algorithms, decryption
through the HSM, the payload's fields, freshness (``iat`` within
``max_age`` back and ``max_skew`` ahead), the card itself (digits, Luhn,
brand, expiry, CVC length), and last, single use (the JWE's digest is stored
with the token in one transaction). Each refusal is an :class:`IntakeError`
with a stable ``code`` and an HTTP status; none of them carries card data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Final

from gateway import jwe
from gateway.cards import Card, brand_of, cvc_length, expired, luhn_ok
from gateway.vault import Replayed, Tokenized, Vault
from hsm_sim.interface import Hsm

REQUIRED: Final = ("number", "exp_month", "exp_year", "cvc", "iat")


class IntakeError(Exception):
    """A refused card or JWE: ``code`` (stable), ``status`` (HTTP), a safe message."""

    def __init__(self, code: str, status: int, message: str,
                 fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.message = message
        self.fields = fields

    def __repr__(self) -> str:
        return f"IntakeError({self.code!r}, {self.status}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (IntakeError, (self.code, self.status, self.message, self.fields))


@dataclass(frozen=True)
class IntakePolicy:
    """Freshness window for ``iat``, in seconds."""

    max_age: int = 600
    max_skew: int = 60


def _int_field(payload: dict[str, Any], name: str) -> int:
    value = payload[name]
    if isinstance(value, bool):
        raise IntakeError("invalid_expiry" if name.startswith("exp") else "invalid_request",
                          422, f"'{name}' must be an integer", (name,))
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 4:
        return int(value)
    raise IntakeError("invalid_expiry" if name.startswith("exp") else "invalid_request",
                      422, f"'{name}' must be an integer", (name,))


def check_card(payload: Any, now: float, policy: IntakePolicy) -> tuple[Card, str]:
    """Validate a decrypted card payload; returns the card and its CVC."""
    if not isinstance(payload, dict):
        raise IntakeError("invalid_payload", 400, "the encrypted card is not a JSON object")
    missing = tuple(n for n in REQUIRED if payload.get(n) in (None, ""))
    if missing:
        raise IntakeError("missing_fields", 422,
                          f"the encrypted card lacks {', '.join(missing)}", missing)
    iat = payload["iat"]
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise IntakeError("invalid_request", 422, "'iat' must be a number of seconds", ("iat",))
    if not now - policy.max_age <= iat <= now + policy.max_skew:
        raise IntakeError("iat_out_of_window", 400,
                          f"the card was encrypted outside the accepted window "
                          f"({policy.max_age}s back, {policy.max_skew}s ahead)", ("iat",))
    number = payload["number"]
    if (not isinstance(number, str) or not number.isascii() or not number.isdigit()
            or not 12 <= len(number) <= 19):
        raise IntakeError("invalid_number", 422, "the card number must be 12 to 19 digits",
                          ("number",))
    if not luhn_ok(number):
        raise IntakeError("incorrect_number", 422, "the card number fails the Luhn check",
                          ("number",))
    brand = brand_of(number)
    if brand is None:
        raise IntakeError("unsupported_brand", 422, "the card brand is not accepted",
                          ("number",))
    exp_month = _int_field(payload, "exp_month")
    exp_year = _int_field(payload, "exp_year")
    if exp_year < 100:
        exp_year += 2000
    if not 1 <= exp_month <= 12 or not 2000 <= exp_year <= 2099:
        raise IntakeError("invalid_expiry", 422, "the expiry date is not a valid month",
                          ("exp_month", "exp_year"))
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if expired(exp_month, exp_year, today):
        raise IntakeError("expired_card", 422, "the card has expired", ("exp_month", "exp_year"))
    cvc = payload["cvc"]
    if (not isinstance(cvc, str) or not cvc.isascii() or not cvc.isdigit()
            or len(cvc) != cvc_length(brand)):
        raise IntakeError("invalid_cvc", 422,
                          f"the security code must be {cvc_length(brand)} digits", ("cvc",))
    return Card(number, exp_month, exp_year, brand), cvc


class CardIntake:
    """Turns compact JWEs into tokens for a merchant."""

    def __init__(self, hsm: Hsm, vault: Vault, *, policy: IntakePolicy | None = None,
                 clock: Callable[[], float] = time.time,
                 executor: Executor | None = None) -> None:
        self._hsm = hsm
        self._vault = vault
        self.policy = policy or IntakePolicy()
        self._clock = clock
        self._executor = executor

    def _open(self, compact: str) -> tuple[Card, str, bytes, int]:
        parsed = jwe.parse(compact, self._hsm.jwe_algorithms)
        plaintext = jwe.open_compact(self._hsm, parsed)
        try:
            payload = json.loads(plaintext.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise IntakeError("invalid_payload", 400,
                              "the encrypted card is not a JSON object") from None
        card, cvc = check_card(payload, self._clock(), self.policy)
        expires = int(payload["iat"]) + self.policy.max_age + self.policy.max_skew + 1
        return card, cvc, parsed.digest, expires

    async def tokenize(self, merchant_id: str, compact: str) -> Tokenized:
        """Decrypt, check and vault one encrypted card. Raises :class:`IntakeError`."""
        try:
            if self._executor is None:
                card, cvc, digest, expires = self._open(compact)
            else:
                loop = asyncio.get_running_loop()
                card, cvc, digest, expires = await loop.run_in_executor(
                    self._executor, self._open, compact)
        except jwe.JweError as exc:
            raise IntakeError(exc.code, 400, exc.message) from None
        try:
            return await self._vault.tokenize(merchant_id, card, cvc=cvc, jwe_digest=digest,
                                              jwe_expires=expires)
        except Replayed:
            raise IntakeError("replayed_jwe", 409,
                              "this encrypted card was already used; encrypt it again") from None
