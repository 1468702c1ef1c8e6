"""ISO 8583 codec: encode and decode network messages, fast, with typed errors.

``encode(doc, spec) -> bytes`` and ``decode(data, spec) -> dict`` take specs in
pyiso8583's format and produce exactly pyiso8583's decoded dict. The byte path
runs in a Cython kernel, with a pure-Python twin chosen by ``codec._impl``
(``PAYGATE_NO_EXTENSIONS=1`` forces the twin). Also here: built-in specs
(``codec.specs``), EMV TLV for field 55 (``codec.emv``), length framing
(``codec.framing``) and a masked pretty-printer (``describe``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codec import _impl
from codec.describe import describe
from codec.errors import CodecError, DecodeError, EncodeError, SpecError, mask_pan
from codec.spec import CompiledSpec, SpecLike, compile_spec, load_spec

IMPLEMENTATION: str = _impl.IMPLEMENTATION


def encode(doc: Mapping[str, Any], spec: SpecLike) -> bytes:
    """Encode ``doc`` (keys ``h``, ``t``, ``2``..``192``; str values) to bytes.

    Bitmaps are built from the fields present; ``p``, ``1`` and ``65`` in
    ``doc`` are ignored. ``doc`` is not modified. Raises :class:`EncodeError`.
    """
    data: bytes = _impl.encode(doc, spec)
    return data


def decode(data: bytes | bytearray | memoryview, spec: SpecLike) -> dict[str, str]:
    """Decode one whole message; the result equals pyiso8583's decoded dict.

    Raises :class:`DecodeError` for any malformed input.
    """
    doc: dict[str, str] = _impl.decode(data, spec)
    return doc


__all__ = [
    "IMPLEMENTATION",
    "CodecError",
    "CompiledSpec",
    "DecodeError",
    "EncodeError",
    "SpecError",
    "compile_spec",
    "decode",
    "describe",
    "encode",
    "load_spec",
    "mask_pan",
]
