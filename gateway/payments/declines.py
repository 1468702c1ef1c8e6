"""ISO 8583 response codes (field 39) as the payment errors merchants see.

A decline is data, not an RPC error: it lands in the intent's
``last_payment_error`` as a :class:`~gateway.payments.model.PaymentError` with
Stripe's names: ``code`` (``card_declined``, ``expired_card``,
``incorrect_number``, ``processing_error``), ``decline_code`` (the issuer's
reason), a fixed human ``message`` and the ``network_response_code`` as the
network sent it.

Lost and stolen cards (41, 43) keep their specific ``decline_code`` for the
merchant (as Stripe's API does: merchants need it for fraud handling), but their
``message`` is the generic decline text, so that a merchant who shows the
message to the customer tells a fraudster nothing.

Codes that say the request itself was wrong or could not be processed (12 is a
decline; 25, 30, 94 and 96 are errors on the acquirer's or network's side) are
``processing_error``, not ``card_declined``: the card is not to blame. Every
other code is a ``generic_decline``. Messages are fixed texts: no card data can
reach them. Pure, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from gateway.payments.model import PaymentError

__all__ = [
    "APPROVAL_CODES", "APPROVED", "DECLINES", "PARTIAL_APPROVAL", "TIMEOUT", "decline",
    "is_approval",
]

# The same values as codec.dialect's (not imported: that module loads the codec spec).
APPROVED: Final = "00"
PARTIAL_APPROVAL: Final = "10"

#: Field 39 values that approve a request (39=10: approved for a lower amount).
APPROVAL_CODES: Final = frozenset({APPROVED, PARTIAL_APPROVAL})

_GENERIC = "The card was declined."
_PROCESSING = "An error occurred while processing the card. Try again later."

# field 39 -> (code, decline_code, message)
_ROWS: Final[dict[str, tuple[str, str, str]]] = {
    "05": ("card_declined", "generic_decline", _GENERIC),
    "13": ("card_declined", "invalid_amount",
           "The payment amount is invalid or exceeds the amount allowed."),
    "14": ("incorrect_number", "invalid_number", "The card number is incorrect."),
    "41": ("card_declined", "lost_card", _GENERIC),
    "43": ("card_declined", "stolen_card", _GENERIC),
    "51": ("card_declined", "insufficient_funds",
           "The card has insufficient funds to complete the purchase."),
    "54": ("expired_card", "expired_card", "The card has expired."),
    "N7": ("incorrect_cvc", "incorrect_cvc", "The card's security code is incorrect."),
    "57": ("card_declined", "transaction_not_allowed",
           "The card does not support this type of purchase."),
    "61": ("card_declined", "card_velocity_exceeded",
           "The card's amount limit has been exceeded."),
    "62": ("card_declined", "transaction_not_allowed",
           "The card does not support this type of purchase."),
    "65": ("card_declined", "card_velocity_exceeded",
           "The card's limit on the number of transactions has been exceeded."),
    "25": ("processing_error", "processing_error", _PROCESSING),
    "30": ("processing_error", "processing_error", _PROCESSING),
    "91": ("processing_error", "issuer_not_available",
           "The card issuer could not be reached. Try again later."),
    "94": ("processing_error", "processing_error", _PROCESSING),
    "96": ("processing_error", "processing_error", _PROCESSING),
}

#: Every field 39 value with a specific mapping, as its PaymentError.
DECLINES: Final[Mapping[str, PaymentError]] = MappingProxyType({
    code: PaymentError(err, decline_code, message, code)
    for code, (err, decline_code, message) in _ROWS.items()
})

#: The error of an authorization whose reply never came and that was reversed.
TIMEOUT: Final = PaymentError(
    "network_timeout", "",
    "The card network did not answer in time; the payment was not completed.", "")

_CODE_SHAPE = re.compile(r"[0-9A-Z]{2}")


def is_approval(code: str) -> bool:
    """Whether field 39 ``code`` approves the request (00, or 10 for a partial approval)."""
    return code in APPROVAL_CODES


def decline(code: str) -> PaymentError:
    """The payment error for field 39 ``code`` (any non-approval).

    Unlisted codes are ``card_declined``/``generic_decline``. A value that is not
    two digits or capital letters is not echoed (``network_response_code`` is
    then ``""``). Raises ValueError for an approval code.
    """
    if code in APPROVAL_CODES:
        raise ValueError(f"field 39 {code} is an approval, not a decline")
    known = DECLINES.get(code)
    if known is not None:
        return known
    shown = code if _CODE_SHAPE.fullmatch(code) else ""
    return PaymentError("card_declined", "generic_decline", _GENERIC, shown)
