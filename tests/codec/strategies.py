"""Hypothesis strategies: random valid documents for any pyiso8583-format spec."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from hypothesis import strategies as st

ASCII = "".join(chr(i) for i in range(128))
LATIN1 = "".join(chr(i) for i in range(256))
CP500 = bytes(range(256)).decode("cp500")
HEX = "0123456789ABCDEF"


def _alphabet(entry: Mapping[str, Any]) -> str:
    if entry.get("data_type") == "n":
        return string.digits
    enc = entry["data_enc"]
    return {"ascii": ASCII, "latin-1": LATIN1, "latin_1": LATIN1, "cp500": CP500}[enc]


def field_value(entry: Mapping[str, Any], short: bool = True) -> st.SearchStrategy[str]:
    """A value that the field accepts; variable fields are kept short unless ``short=False``."""
    max_len = entry["max_len"]
    fixed = entry["len_type"] == 0
    nibbles = entry.get("len_count") == "nibbles"
    top = max_len if not short else min(max_len, 24)
    if entry["data_enc"] == "b":
        alphabet = string.digits if entry.get("data_type") == "n" else HEX
        if nibbles:
            padded = bool(entry.get("left_pad") or entry.get("right_pad"))
            if fixed:
                return st.text(alphabet, min_size=max_len, max_size=max_len)
            sizes = st.integers(0, top).filter(lambda n: padded or n % 2 == 0)
            return sizes.flatmap(lambda n: st.text(alphabet, min_size=n, max_size=n))
        if fixed:
            return st.text(alphabet, min_size=2 * max_len, max_size=2 * max_len)
        return st.integers(0, top).flatmap(
            lambda n: st.text(alphabet, min_size=2 * n, max_size=2 * n))
    alphabet = _alphabet(entry)
    if nibbles:
        size = max_len // 2
        return st.text(alphabet, min_size=size, max_size=size) if fixed else st.text(
            alphabet, max_size=top // 2)
    if fixed:
        return st.text(alphabet, min_size=max_len, max_size=max_len)
    return st.text(alphabet, max_size=top)


@st.composite
def documents(draw: st.DrawFn, spec: Mapping[str, Any], short: bool = True) -> dict[str, str]:
    """A valid document for ``spec``: a 4-digit MTI and a random subset of its fields."""
    numbers = sorted(int(k) for k in spec if k.isdigit() and k not in ("1", "65"))
    chosen = draw(st.sets(st.sampled_from(numbers), min_size=0, max_size=30))
    doc: dict[str, str] = {"t": draw(st.text(string.digits, min_size=4, max_size=4))}
    header = spec["h"]
    if header["max_len"] > 0:
        doc["h"] = draw(field_value(header, short))
    for n in sorted(chosen):
        doc[str(n)] = draw(field_value(spec[str(n)], short))
    return doc
