"""Field matchers of the case format, and mismatches that never show card data.

A field's expectation in a case is one of (JSON):

* ``"text"`` - exactly this value;
* ``{"absent": true}`` / ``{"present": true}`` - the field must not / must be there;
* ``{"regex": "^\\d{6}$"}`` - the value must match (``re.fullmatch``);
* ``{"same": "0.37"}`` - equal to field 37 of the request of exchange 0 of the same
  case; ``{"same": "0.reply.38"}`` refers to the reply sent for exchange 0;
* ``{"original_of": 0}`` - field 90 naming the request of exchange 0 (its MTI,
  STAN, field 7 and field 32, as ``codec.dialect.original_data`` builds it).

A :class:`Mismatch` names the case, the exchange, the MTI and the field, with the
expected and the actual value as :func:`shown` displays them: a PAN keeps at most its
first 6 and last 4 digits, a card security code is never shown, other card data
(tracks, PIN block, chip data) only by length.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from codec import dialect
from codec.errors import SENSITIVE_FIELDS, mask_pan

__all__ = [
    "Absent",
    "CaseError",
    "Exact",
    "Matcher",
    "Mismatch",
    "OriginalOf",
    "Present",
    "Regex",
    "Same",
    "Seen",
    "parse_matcher",
    "shown",
]


class CaseError(ValueError):
    """A case or recording is not valid; the message names the file and the JSON path."""


@dataclass(frozen=True)
class Mismatch:
    """One difference between what a case expects and what happened."""

    case: str
    index: int        # the exchange (0-based); -1: the case's outcome or actions
    mti: str
    field: str        # a field number, "mti", "message", "status", "error.code", ...
    expected: str
    actual: str

    def render(self) -> str:
        where = f"exchange {self.index} ({self.mti})" if self.index >= 0 else "outcome"
        return (f"{self.case}: {where} field {self.field}: expected {self.expected}, "
                f"got {self.actual}")


def shown(field: str, value: str | None) -> str:
    """``value`` of ``field`` as a report may show it (card data masked)."""
    if value is None:
        return "(absent)"
    if field == "2":
        return repr(mask_pan(value))
    if field == "48" and "CVC" in value:
        return "'<card security code>'"
    if field in SENSITIVE_FIELDS:
        return f"'<redacted {len(value)} chars>'"
    return repr(value)


@dataclass(frozen=True)
class Seen:
    """What a case has exchanged so far: the requests received and replies sent."""

    requests: Sequence[Mapping[str, str]]
    replies: Sequence[Mapping[str, str] | None]

    def lookup(self, ref: str) -> str | None:
        parts = ref.split(".")
        index = int(parts[0])
        if len(parts) == 3:
            reply = self.replies[index] if index < len(self.replies) else None
            return None if reply is None else reply.get(parts[2])
        doc = self.requests[index] if index < len(self.requests) else None
        return None if doc is None else doc.get(parts[1])


@dataclass(frozen=True)
class Exact:
    value: str

    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        return None if actual == self.value else shown(field, self.value)


@dataclass(frozen=True)
class Absent:
    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        return None if actual is None else "(absent)"


@dataclass(frozen=True)
class Present:
    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        return None if actual is not None else "(present)"


@dataclass(frozen=True)
class Regex:
    pattern: str

    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        if actual is not None and re.fullmatch(self.pattern, actual):
            return None
        return f"/{self.pattern}/"


@dataclass(frozen=True)
class Same:
    ref: str

    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        wanted = seen.lookup(self.ref)
        if wanted is not None and actual == wanted:
            return None
        return f"{shown(field, wanted)} (same as {self.ref})"


@dataclass(frozen=True)
class OriginalOf:
    index: int

    def check(self, field: str, actual: str | None, seen: Seen) -> str | None:
        wanted = None
        if self.index < len(seen.requests):
            doc = seen.requests[self.index]
            try:
                wanted = dialect.original_data(doc.get("t", ""), doc.get("11", ""),
                                               doc.get("7", ""), doc.get("32", ""))
            except ValueError:
                wanted = None
        if wanted is not None and actual == wanted:
            return None
        return f"{shown(field, wanted)} (original data of exchange {self.index})"


Matcher = Exact | Absent | Present | Regex | Same | OriginalOf

_REF = re.compile(r"\d+\.(reply\.)?\d{1,3}")


def parse_matcher(value: Any, where: str, exchanges: int) -> Matcher:
    """The matcher a case writes as ``value``; ``exchanges``: how many come before."""
    if isinstance(value, str):
        return Exact(value)
    if not isinstance(value, dict) or len(value) != 1:
        raise CaseError(f"{where}: expected a string or an object with one of absent, "
                        "present, regex, same, original_of")
    (kind, arg), = value.items()
    if kind in ("absent", "present"):
        if arg is not True:
            raise CaseError(f"{where}.{kind}: expected true")
        return Absent() if kind == "absent" else Present()
    if kind == "regex":
        if not isinstance(arg, str):
            raise CaseError(f"{where}.regex: expected a string")
        try:
            re.compile(arg)
        except re.error as exc:
            raise CaseError(f"{where}.regex: not a regular expression: {exc}") from None
        return Regex(arg)
    if kind == "same":
        if not isinstance(arg, str) or not _REF.fullmatch(arg):
            raise CaseError(f"{where}.same: expected 'N.FIELD' or 'N.reply.FIELD'")
        if int(arg.split(".")[0]) >= exchanges:
            raise CaseError(f"{where}.same: exchange {arg.split('.')[0]} does not come before")
        return Same(arg)
    if kind == "original_of":
        if not isinstance(arg, int) or isinstance(arg, bool) or not 0 <= arg < exchanges:
            raise CaseError(f"{where}.original_of: expected the index of an earlier exchange")
        return OriginalOf(arg)
    raise CaseError(f"{where}: unknown matcher {kind!r} (absent, present, regex, same, "
                    "original_of)")
