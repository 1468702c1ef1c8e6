"""netsim's issuer rules: what the issuer decides, as pure functions over data.

Owns

* :class:`Request`: a financial request (0100, 0220, 0200, 0400, 0420, 0421,
  and the repeats 0221, 0201, 0401) parsed from a decoded message, with the
  card kept only in memory;
* the authorization rules (:func:`authorize`): the test-card table
  (:data:`TEST_CARDS`, data), Luhn (14) and expiry (54) checks, approval codes;
* the decisions for messages that refer to an original authorization
  (:func:`decide`): capture, refund, void and timeout reversal advice, taken
  against a :class:`Hold` snapshot of that authorization; a repeat (0221, 0201,
  0401) processed as its original is decided as that original;
* whether a repeat carries its processed original's fields
  (:func:`repeats_original`).

No I/O and no clock (callers pass ``today``); the only state is the random
source of approval codes. The ledger calls :func:`locate` and :func:`decide`
inside its transaction and applies the :class:`Decision`.
"""

from __future__ import annotations

import functools
import random
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from types import MappingProxyType

from codec import dialect

__all__ = [
    "ADVICES",
    "ALREADY_REVERSED",
    "APPROVED",
    "APPROVED_OUTCOME",
    "DECLINED_OUTCOME",
    "DUPLICATE",
    "EXPIRED_CARD",
    "INVALID_AMOUNT",
    "INVALID_CARD",
    "INVALID_TRANSACTION",
    "NOTHING_TO_REVERSE",
    "NOT_SIGNED_ON",
    "NO_ORIGINAL",
    "REPEAT",
    "REPEATS",
    "REPEAT_MISMATCH",
    "TEST_CARDS",
    "AuthDecision",
    "CardRule",
    "Decision",
    "Delivery",
    "EntryKind",
    "Hold",
    "Original",
    "Processed",
    "Request",
    "Status",
    "authorize",
    "base_mti",
    "decide",
    "is_expired",
    "kind_of",
    "locate",
    "luhn_valid",
    "new_approval_code",
    "repeats_original",
]

# Response codes (field 39) netsim answers with; all are in dialect.RESPONSE_CODES.
APPROVED = dialect.APPROVED            # 00
DO_NOT_HONOUR = "05"
INVALID_TRANSACTION = "12"
INVALID_AMOUNT = "13"
INVALID_CARD = "14"
NO_ORIGINAL = "25"                     # unable to locate original
FORMAT_ERROR = dialect.FORMAT_ERROR    # 30
INSUFFICIENT_FUNDS = "51"
EXPIRED_CARD = "54"
NOT_SIGNED_ON = "91"
DUPLICATE = "94"
SYSTEM_ERROR = "96"

# Outcomes written to the ledger next to each entry (what the message did).
APPROVED_OUTCOME = "approved"
DECLINED_OUTCOME = "declined"
CAPTURED = "captured"
REFUNDED = "refunded"
REVERSED = "reversed"
REMAINDER_REVERSED = "remainder-reversed"
ALREADY_REVERSED = "already-reversed"
NOTHING_TO_REVERSE = "nothing-to-reverse"
NOT_APPROVED = "not-approved"
FULLY_CAPTURED = "fully-captured"
REJECTED = "rejected"
REPEAT = "repeat"            # a repeat answered with its processed original's outcome
REPEAT_MISMATCH = "repeat-mismatch"  # a repeat unlike its processed original (30, unrecorded)


class Delivery(StrEnum):
    """How the answer to an authorization travels back."""

    NORMAL = "normal"   # sent at once (subject to faults)
    LOST = "lost"       # never sent: the approval is recorded, the 0110 is lost
    SLOW = "slow"       # sent after netsim's ``slow_delay``


class Status(StrEnum):
    """The state of an authorization in the ledger."""

    APPROVED = "approved"   # approved; may be (partly) captured and refunded
    DECLINED = "declined"   # answered with anything but 00; holds nothing
    REVERSED = "reversed"   # voided or reversed; its uncaptured remainder released


class EntryKind(StrEnum):
    """What a ledger entry records."""

    AUTHORIZATION = "authorization"   # 0100
    CAPTURE = "capture"               # 0220 (0221 repeat)
    REFUND = "refund"                 # 0200 with processing code 20xxxx (0201 repeat)
    REVERSAL = "reversal"             # 0400 void (0401 repeat), 0420 advice, 0421 repeat


_KINDS: Mapping[str, EntryKind] = MappingProxyType({
    "0100": EntryKind.AUTHORIZATION,
    "0220": EntryKind.CAPTURE,
    "0200": EntryKind.REFUND,
    "0400": EntryKind.REVERSAL,
    "0420": EntryKind.REVERSAL,
    "0421": EntryKind.REVERSAL,
    "0221": EntryKind.CAPTURE,
    "0201": EntryKind.REFUND,
    "0401": EntryKind.REVERSAL,
})
ADVICES = frozenset({"0420", "0421"})
#: Each repeat MTI and the MTI of the original it repeats (``codec.dialect.REPEATS``).
REPEATS: Mapping[str, str] = dialect.REPEATS


def base_mti(mti: str) -> str:
    """The MTI ``mti`` repeats (0220 for 0221, ...), or ``mti`` itself."""
    return REPEATS.get(mti, mti)


def kind_of(mti: str) -> EntryKind:
    """The ledger entry kind of a financial request MTI (KeyError for others)."""
    return _KINDS[mti]


@dataclass(frozen=True)
class CardRule:
    """What the issuer does with one test card."""

    code: str
    delivery: Delivery = Delivery.NORMAL
    note: str = ""


#: The test-card table (ARCHITECTURE.md). Any other Luhn-valid, unexpired PAN approves.
TEST_CARDS: Mapping[str, CardRule] = MappingProxyType({
    "4242424242424242": CardRule(APPROVED, note="approves"),
    "4000000000000002": CardRule(DO_NOT_HONOUR, note="declines: do not honour"),
    "4000000000009995": CardRule(INSUFFICIENT_FUNDS, note="declines: insufficient funds"),
    "4000000000000119": CardRule(SYSTEM_ERROR, note="answers: system malfunction"),
    "4000000000000259": CardRule(APPROVED, Delivery.LOST,
                                 note="approves and records, the response is lost"),
    "4000000000000267": CardRule(APPROVED, Delivery.SLOW,
                                 note="approves, answers after the slow delay"),
})
DEFAULT_RULE = CardRule(APPROVED, note="any other valid card approves")


@dataclass(frozen=True)
class Original:
    """The original authorization a message refers to (field 90, split)."""

    mti: str
    stan: str
    transmitted: str
    acquirer: str


@dataclass(frozen=True)
class Request:
    """A financial request, parsed from a decoded message.

    ``pan`` is the full card number of a 0100 (empty for other MTIs); it is kept
    out of ``repr`` and never stored: the ledger keeps :attr:`card_bin` and
    :attr:`card_last4` only. Absent optional fields are empty strings.
    """

    mti: str
    processing_code: str
    stan: str
    transmitted: str
    rrn: str
    terminal: str
    merchant: str
    acquirer: str
    amount: int
    currency: str
    approval_code: str = ""
    expiry: str = ""
    original: Original | None = None
    pan: str = field(default="", repr=False)
    security_code_failed: bool = False  # field 48 carried the test code 000

    @property
    def kind(self) -> EntryKind:
        return kind_of(self.mti)

    @property
    def card_bin(self) -> str:
        return self.pan[:6] if len(self.pan) >= 12 else ""

    @property
    def card_last4(self) -> str:
        return self.pan[-4:] if len(self.pan) >= 12 else ""

    @classmethod
    def from_doc(cls, doc: Mapping[str, str]) -> Request:
        """Parse a decoded financial request; ValueError if a value is unusable.

        Presence of the mandatory fields is the caller's check
        (``dialect.REQUIRED_FIELDS``); the codec already enforced the widths
        and that numeric fields hold digits.
        """
        mti = doc.get("t", "")
        if mti not in _KINDS:
            raise ValueError("not a financial request")
        expiry = doc.get("14", "")
        if expiry and (len(expiry) != 4 or not expiry.isdigit()
                       or not 1 <= int(expiry[2:]) <= 12):
            raise ValueError("field 14 is not YYMM")
        security_code_failed = False
        if "48" in doc:   # checked, never kept
            security_code_failed = dialect.parse_security_code(doc["48"]) == BAD_SECURITY_CODE
        original = None
        if "90" in doc:
            o_mti, o_stan, o_time, o_acq = dialect.parse_original_data(doc["90"])
            original = Original(o_mti, o_stan, o_time, o_acq)
        amount = doc.get("4", "0")
        if not amount.isdigit():
            raise ValueError("field 4 is not numeric")
        # Built without the dataclass __init__, whose frozen field-by-field assignments
        # cost more than all the parsing above; every field is set, as __init__ would.
        request = object.__new__(cls)
        request.__dict__.update(
            mti=mti,
            processing_code=doc.get("3", ""),
            stan=doc.get("11", ""),
            transmitted=doc.get("7", ""),
            rrn=doc.get("37", ""),
            terminal=doc.get("41", ""),
            merchant=doc.get("42", ""),
            acquirer=doc.get("32", ""),
            amount=int(amount),
            currency=doc.get("49", ""),
            approval_code=doc.get("38", ""),
            expiry=expiry,
            original=original,
            pan=doc.get("2", "") if mti == "0100" else "",
            security_code_failed=security_code_failed,
        )
        return request


# ---------------------------------------------------------------- authorization


@dataclass(frozen=True)
class AuthDecision:
    """The issuer's answer to a 0100: a response code and how it travels."""

    code: str
    delivery: Delivery = Delivery.NORMAL

    @property
    def approved(self) -> bool:
        return self.code == APPROVED


_DOUBLED = str.maketrans("0123456789", "0246813579")  # each digit doubled, digits summed


def luhn_valid(pan: str) -> bool:
    """Whether ``pan`` is 12 to 19 digits with a valid Luhn check digit."""
    if not (12 <= len(pan) <= 19 and pan.isascii() and pan.isdigit()):
        return False
    digits = pan[-1::-2] + pan[-2::-2].translate(_DOUBLED)
    return (sum(digits.encode()) - 48 * len(digits)) % 10 == 0


@functools.lru_cache(maxsize=4096)  # a few expiry dates, the same day: parsing costs more
def is_expired(yymm: str, today: date) -> bool:
    """Whether a card expiring ``yymm`` (field 14) is expired on ``today``.

    A card is valid through the last day of its expiry month. ``YY`` is taken in
    the century of ``today``.
    """
    year = today.year // 100 * 100 + int(yymm[:2])
    return (year, int(yymm[2:])) < (today.year, today.month)


_REFUSALS = {code: AuthDecision(code) for code in (INVALID_TRANSACTION, INVALID_CARD,
                                                   EXPIRED_CARD)}
_DECISIONS = {pan: AuthDecision(rule.code, rule.delivery) for pan, rule in TEST_CARDS.items()}
_DEFAULT_DECISION = AuthDecision(DEFAULT_RULE.code, DEFAULT_RULE.delivery)
#: Field 48's security code ``000`` stands for a wrong one: declined N7 (after Luhn and
#: expiry, before the test cards). Any other code is accepted.
BAD_SECURITY_CODE = "000"
_SECURITY_CODE_MISMATCH = AuthDecision("N7")


def authorize(request: Request, today: date) -> AuthDecision:
    """Decide a 0100: processing code 00xxxx (else 12), Luhn (else 14), expiry (else
    54), security code 000 in field 48 (N7), then the test-card table; any other card
    approves."""
    if not request.processing_code.startswith("00"):
        return _REFUSALS[INVALID_TRANSACTION]
    if not luhn_valid(request.pan):
        return _REFUSALS[INVALID_CARD]
    if request.expiry and is_expired(request.expiry, today):
        return _REFUSALS[EXPIRED_CARD]
    if request.security_code_failed:
        return _SECURITY_CODE_MISMATCH
    return _DECISIONS.get(request.pan, _DEFAULT_DECISION)


_APPROVAL_ALPHABET = string.ascii_uppercase + string.digits
#: Every pair of approval-code characters: a 36**2-digit base, three digits a code.
_APPROVAL_PAIRS = tuple(a + b for a in _APPROVAL_ALPHABET for b in _APPROVAL_ALPHABET)
_RNG = random.Random()  # seeded from the OS; approval codes need variety, not secrecy


def new_approval_code() -> str:
    """A fresh approval code (field 38): 6 random upper-case letters and digits."""
    n = _RNG.getrandbits(64)  # 64 bits for 31 needed: the modulo bias is below 1e-9
    pairs, base = _APPROVAL_PAIRS, len(_APPROVAL_PAIRS)
    return pairs[n % base] + pairs[n // base % base] + pairs[n // (base * base) % base]


# ---------------------------------------------------------------- messages about an original


@dataclass(frozen=True)
class Hold:
    """A snapshot of an authorization, as the ledger holds it, for :func:`decide`.

    Amounts are integer minor units; ``reversed`` is what reversals released.
    """

    status: Status
    amount: int
    currency: str
    rrn: str
    approval_code: str
    captured: int = 0
    refunded: int = 0
    reversed: int = 0

    @property
    def remaining(self) -> int:
        """What is still held: authorized minus captured minus released."""
        if self.status is not Status.APPROVED:
            return 0
        return self.amount - self.captured - self.reversed


@dataclass(frozen=True)
class Decision:
    """What a message that refers to an original does.

    ``effect`` is the amount (minor units) it captured, refunded or released;
    ``changed`` whether it changed the authorization (a reversal of a zero-amount
    authorization changes its status with a zero effect).
    """

    code: str
    outcome: str
    effect: int = 0
    changed: bool = False


def _reject(code: str) -> Decision:
    return Decision(code, REJECTED)


def locate(hold: Hold | None, request: Request) -> Hold | None:
    """``hold`` if it is the original ``request`` names, else None.

    The ledger found ``hold`` by terminal (41) and field 90 (original MTI 0100,
    STAN and field 7); it must also carry the request's RRN (37) and, when the
    request carries one (0220), its approval code (38).
    """
    if hold is None or hold.rrn != request.rrn:
        return None
    if request.approval_code and request.approval_code != hold.approval_code:
        return None
    return hold


def decide(hold: Hold | None, request: Request) -> Decision:
    """Decide a capture, refund, void or reversal advice against the located original
    (see :func:`locate`; None when there is none). A repeat (0221, 0201, 0401) is
    decided as the message it repeats: the caller only asks when that message was
    not processed."""
    mti = REPEATS.get(request.mti, request.mti)
    if mti == "0220":
        return _capture(hold, request)
    if mti == "0200":
        return _refund(hold, request)
    if mti == "0400":
        return _void(hold, request)
    if mti in ADVICES:
        return _advice(hold)
    raise ValueError("not a message about an original")


@dataclass(frozen=True)
class Processed:
    """What the ledger journalled of a processed message, as :func:`repeats_original`
    compares it: fields 3, 4, 32, 37, 42, 49, field 90's STAN and field 7, and the
    authorization's approval code (38) when the message located one (else empty)."""

    processing_code: str
    amount: int
    acquirer: str
    rrn: str
    merchant: str
    currency: str
    original_stan: str
    original_transmitted: str
    approval_code: str


def repeats_original(processed: Processed, request: Request) -> bool:
    """Whether the repeat ``request`` carries the fields of its processed original.

    The ledger keeps what :class:`Processed` holds, so that is what is compared;
    field 38 only when both the repeat and the original's journal row have one
    (the row has it when the original located its authorization, whose approval
    code the original's field 38, if any, then matched).
    """
    original = request.original
    if original is None:
        return False
    if (processed.approval_code and request.approval_code
            and processed.approval_code != request.approval_code):
        return False
    return (processed.processing_code == request.processing_code
            and processed.amount == request.amount
            and processed.acquirer == request.acquirer
            and processed.rrn == request.rrn
            and processed.merchant == request.merchant
            and processed.currency == request.currency
            and processed.original_stan == original.stan
            and processed.original_transmitted == original.transmitted)


def _capture(hold: Hold | None, request: Request) -> Decision:
    if hold is None:
        return _reject(NO_ORIGINAL)
    if hold.status is not Status.APPROVED or hold.currency != request.currency:
        return _reject(INVALID_TRANSACTION)
    if request.amount <= 0 or hold.captured + request.amount > hold.amount:
        return _reject(INVALID_AMOUNT)
    return Decision(APPROVED, CAPTURED, request.amount, True)


def _refund(hold: Hold | None, request: Request) -> Decision:
    if not request.processing_code.startswith("20"):
        return _reject(INVALID_TRANSACTION)
    if hold is None:
        return _reject(NO_ORIGINAL)
    if hold.status is Status.DECLINED or hold.captured == 0 or hold.currency != request.currency:
        return _reject(INVALID_TRANSACTION)
    if request.amount <= 0 or hold.refunded + request.amount > hold.captured:
        return _reject(INVALID_AMOUNT)
    return Decision(APPROVED, REFUNDED, request.amount, True)


def _void(hold: Hold | None, request: Request) -> Decision:
    if hold is None:
        return _reject(NO_ORIGINAL)
    if hold.status is Status.REVERSED:
        return Decision(APPROVED, ALREADY_REVERSED)
    if hold.status is Status.DECLINED or hold.currency != request.currency:
        return _reject(INVALID_TRANSACTION)
    if hold.captured > 0:
        # After a partial capture a 0400 for exactly the uncaptured remainder releases it.
        if hold.remaining == 0:
            return _reject(INVALID_TRANSACTION)
        if request.amount != hold.remaining:
            return _reject(INVALID_AMOUNT)
        return Decision(APPROVED, REMAINDER_REVERSED, hold.remaining, True)
    if request.amount != hold.amount:
        return _reject(INVALID_AMOUNT)
    return Decision(APPROVED, REVERSED, hold.amount, True)


def _advice(hold: Hold | None) -> Decision:
    """A timeout reversal advice is always acknowledged (00); it releases whatever of
    the hold is not captured, once."""
    if hold is None:
        return Decision(APPROVED, NOTHING_TO_REVERSE)
    if hold.status is Status.DECLINED:
        return Decision(APPROVED, NOT_APPROVED)
    if hold.status is Status.REVERSED:
        return Decision(APPROVED, ALREADY_REVERSED)
    if hold.amount > 0 and hold.remaining == 0:
        return Decision(APPROVED, FULLY_CAPTURED)
    outcome = REMAINDER_REVERSED if hold.captured > 0 else REVERSED
    return Decision(APPROVED, outcome, hold.remaining, True)
