"""netsim: a card-network (issuer host) simulator over mutual TLS.

It speaks ``codec.dialect`` (2-byte length header, ISO 8583:1987) to the
gateway, decides as the test-card table says, injects faults, keeps its own
ledger (the truth reliability tests compare the gateway against) and writes
daily settlement files.

Modules, one job each:

* :mod:`netsim.server`: :class:`NetSim`, the asyncio TLS server (sign-on,
  message flow: requests run as callbacks, no task per request);
* :mod:`netsim.connection`: one asyncio protocol per connection (framing,
  bursts, coalesced writes, back-pressure);
* :mod:`netsim.rules`: pure issuer decisions (test cards, Luhn, expiry,
  captures, refunds, voids, reversal advices);
* :mod:`netsim.ledger`: :class:`Ledger`, the SQLite ledger (group commit) and
  its records;
* :mod:`netsim.store`: the ledger's schema, transactions and write connection;
* :mod:`netsim.faults`: :class:`Faults`, latency, drops, resets, refusals;
* :mod:`netsim.settlement`: settlement files (format in ``SETTLEMENT.md``);
* :mod:`netsim.cli`: ``paygate netsim serve | ledger | settle``.

Where the dialect (``codec/dialect.py``) is silent, netsim decides as follows:

* **Finding the original.** A 0220, 0200, 0400, 0420 or 0421 names its 0100 by
  terminal (41) and field 90 (original MTI, which must be 0100, STAN and field
  7; the acquirer id in field 90 is not compared). The authorization found must
  also carry the message's RRN (37) and, for a 0220, its approval code (38);
  otherwise it is "not located".
* **Capture (0220).** Not located: 25. Declined or reversed authorization, or
  another currency: 12. Amount zero, or total captured above the authorized
  amount: 13. Several partial captures are allowed up to the authorized amount.
* **Refund (0200).** Processing code must start with 20 (else 12). Not located:
  25. Nothing captured, declined, or another currency: 12. Amount zero, or total
  refunded above total captured: 13.
* **Void (0400).** Not located: 25. Already reversed: 00 and nothing changes
  (idempotent). Declined, fully captured, or another currency: 12. Field 4
  must equal the authorized amount (else 13); after a partial capture, a 0400
  for exactly the uncaptured remainder releases it (the captures stay), so a
  capture for less than the hold can release the rest.
* **Reversal advice (0420, 0421).** Always acknowledged with 0430 39=00 (unless
  malformed: 30). It releases whatever of the hold is not captured, once:
  partly captured holds keep their captures and release the remainder; a fully
  captured, declined or already reversed authorization, or one not located
  (the 0100 never arrived), changes nothing and is recorded as such. Every
  advice and repeat is recorded with its own STAN.
* **Duplicates.** A 0100, 0220, 0200 or 0400 whose MTI, terminal, STAN and field
  7 were already processed is answered 94 and records nothing; for a 0220, 0200
  or 0400, a repeat of it processed in its place (below) counts as it. Advices
  are never duplicates (they are acknowledged every time).
* **Repeats (0221, 0201, 0401).** The original of a repeat is the 0220, 0200 or
  0400 (respectively) with the same terminal, STAN and field 7, or an earlier
  repeat of it that was processed in its place. Original processed: the repeat
  is answered with the original's response code (the reply echoes the repeat,
  whose fields are the original's: the original reply's fields 4 etc.), is
  journalled with that code, outcome ``repeat``, effect 0 and ``changed``
  False, and is never settled. Original never processed (lost on the way):
  the repeat is decided exactly as the original would have been and journalled
  as such, under its own MTI; a later copy of the original is then a duplicate
  (94) and a further repeat gets this one's code. A repeat must carry its
  processed original's fields: 3, 4, 32, 37, 42, 49 and field 90's STAN and
  field 7 are compared with the original's journal row, and 38 with the
  approval code of the authorization the original located (when it did); any
  difference is a format error (30) that records nothing. Fields 12 and 13 are
  not compared (the ledger does not keep them).
* **Authorization.** Processing code must start with 00 (else 12); then Luhn
  (14), expiry (field 14, YYMM, valid through the end of that month; 54), the
  security code (field 48 ``CVC`` + length + digits, optional; ``000`` stands for
  a wrong one: N7; it is checked and never kept), then the test cards. An
  unparseable field 14, 48 or 90 is a format error (30).
* **Before sign-on.** 0800 echo (301) is answered before sign-on; any other
  field 70 code gets 30. A frame that does not decode is answered 30 (when 11
  and 41 are readable) whether or not the connection signed on.
* **Faults** apply to every response, network management included.
"""

from netsim.faults import Faults
from netsim.ledger import Authorization, Entry, Ledger, LedgerClosedError, Outcome
from netsim.rules import TEST_CARDS, Delivery, EntryKind, Request, Status
from netsim.server import NetSim
from netsim.settlement import (
    Detail,
    Header,
    Settlement,
    SettlementError,
    Totals,
    Trailer,
    parse_settlement,
    write_settlement,
)

__all__ = [
    "TEST_CARDS",
    "Authorization",
    "Delivery",
    "Detail",
    "Entry",
    "EntryKind",
    "Faults",
    "Header",
    "Ledger",
    "LedgerClosedError",
    "NetSim",
    "Outcome",
    "Request",
    "Settlement",
    "SettlementError",
    "Status",
    "Totals",
    "Trailer",
    "parse_settlement",
    "write_settlement",
]
