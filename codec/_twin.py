"""The pure-Python twin of the Cython kernel (``codec._kernel``).

Same inputs, same outputs, same errors (message, field and offset) as the
kernel; it is what runs when the extension is not built or when
``PAYGATE_NO_EXTENSIONS=1``. Keep the two in step: every codec test runs
against both.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping
from typing import Any

from codec.errors import DecodeError, EncodeError
from codec.spec import (
    FIELD_KEYS,
    KIND_ASCII,
    KIND_BCD,
    KIND_BINARY,
    KIND_LATIN1,
    CompiledSpec,
    FieldSpec,
    SpecLike,
    compile_spec,
)

IMPLEMENTATION = "twin"

_DIGITS = frozenset("0123456789")
_HEXCHARS = frozenset("0123456789ABCDEFabcdef")


# --------------------------------------------------------------------------
# encode


def encode(doc: Mapping[str, Any], spec: SpecLike) -> bytes:
    """Encode a document (pyiso8583 decoded-dict shape) to ISO 8583 bytes."""
    cs = compile_spec(spec)
    if not isinstance(doc, Mapping):
        raise TypeError(f"document must be a dict, not {type(doc).__name__}")
    fields = _collect_fields(doc, cs)
    out = bytearray()
    if cs.header is not None:
        if "h" not in doc:
            raise EncodeError("Field data is required according to specifications", "h",
                              0, {})
        out += _encode_field(doc, "h", cs.header, len(out))
    if "t" not in doc:
        raise EncodeError("Field data is required", "t", len(out), {})
    out += _encode_mti(doc, cs.mti, len(out))

    primary = 0
    secondary = 0
    tertiary = 0
    for n in fields:
        if n <= 64:
            primary |= 1 << (64 - n)
        elif n <= 128:
            secondary |= 1 << (128 - n)
        else:
            tertiary |= 1 << (192 - n)
    if tertiary:
        secondary |= 1 << 63  # field 65: tertiary bitmap follows
    if secondary:
        primary |= 1 << 63  # field 1: secondary bitmap follows
        if cs.secondary is None:
            raise EncodeError("Field is not defined in the specification", "1", len(out),
                              _partial(doc, fields, 0))
    out += _encode_bitmap(primary, cs.primary, "p", len(out))
    if secondary:
        assert cs.secondary is not None
        out += _encode_bitmap(secondary, cs.secondary, "1", len(out))
        if tertiary:
            out += _encode_bitmap(tertiary, cs.secondary, "1", len(out))
    for i, n in enumerate(fields):
        key = FIELD_KEYS[n]
        fs = cs.fields[n]
        if fs is None:
            raise EncodeError("Field is not defined in the specification", key, len(out),
                              _partial(doc, fields, i))
        try:
            out += _encode_field(doc, key, fs, len(out))
        except EncodeError as exc:
            raise EncodeError(exc.msg, key, exc.pos, _partial(doc, fields, i)) from None
    return bytes(out)


def _partial(doc: Mapping[str, Any], fields: list[int], upto: int) -> dict[str, Any]:
    keys = ["h", "t"] + [FIELD_KEYS[n] for n in fields[:upto]]
    return {k: doc[k] for k in keys if k in doc}


def _collect_fields(doc: Mapping[str, Any], cs: CompiledSpec) -> list[int]:
    fields = []
    for key in doc:
        if type(key) is not str:
            raise EncodeError("Dictionary contains a non-string key", "p", 0, {})
        if key in ("h", "t", "p", "1", "65"):
            continue
        if key.isdigit() and key.isascii():
            n = int(key)
            if not 1 < n <= 192 or key != FIELD_KEYS[n]:
                raise EncodeError("Dictionary contains a field outside of 2-192", "p", 0, {})
            fields.append(n)
        elif key.isnumeric():
            raise EncodeError("Dictionary contains a field outside of 2-192", "p", 0, {})
        # other keys are ignored, as pyiso8583 does
    fields.sort()
    return fields


def _encode_mti(doc: Mapping[str, Any], fs: FieldSpec, pos: int) -> bytes:
    value = doc["t"]
    if type(value) is not str:
        raise EncodeError("Failed to encode field, invalid data", "t", pos, {})
    if fs.data_kind == KIND_BINARY:
        if len(value) != 4 or not _DIGITS.issuperset(value):
            raise EncodeError("Message type must be 4 digits", "t", pos, {})
        return binascii.a2b_hex(value)
    data = _encode_text(value, fs, "t", pos)
    if len(data) != 4 or not _DIGITS.issuperset(value):
        raise EncodeError("Message type must be 4 digits", "t", pos, {})
    return data


def _encode_bitmap(bits: int, fs: FieldSpec, key: str, pos: int) -> bytes:
    raw = bits.to_bytes(8, "big")
    if fs.data_kind == KIND_BINARY:
        return raw
    return _encode_text(raw.hex().upper(), fs, key, pos)


def _encode_text(value: str, fs: FieldSpec, key: str, pos: int) -> bytes:
    try:
        return value.encode(fs.data_enc)
    except UnicodeError:
        raise EncodeError("Failed to encode field, invalid data", key, pos, {}) from None


def _encode_field(doc: Mapping[str, Any], key: str, fs: FieldSpec, pos: int) -> bytes:
    value = doc[key]
    if type(value) is not str:
        raise EncodeError("Failed to encode field, invalid data", key, pos, {})
    if fs.data_kind == KIND_BINARY:
        text = value
        if fs.nibbles and len(value) & 1:
            pad = fs.left_pad or fs.right_pad
            if not pad:
                raise EncodeError("Failed to encode field, odd-length nibble data, specify pad",
                                  key, pos, {})
            text = pad + value if fs.left_pad else value + pad
        elif len(value) & 1:
            raise EncodeError("Failed to encode field, odd-length hex data", key, pos, {})
        if not _HEXCHARS.issuperset(text):
            raise EncodeError("Failed to encode field, non-hex data", key, pos, {})
        if fs.numeric and not _DIGITS.issuperset(value):
            raise EncodeError("Failed to encode field, non-digit data", key, pos, {})
        data = binascii.a2b_hex(text)
        length = len(value) if fs.nibbles else len(data)
    else:
        data = _encode_text(value, fs, key, pos)
        if fs.numeric and not _DIGITS.issuperset(value):
            raise EncodeError("Failed to encode field, non-digit data", key, pos, {})
        length = len(data) * 2 if fs.nibbles else len(data)
    unit = "nibbles" if fs.nibbles else "bytes"
    if fs.len_type == 0:
        if length != fs.max_len:
            raise EncodeError(f"Field data is {length} {unit}, expecting {fs.max_len}",
                              key, pos, {})
        return data
    if length > fs.max_len:
        raise EncodeError(f"Field data is {length} {unit}, larger than maximum {fs.max_len}",
                          key, pos, {})
    return _encode_length(length, fs) + data


def _encode_length(length: int, fs: FieldSpec) -> bytes:
    # max_len was checked against the prefix width when the spec was compiled.
    if fs.len_kind == KIND_BINARY:
        return length.to_bytes(fs.len_type, "big")
    if fs.len_kind == KIND_BCD:
        return binascii.a2b_hex(f"{length:0{fs.len_type * 2}d}")
    return f"{length:0{fs.len_type}d}".encode(fs.len_enc)


# --------------------------------------------------------------------------
# decode


def decode(data: bytes | bytearray | memoryview, spec: SpecLike) -> dict[str, str]:
    """Decode ISO 8583 bytes to a dict shaped like pyiso8583's decoded dict."""
    cs = compile_spec(spec)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
    s = bytes(data)
    doc: dict[str, str] = {}
    idx = 0
    if cs.header is not None:
        idx = _decode_field(s, idx, cs.header, doc)
    idx = _decode_mti(s, idx, cs.mti, doc)
    idx, bits = _decode_bitmap(s, idx, cs.primary, "p", doc, False)
    fields = _bits(bits, 0)
    if fields and fields[0] == 1:
        fields.pop(0)
        if cs.secondary is None:
            raise DecodeError("Bitmap announces a secondary bitmap the spec lacks", "1", idx,
                              doc)
        idx, bits = _decode_bitmap(s, idx, cs.secondary, "1", doc, False)
        more = _bits(bits, 64)
        if more and more[0] == 65:
            more.pop(0)
            idx, bits = _decode_bitmap(s, idx, cs.secondary, "1", doc, True)
            more += _bits(bits, 128)
        fields += more
    for n in fields:
        fs = cs.fields[n]
        if fs is None:
            raise DecodeError("Bitmap announces a field the spec lacks", FIELD_KEYS[n], idx,
                              doc)
        idx = _decode_field(s, idx, fs, doc)
    if idx != len(s):
        raise DecodeError("Extra data after last field", "end", idx, doc)
    return doc


def _bits(bitmap: int, offset: int) -> list[int]:
    out = []
    n = offset + 1
    mask = 1 << 63
    while bitmap:
        if bitmap & mask:
            out.append(n)
            bitmap ^= mask
        mask >>= 1
        n += 1
    return out


def _decode_mti(s: bytes, idx: int, fs: FieldSpec, doc: dict[str, str]) -> int:
    width = 2 if fs.data_kind == KIND_BINARY else 4
    raw = s[idx:idx + width]
    if len(raw) != width:
        raise DecodeError(f"Field data is {len(raw)} bytes, expecting {width}", "t", idx, doc)
    value = raw.hex() if fs.data_kind == KIND_BINARY else _decode_text(raw, fs, "t", idx, doc)
    if len(value) != 4 or not _DIGITS.issuperset(value):
        raise DecodeError("Message type must be 4 digits", "t", idx, doc)
    doc["t"] = value
    return idx + width


def _decode_bitmap(s: bytes, idx: int, fs: FieldSpec, key: str, doc: dict[str, str],
                   extend: bool) -> tuple[int, int]:
    width = 8 if fs.data_kind == KIND_BINARY else 16
    raw = s[idx:idx + width]
    if len(raw) != width:
        raise DecodeError(f"Field data is {len(raw)} bytes, expecting {width}", key, idx, doc)
    if fs.data_kind == KIND_BINARY:
        text = raw.hex().upper()
        bits = int.from_bytes(raw, "big")
    else:
        text = _decode_text(raw, fs, key, idx, doc)
        if len(text) != 16 or not _HEXCHARS.issuperset(text):
            raise DecodeError("Failed to decode field, non-hex data", key, idx, doc)
        bits = int(text, 16)
    doc[key] = doc[key] + text if extend else text
    return idx + width, bits


def _decode_text(raw: bytes, fs: FieldSpec, key: str, idx: int, doc: dict[str, str]) -> str:
    try:
        return raw.decode(fs.data_enc)
    except UnicodeError:
        raise DecodeError("Failed to decode field, invalid data", key, idx, doc) from None


def _decode_length(s: bytes, idx: int, fs: FieldSpec, doc: dict[str, str]) -> int:
    width = fs.len_type
    raw = s[idx:idx + width]
    if len(raw) != width:
        raise DecodeError(f"Field length is {len(raw)} bytes wide, expecting {width}",
                          fs.key, idx, doc)
    if fs.len_kind == KIND_BINARY:
        return int.from_bytes(raw, "big")
    if fs.len_kind == KIND_BCD:
        digits = raw.hex()
        if not _DIGITS.issuperset(digits):
            raise DecodeError("Failed to decode field length, invalid BCD data", fs.key, idx,
                              doc)
        return int(digits)
    if fs.len_kind in (KIND_ASCII, KIND_LATIN1):
        digits = raw.decode("latin-1")
    else:
        try:
            digits = raw.decode(fs.len_enc)
        except UnicodeError:
            raise DecodeError("Failed to decode field length, invalid data", fs.key, idx,
                              doc) from None
    if not _DIGITS.issuperset(digits):
        raise DecodeError("Failed to decode field length, non-numeric data", fs.key, idx, doc)
    return int(digits)


def _decode_field(s: bytes, idx: int, fs: FieldSpec, doc: dict[str, str]) -> int:
    key = fs.key
    unit = "nibbles" if fs.nibbles else "bytes"
    if fs.len_type == 0:
        length = fs.max_len
    else:
        length = _decode_length(s, idx, fs, doc)
        if length > fs.max_len:
            raise DecodeError(f"Field data is {length} {unit}, larger than maximum "
                              f"{fs.max_len}", key, idx, doc)
        idx += fs.len_type
    nbytes = (length + 1) // 2 if fs.nibbles else length
    raw = s[idx:idx + nbytes]
    if len(raw) != nbytes:
        have = len(raw) * 2 if fs.nibbles else len(raw)
        raise DecodeError(f"Field data is {have} {unit}, expecting {length}", key, idx, doc)
    if fs.data_kind == KIND_BINARY:
        value = raw.hex().upper()
        if fs.nibbles and length & 1:
            if fs.left_pad and value[:1] == fs.left_pad:
                value = value[1:]
            elif fs.right_pad and value[-1:] == fs.right_pad:
                value = value[:-1]
            else:
                raise DecodeError(f"Field data is {len(value)} nibbles, expecting {length}",
                                  key, idx, doc)
    else:
        value = _decode_text(raw, fs, key, idx, doc)
    if fs.numeric and not _DIGITS.issuperset(value):
        raise DecodeError("Failed to decode field, non-digit data", key, idx, doc)
    doc[key] = value
    return idx + nbytes
