"""The network dialect netsim and the gateway speak: MTIs, codes, matching, and
the fields each message carries. Pure data and small pure functions, no I/O.

Wire: a 2-byte big-endian length header (``codec.framing.BINARY2``) around one
ISO 8583:1987 message encoded with ``codec.specs.network``.

Every message carries field 41 (terminal id) and field 11 (STAN); a response
repeats both, and is matched to its request by ``(41, 11)`` after MTI mapping
(:data:`RESPONSE_MTI`). Field 7 is the transmission date and time, UTC,
``MMDDhhmmss``.

Messages (``+`` = present when it applies):

========  =============================================================  =========================
request   fields                                                         response (fields)
========  =============================================================  =========================
0800      7 11 32 41 70 (001 sign-on, 301 echo, 002 sign-off)            0810: 7 11 32 39 41 70
0100      2 3 4 7 11 12 13 14 18 22 25 32 37 41 42 49 +43 +48 +55        0110: 2 3 4 7 11 12 13 32
          (3 = 000000 purchase; 37 = RRN chosen by the acquirer)           37 +38 39 41 42 49
0220      3 4 7 11 12 13 32 37 38 41 42 49 90 (capture of a hold;        0230: 3 4 7 11 32 37 39 41
          4 = amount captured, <= the hold; 37/38 of the 0100)             42 49
0200      3 4 7 11 12 13 32 37 41 42 49 90 (refund: 3 = 200000;          0210: 3 4 7 11 32 37 39 41
          37 of the 0100; total refunds <= total captured)                 42 49
0400      3 4 7 11 32 37 41 42 49 90 (void: reversal of a hold not yet   0410: 3 4 7 11 32 37 39 41
          captured; 4 = the original amount)                               42 49
0420      as 0400 (timeout reversal advice); repeated as 0421 with the   0430: 3 4 7 11 32 37 39 41
          same fields and a new STAN until a 0430 arrives                  42 49
0221      as 0220 (completion repeat)                                    0230: as for 0220
0201      as 0200 (financial request repeat: refund repeat)              0210: as for 0200
0401      as 0400 (reversal repeat)                                      0410: as for 0400
========  =============================================================  =========================

Repeats (0221, 0201, 0401; the last MTI digit 1 means "repeat") are how an
acquirer resolves a 0220, 0200 or 0400 whose reply never came, without it ever
being applied twice. A repeat carries exactly the original's fields (same STAN
and field 7); it is answered with the original's outcome when the original was
processed, and is processed as the original when it was not. The original of a
repeat is the message with the repeat's base MTI (0220 for 0221, 0200 for 0201,
0400 for 0401), terminal (41), STAN (11) and field 7 -- or an earlier repeat of
it that was processed as the original. So: original then repeat, the repeat
gets the original's code and changes nothing; repeat first (the original was
lost), the repeat is the original, a later copy of the original is a duplicate
(``94``) and a further repeat gets the first one's code. A repeat whose fields
differ from its processed original's is a format error (``30``) and changes
nothing. A repeat's reply has the original reply's MTI, fields and key, so a late
reply to the original answers its repeat just as well. (0421 is not such a
repeat: it repeats a 0420 advice under a new STAN.)

Field 48 (additional data, LLLVAR) of a 0100 carries the card security code when
the acquirer holds one: ``CVC`` + its length as 2 digits + the 3 or 4 digits
(e.g. ``CVC03123``). It is card data: never stored, logged or echoed.

Field 90 (original data elements, n42) names the original 0100:
original MTI (4) + original STAN (6) + original field 7 (10) + acquirer id
(field 32, right-justified, zero-padded to 11) + 11 zeros.

Response codes used (field 39): see :data:`RESPONSE_CODES`. A financial request
on a connection that has not signed on is answered with ``91``. A request that
decodes but misses a mandatory field, or carries a bad value, is answered with
``30`` when its fields 11 and 41 can be read, and dropped otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, datetime

from codec import specs
from codec.spec import CompiledSpec, load_spec

#: The compiled network spec.
SPEC: CompiledSpec = load_spec(specs.network, "network")

RESPONSE_MTI: Mapping[str, str] = {
    "0800": "0810",
    "0100": "0110",
    "0200": "0210",
    "0220": "0230",
    "0400": "0410",
    "0420": "0430",
    "0421": "0430",
    "0221": "0230",
    "0201": "0210",
    "0401": "0410",
}
REQUEST_MTIS = frozenset(RESPONSE_MTI)
RESPONSE_MTIS = frozenset(RESPONSE_MTI.values())

# Network management information codes (field 70).
SIGN_ON = "001"
SIGN_OFF = "002"
ECHO = "301"

# Processing codes (field 3).
PURCHASE = "000000"
REFUND = "200000"

APPROVED = "00"
PARTIAL_APPROVAL = "10"
FORMAT_ERROR = "30"
RESPONSE_CODES: Mapping[str, str] = {
    "00": "approved",
    "05": "do not honour",
    "10": "partial approval",
    "12": "invalid transaction",
    "13": "invalid amount",
    "14": "invalid card number",
    "25": "unable to locate original",
    "30": "format error",
    "51": "insufficient funds",
    "54": "expired card",
    "57": "transaction not permitted",
    "61": "exceeds withdrawal limit",
    "65": "exceeds withdrawal frequency",
    "N7": "card security code mismatch",
    "91": "issuer or switch inoperative",
    "94": "duplicate transmission",
    "96": "system malfunction",
}

#: Mandatory fields of each request, as netsim checks them.
REQUIRED_FIELDS: Mapping[str, tuple[str, ...]] = {
    "0800": ("7", "11", "41", "70"),
    "0100": ("2", "3", "4", "7", "11", "37", "41", "42", "49"),
    "0220": ("3", "4", "7", "11", "37", "38", "41", "42", "49", "90"),
    "0200": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
    "0400": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
    "0420": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
    "0421": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
    "0221": ("3", "4", "7", "11", "37", "38", "41", "42", "49", "90"),
    "0201": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
    "0401": ("3", "4", "7", "11", "37", "41", "42", "49", "90"),
}
#: Each repeat MTI (0221, 0201, 0401) and the MTI of the original it repeats.
REPEATS: Mapping[str, str] = {"0221": "0220", "0201": "0200", "0401": "0400"}


def response_mti(mti: str) -> str | None:
    """The MTI that answers ``mti``, or None when ``mti`` is not a request."""
    return RESPONSE_MTI.get(mti)


def match_key(doc: Mapping[str, str]) -> tuple[str, str]:
    """The key that pairs a response with its request: (field 41, field 11)."""
    return doc.get("41", ""), doc.get("11", "")


_now_cache: tuple[int, str] = (-1, "")


def transmission_time(moment: datetime | None = None) -> str:
    """Field 7: ``MMDDhhmmss`` in UTC (of ``moment``, or now)."""
    global _now_cache  # noqa: PLW0603 - a one-entry cache: strftime is slow per message
    if moment is not None:
        return moment.astimezone(UTC).strftime("%m%d%H%M%S")
    second = int(time.time())
    if _now_cache[0] != second:
        _now_cache = (second, datetime.fromtimestamp(second, UTC).strftime("%m%d%H%M%S"))
    return _now_cache[1]


def security_code(cvc: str) -> str:
    """Field 48 of a 0100 carrying the card security code: ``CVC`` + length + digits."""
    if not (cvc.isascii() and cvc.isdigit() and 3 <= len(cvc) <= 4):
        raise ValueError("a card security code is 3 or 4 digits")
    return f"CVC{len(cvc):02d}{cvc}"


def parse_security_code(field48: str) -> str:
    """The card security code in field 48 (ValueError if the field is not one)."""
    if (len(field48) < 8 or not field48.startswith("CVC") or not field48[3:5].isdigit()
            or int(field48[3:5]) != len(field48) - 5 or not field48[5:].isdigit()
            or not 3 <= len(field48) - 5 <= 4):
        raise ValueError("field 48 is not CVC + length + 3 or 4 digits")
    return field48[5:]


def original_data(mti: str, stan: str, transmitted: str, acquirer: str) -> str:
    """Field 90 for a message that refers to an original request."""
    if len(mti) != 4 or len(stan) != 6 or len(transmitted) != 10 or len(acquirer) > 11:
        raise ValueError("original data elements have the wrong widths")
    return f"{mti}{stan}{transmitted}{acquirer:0>11}{'0' * 11}"


def parse_original_data(field90: str) -> tuple[str, str, str, str]:
    """Split field 90 into (original MTI, STAN, transmission time, acquirer id)."""
    if len(field90) != 42 or not field90.isdigit():
        raise ValueError("field 90 must be 42 digits")
    return field90[0:4], field90[4:10], field90[10:20], field90[20:31].lstrip("0") or "0"
