"""Specifications: validation and compilation of pyiso8583-format spec dicts.

A spec is plain data (a dict you can write as JSON), in pyiso8583's format: per
field ``data_enc``, ``len_enc``, ``len_type``, ``max_len``, ``desc`` and
optionally ``len_count``, ``left_pad``, ``right_pad``. paygate adds one optional
key that pyiso8583 ignores: ``data_type`` (``"n"`` makes the codec insist on
decimal digits). A spec is validated once, when first used, and compiled into
a :class:`CompiledSpec` that both codec implementations read.
"""

from __future__ import annotations

import codecs
import json
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from codec.errors import SpecError

# Kinds of data / length encodings, shared with the Cython kernel (_kernel.pxd).
KIND_BINARY = 0  # data_enc "b": hex string <-> raw bytes
KIND_ASCII = 1  # 7-bit text
KIND_LATIN1 = 2  # 8-bit text, one byte per code point
KIND_CODEC = 3  # any other Python codec (cp500 EBCDIC, ...)
KIND_BCD = 4  # len_enc "bcd" only

FIELD_KEYS: tuple[str, ...] = tuple(str(i) for i in range(193))
_OPTIONAL_KEYS = {"len_count", "left_pad", "right_pad", "data_type", "desc"}
_REQUIRED_KEYS = ("data_enc", "len_enc", "len_type", "max_len")
_HEX = set("0123456789ABCDEF")

SpecLike = Union["CompiledSpec", Mapping[str, Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of a compiled spec, normalised for the encoders."""

    key: str
    desc: str
    data_enc: str  # canonical codec name, or "b"
    data_kind: int
    len_enc: str  # canonical codec name, "b" or "bcd"
    len_kind: int
    len_type: int
    max_len: int
    nibbles: bool
    left_pad: str  # "" or one upper-case hex character
    right_pad: str
    numeric: bool


class CompiledSpec:
    """A validated spec: ``fields[n]`` for n in 2..192 (None when absent).

    ``source`` is the mapping it was compiled from. Implementations may cache
    their own view of the spec in ``kernel_state``.
    """

    __slots__ = (
        "fields",
        "header",
        "kernel_state",
        "mti",
        "name",
        "primary",
        "secondary",
        "source",
    )

    def __init__(self, source: Mapping[str, Mapping[str, Any]], name: str = "") -> None:
        if not isinstance(source, Mapping):
            raise SpecError(f"spec must be a mapping, not {type(source).__name__}", "-")
        self.source = source
        self.name = name
        for required in ("h", "t", "p"):
            if required not in source:
                raise SpecError("required entry missing", required)
        header = _compile_field("h", source["h"])
        self.header: FieldSpec | None = header if header.max_len > 0 else None
        self.mti = _compile_field("t", source["t"])
        if self.mti.data_kind == KIND_BINARY and self.mti.len_type != 0:
            raise SpecError("message type must be fixed length", "t")
        self.primary = _compile_field("p", source["p"])
        self.secondary = _compile_field("1", source["1"]) if "1" in source else None
        fields: list[FieldSpec | None] = [None] * 193
        for key, entry in source.items():
            if key in ("h", "t", "p", "1", "65") or (isinstance(key, str) and key[:1] == "_"):
                continue  # "_comment" and other "_" keys are annotations
            if not isinstance(key, str) or not key.isdigit() or key != str(int(key)):
                raise SpecError("unknown spec entry", str(key))
            number = int(key)
            if not 2 <= number <= 192:
                raise SpecError("field number outside 2-192", key)
            fields[number] = _compile_field(key, entry)
        self.fields: tuple[FieldSpec | None, ...] = tuple(fields)
        self.kernel_state: Any = None

    def __repr__(self) -> str:
        count = sum(1 for f in self.fields if f is not None)
        return f"<CompiledSpec {self.name or 'anonymous'} fields={count}>"


def _kind_of(enc: str, field: str, what: str, allow_bcd: bool) -> tuple[str, int]:
    if enc == "b":
        return "b", KIND_BINARY
    if allow_bcd and enc == "bcd":
        return "bcd", KIND_BCD
    try:
        name = codecs.lookup(enc).name
    except LookupError:
        raise SpecError(f"{what} names an unknown encoding", field) from None
    if name == "ascii":
        return name, KIND_ASCII
    if name == "iso8859-1":
        return name, KIND_LATIN1
    # Length digits and hex bitmaps must survive the codec one byte per char.
    try:
        if len("0123456789ABCDEF".encode(name)) != 16:
            raise ValueError
    except (ValueError, UnicodeError):
        raise SpecError(f"{what} must be a single-byte encoding", field) from None
    return name, KIND_CODEC


def _int_entry(entry: Mapping[str, Any], name: str, field: str, lo: int, hi: int) -> int:
    value = entry[name]
    if type(value) is not int or not lo <= value <= hi:
        raise SpecError(f"{name} must be an integer in {lo}..{hi}", field)
    return value


def _pad_entry(entry: Mapping[str, Any], name: str, field: str) -> str:
    pad = entry.get(name, "")
    if not isinstance(pad, str):
        raise SpecError(f"{name} must be a string", field)
    pad = pad[:1].upper()
    if pad and pad not in _HEX:
        raise SpecError(f"{name} must be a hex digit", field)
    return pad


def _compile_field(key: str, entry: Any) -> FieldSpec:
    if not isinstance(entry, Mapping):
        raise SpecError("field spec must be a mapping", key)
    for required in _REQUIRED_KEYS:
        if required not in entry:
            raise SpecError(f"{required} is required", key)
    unknown = set(entry) - set(_REQUIRED_KEYS) - _OPTIONAL_KEYS
    if unknown:
        raise SpecError(f"unknown properties {sorted(map(str, unknown))}", key)
    data_enc, data_kind = _kind_of(_str_entry(entry, "data_enc", key), key, "data_enc", False)
    len_enc, len_kind = _kind_of(_str_entry(entry, "len_enc", key), key, "len_enc", True)
    len_type = _int_entry(entry, "len_type", key, 0, 4 if len_kind in (KIND_BINARY, KIND_BCD)
                          else 8)
    max_len = _int_entry(entry, "max_len", key, 0, 99_999_999)
    len_count = entry.get("len_count", "bytes")
    if len_count not in ("bytes", "nibbles"):
        raise SpecError("len_count must be 'bytes' or 'nibbles'", key)
    data_type = entry.get("data_type", "")
    if data_type not in ("", "n", "a", "an", "ans", "ns", "as", "b", "z", "x+n"):
        raise SpecError("data_type must be an ISO 8583 type such as 'n' or 'ans'", key)
    desc = entry.get("desc", "")
    if not isinstance(desc, str):
        raise SpecError("desc must be a string", key)
    if len_type and len_kind == KIND_BINARY and max_len >= 1 << (8 * len_type):
        raise SpecError("max_len does not fit the binary length prefix", key)
    if len_type and len_kind == KIND_BCD and max_len >= 10 ** (2 * len_type):
        raise SpecError("max_len does not fit the BCD length prefix", key)
    if len_type and len_kind not in (KIND_BINARY, KIND_BCD) and max_len >= 10 ** len_type:
        raise SpecError("max_len does not fit the length prefix", key)
    return FieldSpec(
        key=key, desc=desc, data_enc=data_enc, data_kind=data_kind, len_enc=len_enc,
        len_kind=len_kind, len_type=len_type, max_len=max_len,
        nibbles=len_count == "nibbles", left_pad=_pad_entry(entry, "left_pad", key),
        right_pad=_pad_entry(entry, "right_pad", key), numeric=data_type == "n",
    )


def _str_entry(entry: Mapping[str, Any], name: str, field: str) -> str:
    value = entry[name]
    if not isinstance(value, str):
        raise SpecError(f"{name} must be a string", field)
    return value


# Compiled specs, keyed by the identity of the mapping they came from. Each
# entry keeps its mapping alive, so an id is never reused while cached; the
# cache is bounded so that specs built on the fly cannot grow it without end.
_CACHE: OrderedDict[int, CompiledSpec] = OrderedDict()
_CACHE_SIZE = 64


def compile_spec(spec: SpecLike) -> CompiledSpec:
    """Validate and compile ``spec`` once; later calls return the cached result.

    A spec is treated as immutable once used. To change one, build a new dict
    (or call :func:`load_spec` again).
    """
    if type(spec) is CompiledSpec:
        return spec
    key = id(spec)
    compiled = _CACHE.get(key)
    if compiled is not None and compiled.source is spec:
        return compiled
    compiled = CompiledSpec(spec)  # type: ignore[arg-type]
    _CACHE[key] = compiled
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return compiled


def load_spec(source: str | os.PathLike[str] | Mapping[str, Any], name: str = "") -> CompiledSpec:
    """Load a spec from a JSON file path or a mapping, validate and compile it."""
    if isinstance(source, Mapping):
        return CompiledSpec(source, name)
    with open(source, encoding="utf-8") as fh:
        data = json.load(fh)
    return CompiledSpec(data, name or os.path.basename(os.fspath(source)))
