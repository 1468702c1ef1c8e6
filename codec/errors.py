"""Typed codec errors: they name the field and the byte offset, carry the partial
result with card data redacted, and survive pickling.

The message text is built only from the field name, the offset and a fixed
description; it never contains a field's value, so a PAN, track data, PIN block
or ICC data cannot leak through ``str(error)``, ``repr(error)`` or a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Fields whose values are card data or secrets and are never shown in clear.
SENSITIVE_FIELDS = frozenset({"2", "35", "36", "45", "48", "52", "55"})


def redact_partial(doc: Mapping[str, Any]) -> dict[str, str]:
    """Return a copy of a (partial) decoded document safe to keep in an error.

    The PAN keeps at most its first 6 and last 4 digits; track data, PIN block
    and ICC data are replaced by a length marker.
    """
    out: dict[str, str] = {}
    for key, value in doc.items():
        if not isinstance(key, str):
            continue
        text = value if isinstance(value, str) else "<non-str>"
        if key == "2":
            out[key] = mask_pan(text)
        elif key in SENSITIVE_FIELDS and not text.startswith("<redacted"):
            out[key] = f"<redacted {len(text)} chars>"
        else:
            out[key] = text
    return out


def mask_pan(pan: str) -> str:
    """Mask a PAN for display: first 6 and last 4 at most, the rest ``*``.

    Short values are masked more aggressively so that no more than half of the
    digits are ever shown.
    """
    n = len(pan)
    if n >= 13:
        return pan[:6] + "*" * (n - 10) + pan[-4:]
    if n >= 8:
        return "*" * (n - 4) + pan[-4:]
    return "*" * n


class CodecError(ValueError):
    """Base of the codec's errors: ``field`` and ``msg`` are always set."""

    msg: str
    field: str
    partial: dict[str, str]


class SpecError(CodecError):
    """A specification is malformed; ``field`` names the offending entry."""

    def __init__(self, msg: str, field: str) -> None:
        super().__init__(f"{msg}: spec field {field}")
        self.msg = msg
        self.field = field
        self.partial = {}

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.msg, self.field))


class _PositionedError(CodecError):
    """An error at a field and byte offset, with the (redacted) partial result."""

    def __init__(
        self, msg: str, field: str, pos: int = 0, partial: Mapping[str, Any] | None = None
    ) -> None:
        super().__init__(f"{msg}: field {field} pos {pos}")
        self.msg = msg
        self.field = field
        self.pos = pos
        self.partial = redact_partial(partial or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.msg, self.field, self.pos, self.partial))


class EncodeError(_PositionedError):
    """A document cannot be encoded.

    ``field`` is the field that failed, ``pos`` the byte offset in the output
    where it would have started, ``partial`` the fields encoded before it
    (redacted).
    """


class DecodeError(_PositionedError):
    """Bytes cannot be decoded.

    ``field`` is the field being read, ``pos`` the byte offset where the
    problem was found, ``partial`` what was decoded before it (redacted).
    """
