"""A readable dump of an ISO 8583 message with card data masked.

The PAN shows its first 6 and last 4 digits at most; track data, the PIN block
and the MAC are hidden; field 55 is unfolded into its EMV tags with the
sensitive ones (PAN, track 2 equivalent, cardholder name) masked.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from codec import emv
from codec.errors import mask_pan
from codec.spec import FIELD_KEYS, SpecLike, compile_spec

#: Fields never shown, only their length.
HIDDEN_FIELDS = frozenset({"35", "36", "45", "48", "52", "64", "96", "128"})
_ORDER = {"h": -4, "t": -3, "p": -2, "1": -1}


def _sort_key(key: str) -> int:
    return _ORDER.get(key, int(key) if key.isdigit() else 1000)


def describe(doc: Mapping[str, Any] | bytes | bytearray, spec: SpecLike) -> str:
    """Return a multi-line, masked description of a message.

    ``doc`` is a decoded dict, or raw bytes that are decoded first.
    """
    import codec

    cs = compile_spec(spec)
    if isinstance(doc, (bytes, bytearray)):
        doc = codec.decode(doc, cs)
    names = {"h": cs.header, "t": cs.mti, "p": cs.primary, "1": cs.secondary}
    lines = []
    keys = [k for k in doc if isinstance(k, str) and (k in names or k.isdigit())]
    for key in sorted(keys, key=_sort_key):
        fs = names.get(key) if key in names else (
            cs.fields[int(key)] if key in FIELD_KEYS[2:] else None)
        desc = fs.desc if fs is not None else "(not in spec)"
        value = doc[key]
        text = value if isinstance(value, str) else repr(type(value))
        lines.append(f"{key:<4} {desc[:34]:<34} : {_show(key, text)}")
        if key == "55" and isinstance(value, str):
            lines.extend("       " + line for line in _icc_lines(value))
    return "\n".join(lines)


def _show(key: str, value: str) -> str:
    if key == "2":
        return mask_pan(value)
    if key in HIDDEN_FIELDS:
        return f"<hidden, {len(value)} chars>"
    if key == "55":
        return f"<{len(value) // 2} bytes of EMV data>"
    return value


def _icc_lines(value: str) -> list[str]:
    try:
        return emv.describe(emv.decode_hex(value))
    except (emv.TLVError, ValueError):
        return ["<not valid BER-TLV>"]
