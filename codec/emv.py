"""EMV BER-TLV (EMV Book 3 Annex B) for ISO 8583 field 55, the ICC data.

Byte-exact: unknown tags, order, non-minimal lengths and ``00`` padding all
survive ``encode(decode(x))``. A decoded sequence is a list of :data:`Item`:
:class:`TLV` objects and :class:`Padding` runs of ``00`` bytes (allowed by EMV
before, between and after objects). Every ``TLV`` is well formed: a constructed
one's value is checked to be a TLV sequence. Also here: tag names, the tags
holding card data, and ``describe``, a masked dump that is safe to log.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

from codec.errors import mask_pan

#: Deepest nesting level a data object may sit at (top-level objects are at 0).
MAX_DEPTH = 16
_MAX_TAG_BYTES = 4
_MAX_VALUE_LEN = 0xFFFFFFFF  # four length bytes after 0x84

#: Tags whose values are card data or secrets: never shown in clear.
SENSITIVE_TAGS: frozenset[int] = frozenset({
    0x5A,    # Application PAN (masked to first 6 / last 4 by describe)
    0x57,    # Track 2 Equivalent Data
    0x56,    # Track 1 Data
    0x9F6B,  # Track 2 Data
    0x5F20,  # Cardholder Name
    0x9F0B,  # Cardholder Name Extended
    0x9F1F,  # Track 1 Discretionary Data
    0x9F20,  # Track 2 Discretionary Data
    0x99,    # Transaction PIN Data
    0x5F53,  # International Bank Account Number (IBAN)
})

#: Names of common EMV tags (EMV Book 3 Annex A, plus common scheme tags).
TAG_NAMES: Mapping[int, str] = MappingProxyType({
    0x4F: "Application Identifier (AID) - card",
    0x50: "Application Label",
    0x56: "Track 1 Data",
    0x57: "Track 2 Equivalent Data",
    0x5A: "Application PAN",
    0x5F20: "Cardholder Name",
    0x5F24: "Application Expiration Date",
    0x5F25: "Application Effective Date",
    0x5F28: "Issuer Country Code",
    0x5F2A: "Transaction Currency Code",
    0x5F30: "Service Code",
    0x5F34: "Application PAN Sequence Number",
    0x5F36: "Transaction Currency Exponent",
    0x5F53: "International Bank Account Number (IBAN)",
    0x61: "Application Template",
    0x6F: "File Control Information (FCI) Template",
    0x70: "READ RECORD Response Message Template",
    0x71: "Issuer Script Template 1",
    0x72: "Issuer Script Template 2",
    0x77: "Response Message Template Format 2",
    0x80: "Response Message Template Format 1",
    0x81: "Amount, Authorised (Binary)",
    0x82: "Application Interchange Profile",
    0x84: "Dedicated File (DF) Name",
    0x86: "Issuer Script Command",
    0x89: "Authorisation Code",
    0x8A: "Authorisation Response Code",
    0x8E: "Cardholder Verification Method (CVM) List",
    0x91: "Issuer Authentication Data",
    0x95: "Terminal Verification Results",
    0x99: "Transaction PIN Data",
    0x9A: "Transaction Date",
    0x9B: "Transaction Status Information",
    0x9C: "Transaction Type",
    0xA5: "File Control Information (FCI) Proprietary Template",
    0xBF0C: "File Control Information (FCI) Issuer Discretionary Data",
    0x9F01: "Acquirer Identifier",
    0x9F02: "Amount, Authorised (Numeric)",
    0x9F03: "Amount, Other (Numeric)",
    0x9F06: "Application Identifier (AID) - terminal",
    0x9F07: "Application Usage Control",
    0x9F08: "Application Version Number (card)",
    0x9F09: "Application Version Number (terminal)",
    0x9F0B: "Cardholder Name Extended",
    0x9F0D: "Issuer Action Code - Default",
    0x9F0E: "Issuer Action Code - Denial",
    0x9F0F: "Issuer Action Code - Online",
    0x9F10: "Issuer Application Data",
    0x9F15: "Merchant Category Code",
    0x9F18: "Issuer Script Identifier",
    0x9F1A: "Terminal Country Code",
    0x9F1C: "Terminal Identification",
    0x9F1E: "Interface Device (IFD) Serial Number",
    0x9F1F: "Track 1 Discretionary Data",
    0x9F20: "Track 2 Discretionary Data",
    0x9F21: "Transaction Time",
    0x9F24: "Payment Account Reference (PAR)",
    0x9F26: "Application Cryptogram",
    0x9F27: "Cryptogram Information Data",
    0x9F33: "Terminal Capabilities",
    0x9F34: "Cardholder Verification Method (CVM) Results",
    0x9F35: "Terminal Type",
    0x9F36: "Application Transaction Counter (ATC)",
    0x9F37: "Unpredictable Number",
    0x9F39: "Point-of-Service (POS) Entry Mode",
    0x9F40: "Additional Terminal Capabilities",
    0x9F41: "Transaction Sequence Counter",
    0x9F4E: "Merchant Name and Location",
    0x9F53: "Transaction Category Code",
    0x9F5B: "Issuer Script Results",
    0x9F66: "Terminal Transaction Qualifiers (TTQ)",
    0x9F6B: "Track 2 Data",
    0x9F6C: "Card Transaction Qualifiers (CTQ)",
    0x9F6E: "Form Factor Indicator / Third Party Data",
    0x9F7C: "Customer Exclusive Data",
})


class TLVError(ValueError):
    """Bytes are not valid BER-TLV.

    ``offset`` is the byte offset in the input of the element found malformed
    (the start of the tag, of the length field, or of the value); ``tag`` is
    the upper-case hex of the tag being read ("" before any). The text is
    built from ``msg``, ``tag`` and ``offset`` only, never from value bytes.
    """

    def __init__(self, msg: str, tag: str = "", offset: int = 0) -> None:
        super().__init__(f"{msg}: tag {tag} offset {offset}")
        self.msg = msg
        self.tag = tag
        self.offset = offset

    def __reduce__(self) -> tuple[Any, ...]:
        return (self.__class__, (self.msg, self.tag, self.offset))


@dataclass(frozen=True, slots=True, repr=False)
class TLV:
    """One BER-TLV data object.

    ``tag`` is the tag bytes as a big-endian int (``0x9F26``); ``value`` the
    raw value bytes, also for constructed tags. ``length_form`` is 0 when the
    length is (to be) encoded in its minimal form, else the number of length
    bytes used on the wire, ``0x81``-style prefix included (``81 05`` → 2).
    """

    tag: int
    value: bytes
    length_form: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.tag, bool) or not isinstance(self.tag, int):
            raise TypeError(f"tag must be an int, not {type(self.tag).__name__}")
        if not isinstance(self.value, bytes):
            raise TypeError(f"value must be bytes, not {type(self.value).__name__}")
        if not _valid_tag(self.tag):
            raise ValueError(f"not a valid BER-TLV tag: {self.tag:#x}")
        n = len(self.value)
        if n > _MAX_VALUE_LEN:
            raise ValueError(f"value of tag {self.tag_hex} is longer than 4 GiB")
        lf = self.length_form
        if not isinstance(lf, int) or (lf != 0 and not _length_size(n) < lf <= 5):
            raise ValueError(
                f"length_form of tag {self.tag_hex} must be 0 or a non-minimal size in"
                f" {_length_size(n) + 1}..5, not {lf!r}"
            )
        if self.constructed:
            _parse(self.value, 0, n, 1)  # raises TLVError; offsets relative to value

    @property
    def constructed(self) -> bool:
        """Whether bit 6 of the first tag byte is set (the value is TLV data)."""
        return bool((self.tag >> (8 * (_tag_size(self.tag) - 1))) & 0x20)

    @property
    def tag_hex(self) -> str:
        """The tag in upper-case hex, e.g. ``"9F26"``."""
        return f"{self.tag:0{2 * _tag_size(self.tag)}X}"

    @property
    def name(self) -> str:
        """The tag's name from :data:`TAG_NAMES`, or "" if unknown."""
        return TAG_NAMES.get(self.tag, "")

    @property
    def children(self) -> list[Item]:
        """The decoded value of a constructed tag; ValueError for a primitive one."""
        if not self.constructed:
            raise ValueError(f"tag {self.tag_hex} is primitive; it has no children")
        return _parse(self.value, 0, len(self.value), 1)

    def __repr__(self) -> str:
        shown = _clear_hex(self)
        value = f"<redacted {len(self.value)} bytes>" if shown is None else f"'{shown}'"
        return f"TLV(tag=0x{self.tag_hex}, value={value}, length_form={self.length_form})"


@dataclass(frozen=True, slots=True)
class Padding:
    """A run of ``size`` (>= 1) ``00`` bytes between, before or after objects."""

    size: int

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"padding size must be a positive int, not {self.size!r}")


#: One element of a decoded sequence.
Item: TypeAlias = TLV | Padding


def decode(data: bytes | bytearray | memoryview) -> list[Item]:
    """Decode a top-level BER-TLV sequence, in order, padding included.

    Constructed values are checked down to :data:`MAX_DEPTH`. Raises
    :class:`TLVError` for malformed data and TypeError for a non-bytes input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"decode() needs bytes, not {type(data).__name__}")
    raw = bytes(data)
    return _parse(raw, 0, len(raw), 0)


def encode(items: Iterable[Item]) -> bytes:
    """Encode items back to bytes; ``encode(decode(x)) == x``."""
    out = bytearray()
    for item in items:
        if isinstance(item, TLV):
            out += item.tag.to_bytes(_tag_size(item.tag), "big")
            out += _encode_length(len(item.value), item.length_form)
            out += item.value
        elif isinstance(item, Padding):
            out += bytes(item.size)
        else:
            raise TypeError(f"cannot encode {type(item).__name__}: expected TLV or Padding")
    return bytes(out)


def decode_hex(s: str) -> list[Item]:
    """Decode field 55 given as hex (either case, no separators).

    Bad hex raises :class:`TLVError` with ``tag`` "" and the byte offset.
    """
    if not isinstance(s, str):
        raise TypeError(f"decode_hex() needs str, not {type(s).__name__}")
    for i, ch in enumerate(s):
        if ch not in _HEX_DIGITS:
            raise TLVError("invalid hex digit", "", i // 2)
    if len(s) % 2:
        raise TLVError("odd number of hex digits", "", len(s) // 2)
    return decode(bytes.fromhex(s))


def encode_hex(items: Iterable[Item]) -> str:
    """Encode items as upper-case hex, the form field 55 takes in a decoded dict."""
    return encode(items).hex().upper()


def walk(items: Iterable[Item]) -> Iterator[tuple[int, TLV]]:
    """Yield ``(depth, tlv)`` for every object, depth first, skipping padding."""
    stack: list[Iterator[Item]] = [iter(items)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, TLV):
                yield len(stack) - 1, item
                if item.constructed:
                    stack.append(iter(item.children))
                    break
            elif not isinstance(item, Padding):
                raise TypeError(f"cannot walk {type(item).__name__}: expected TLV or Padding")
        else:
            stack.pop()


def describe(items: Iterable[Item]) -> list[str]:
    """One line per object, indented by depth: tag, name, length, value.

    Safe to log: the PAN (5A) shows at most its first 6 and last 4 digits,
    other :data:`SENSITIVE_TAGS` only their length; constructed objects show
    no value of their own (their children follow on the next lines).
    """
    lines: list[str] = []
    for depth, tlv in walk(items):
        head = f"{'  ' * depth}{tlv.tag_hex} {tlv.name or '(unknown)'} [{len(tlv.value)}]"
        if tlv.constructed:
            lines.append(head)
        elif tlv.tag == 0x5A:
            lines.append(f"{head} {_masked_pan(tlv.value)}")
        elif tlv.tag in SENSITIVE_TAGS:
            lines.append(f"{head} <redacted {len(tlv.value)} bytes>")
        else:
            lines.append(f"{head} {tlv.value.hex().upper()}")
    return lines


# --------------------------------------------------------------------------
# internals

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _tag_size(tag: int) -> int:
    return max(1, (tag.bit_length() + 7) // 8)


def _valid_tag(tag: int) -> bool:
    """Whether ``tag`` is 1-4 bytes forming exactly one BER-TLV tag."""
    if tag <= 0 or tag.bit_length() > 8 * _MAX_TAG_BYTES:
        return False
    tb = tag.to_bytes(_tag_size(tag), "big")
    if len(tb) == 1:
        return tb[0] & 0x1F != 0x1F
    continued = all(b & 0x80 for b in tb[1:-1])
    return tb[0] & 0x1F == 0x1F and continued and not tb[-1] & 0x80


def _length_size(n: int) -> int:
    """Bytes in the minimal length field for a value of ``n`` bytes."""
    return 1 if n < 0x80 else 1 + (n.bit_length() + 7) // 8


def _encode_length(n: int, length_form: int) -> bytes:
    size = length_form or _length_size(n)
    if size == 1:
        return bytes((n,))
    return bytes((0x80 | (size - 1),)) + n.to_bytes(size - 1, "big")


def _make(tag: int, value: bytes, length_form: int) -> TLV:
    """Build a TLV already checked by :func:`_parse`, skipping re-validation."""
    tlv = object.__new__(TLV)
    object.__setattr__(tlv, "tag", tag)
    object.__setattr__(tlv, "value", value)
    object.__setattr__(tlv, "length_form", length_form)
    return tlv


def _parse(data: bytes, start: int, end: int, depth: int) -> list[Item]:
    """Decode ``data[start:end]`` at nesting ``depth``; offsets are into ``data``."""
    items: list[Item] = []
    pos = start
    while pos < end:
        if data[pos] == 0:
            run = pos
            while pos < end and data[pos] == 0:
                pos += 1
            items.append(Padding(pos - run))
            continue
        tag_start = pos
        tag, pos = _read_tag(data, pos, end)
        tag_hex = data[tag_start:pos].hex().upper()
        length, length_form, pos = _read_length(data, pos, end, tag_hex)
        if length > end - pos:
            raise TLVError("value runs past the end of the data", tag_hex, pos)
        if data[tag_start] & 0x20 and length:
            if depth >= MAX_DEPTH:
                raise TLVError("constructed data nested too deep", tag_hex, pos)
            _parse(data, pos, pos + length, depth + 1)
        items.append(_make(tag, data[pos : pos + length], length_form))
        pos += length
    return items


def _read_tag(data: bytes, pos: int, end: int) -> tuple[int, int]:
    start = pos
    tag = data[pos]
    pos += 1
    if tag & 0x1F != 0x1F:
        return tag, pos
    while True:
        if pos >= end:
            raise TLVError("truncated tag", data[start:pos].hex().upper(), start)
        b = data[pos]
        tag = (tag << 8) | b
        pos += 1
        if not b & 0x80:
            return tag, pos
        if pos - start >= _MAX_TAG_BYTES:
            raise TLVError("tag longer than 4 bytes", data[start:pos].hex().upper(), start)


def _read_length(data: bytes, pos: int, end: int, tag_hex: str) -> tuple[int, int, int]:
    """Return (length, length_form, position after the length field)."""
    if pos >= end:
        raise TLVError("truncated length", tag_hex, pos)
    first = data[pos]
    if first < 0x80:
        return first, 0, pos + 1
    if first == 0x80:
        raise TLVError("indefinite length form not allowed", tag_hex, pos)
    n = first & 0x7F
    if n > 4:
        raise TLVError("unsupported length form (over 4 length bytes)", tag_hex, pos)
    if pos + 1 + n > end:
        raise TLVError("truncated length", tag_hex, pos)
    length = int.from_bytes(data[pos + 1 : pos + 1 + n], "big")
    size = 1 + n
    return length, (0 if size == _length_size(length) else size), pos + size


def _clear_hex(tlv: TLV) -> str | None:
    """The value in hex if it holds no sensitive tag, else None."""
    if tlv.tag in SENSITIVE_TAGS:
        return None
    if tlv.constructed and any(t.tag in SENSITIVE_TAGS for _, t in walk(tlv.children)):
        return None
    return tlv.value.hex().upper()


def _masked_pan(value: bytes) -> str:
    digits = value.hex().upper().rstrip("F")
    if not digits.isdigit():
        return f"<redacted {len(value)} bytes>"
    return mask_pan(digits)
