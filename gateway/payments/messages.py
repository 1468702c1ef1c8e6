"""The network messages of a payment, built from the attempts the state machine
decided (and the replies read back as outcomes). Pure: no I/O.

Field by field as ``codec/dialect.py`` writes the dialect: 0100 authorization,
0220 capture of a hold, 0400 void of a hold, 0200 refund (processing code
20). Follow-ups carry the authorization's RRN (37) and field 90 naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from codec import dialect
from gateway.cards import Card
from gateway.network import Trace
from gateway.payments import money
from gateway.payments.machine import Approved, Declined, Outcome, Unknown
from gateway.payments.model import Attempt

#: Field 39 for a request that never reached the network (nothing was sent): treated
#: as "issuer or switch inoperative", so the payment fails cleanly and may be retried.
NOT_SENT = "91"


@dataclass(frozen=True)
class Acceptor:
    """Who we are on the network for one merchant."""

    acquirer_id: str          # field 32
    card_acceptor_id: str     # field 42 (15)
    mcc: str = "5999"         # field 18
    pos_entry_mode: str = "812"   # field 22: e-commerce, credential on file
    pos_condition: str = "59"     # field 25: e-commerce


def _amount(value: int) -> str:
    return f"{value:012d}"


def _original(auth: Attempt, acceptor: Acceptor) -> str:
    return dialect.original_data("0100", auth.stan, auth.transmitted, acceptor.acquirer_id)


def authorization(attempt: Attempt, card: Card, trace: Trace,
                  acceptor: Acceptor, cvc: str | None = None) -> dict[str, str]:
    """0100 for an authorization attempt (the only message that carries the PAN), with
    the card security code in field 48 when the vault still held it."""
    doc = {
        "t": "0100", **trace.fields(), "2": card.pan, "3": dialect.PURCHASE,
        "4": _amount(attempt.amount),
        "14": f"{card.exp_year % 100:02d}{card.exp_month:02d}", "18": acceptor.mcc,
        "22": acceptor.pos_entry_mode, "25": acceptor.pos_condition,
        "32": acceptor.acquirer_id, "42": acceptor.card_acceptor_id,
        "49": money.numeric_code(attempt.currency),
    }
    if cvc:
        doc["48"] = dialect.security_code(cvc)
    return doc


def capture(attempt: Attempt, auth: Attempt, trace: Trace,
            acceptor: Acceptor) -> dict[str, str]:
    """0220 completion: capture ``attempt.amount`` (≤ the hold; the rest is released)."""
    return {
        "t": "0220", **trace.fields(), "3": dialect.PURCHASE, "4": _amount(attempt.amount),
        "32": acceptor.acquirer_id, "37": auth.rrn, "38": auth.approval_code,
        "42": acceptor.card_acceptor_id, "49": money.numeric_code(attempt.currency),
        "90": _original(auth, acceptor),
    }


def void(attempt: Attempt, auth: Attempt, trace: Trace,
         acceptor: Acceptor) -> dict[str, str]:
    """0400 reversal of a hold not captured (field 4 = the authorized amount)."""
    doc = {
        "t": "0400", "3": dialect.PURCHASE, "4": _amount(attempt.amount),
        "7": trace.transmitted, "11": trace.stan, "32": acceptor.acquirer_id,
        "37": auth.rrn, "41": trace.terminal_id, "42": acceptor.card_acceptor_id,
        "49": money.numeric_code(attempt.currency), "90": _original(auth, acceptor),
    }
    return doc


def refund(attempt: Attempt, auth: Attempt, trace: Trace,
           acceptor: Acceptor) -> dict[str, str]:
    """0200 with processing code 20: refund ``attempt.amount`` of the captured payment."""
    return {
        "t": "0200", **trace.fields(), "3": dialect.REFUND, "4": _amount(attempt.amount),
        "32": acceptor.acquirer_id, "37": auth.rrn, "42": acceptor.card_acceptor_id,
        "49": money.numeric_code(attempt.currency), "90": _original(auth, acceptor),
    }


def outcome(reply: Mapping[str, str]) -> Outcome:
    """The outcome a reply carries: field 39 00/10 approves (field 4 = the amount
    approved, field 38 the approval code), any other code declines. A reply without a
    response code (field 39) says nothing about what the network did: Unknown, as if
    no reply had come (an authorization is then reversed, a follow-up repeated). So is
    an approving 0110 without an approval code (field 38): its capture could never be
    sent (a 0220 must carry it), so the hold is reversed rather than left stranded."""
    code = reply.get("39", "")
    if not code:
        return Unknown()
    if (code in (dialect.APPROVED, dialect.PARTIAL_APPROVAL) and reply.get("t") == "0110"
            and not reply.get("38", "").strip()):
        return Unknown()
    if code in (dialect.APPROVED, dialect.PARTIAL_APPROVAL):
        amount = reply.get("4", "")
        return Approved(code, int(amount) if amount.isdigit() else None, reply.get("38", ""))
    return Declined(code if len(code) == 2 else "96")
