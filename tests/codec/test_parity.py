"""Parity with pyiso8583: same bytes out, same dict back, on random valid messages."""

from __future__ import annotations

import copy
from collections.abc import Callable
from types import ModuleType
from typing import Any

import iso8583
import iso8583.specs
from hypothesis import HealthCheck, given, settings
from strategies import documents

import codec.specs

PEER_SPECS = {
    "default": iso8583.specs.default,
    "default_ascii": iso8583.specs.default_ascii,
}

# A spec that exercises everything pyiso8583 supports beyond its two built-ins:
# a header, BCD nibble fields with padding, binary/BCD/EBCDIC lengths,
# latin-1 and cp500 data, LLLL fields and tertiary-bitmap fields (129-192).
EXOTIC: dict[str, dict[str, Any]] = copy.deepcopy(iso8583.specs.default)
EXOTIC.update({
    "h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 6, "desc": "Hdr"},
    "2": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 19,
          "len_count": "nibbles", "left_pad": "F", "desc": "PAN, BCD LLVAR"},
    "3": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 5,
          "len_count": "nibbles", "right_pad": "0", "desc": "odd fixed BCD"},
    "35": {"data_enc": "b", "len_enc": "b", "len_type": 1, "max_len": 37,
           "len_count": "nibbles", "right_pad": "F", "desc": "Track 2, binary length"},
    "43": {"data_enc": "cp500", "len_enc": "ascii", "len_type": 0, "max_len": 40,
           "desc": "EBCDIC name"},
    "44": {"data_enc": "cp500", "len_enc": "cp500", "len_type": 2, "max_len": 25,
           "desc": "EBCDIC LLVAR"},
    "48": {"data_enc": "latin-1", "len_enc": "bcd", "len_type": 2, "max_len": 999,
           "desc": "latin-1, BCD LLL"},
    "62": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 4, "max_len": 9999,
           "desc": "LLLLVAR"},
    "63": {"data_enc": "b", "len_enc": "b", "len_type": 2, "max_len": 999, "desc": "binary"},
})
for _n in range(129, 193):
    EXOTIC[str(_n)] = {"data_enc": "ascii", "len_enc": "ascii", "len_type": 2, "max_len": 20,
                       "desc": f"tertiary {_n}"}

ALL_SPECS = {**PEER_SPECS, "exotic": EXOTIC, "network": codec.specs.network,
             "network_ascii": codec.specs.network_ascii}


def _peer_encode(doc: dict[str, str], spec: dict[str, Any]) -> bytes:
    raw, _ = iso8583.encode(copy.deepcopy(doc), spec)
    return bytes(raw)


def _check_parity(impl: ModuleType, doc: dict[str, str], spec: dict[str, Any]) -> None:
    ours = impl.encode(doc, spec)
    assert ours == _peer_encode(doc, spec)
    peer_doc, _ = iso8583.decode(ours, spec)
    decoded = impl.decode(ours, spec)
    assert decoded == peer_doc
    assert list(decoded) == list(peer_doc)
    assert {k: v for k, v in decoded.items() if k not in ("p", "1")} == doc


def _make(name: str, short: bool) -> Callable[[ModuleType], None]:
    spec = ALL_SPECS[name]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(doc=documents(spec, short))
    def check(impl: ModuleType, doc: dict[str, str]) -> None:
        _check_parity(impl, doc, spec)

    return check


def test_default_spec_matches_pyiso8583(impl: ModuleType) -> None:
    """On pyiso8583's `default` spec, random messages encode and decode as pyiso8583 does."""
    _make("default", True)(impl)


def test_default_spec_long_fields_match_pyiso8583(impl: ModuleType) -> None:
    """Variable fields up to their full maximum length encode and decode as pyiso8583's."""
    _make("default", False)(impl)


def test_default_ascii_spec_matches_pyiso8583(impl: ModuleType) -> None:
    """On pyiso8583's `default_ascii` spec, random messages match pyiso8583 both ways."""
    _make("default_ascii", True)(impl)


def test_exotic_spec_matches_pyiso8583(impl: ModuleType) -> None:
    """Headers, BCD nibbles with padding, binary/BCD/EBCDIC lengths, cp500, latin-1,
    LLLL and tertiary-bitmap fields all match pyiso8583."""
    _make("exotic", True)(impl)


def test_network_specs_match_pyiso8583(impl: ModuleType) -> None:
    """Our built-in network specs are valid pyiso8583 specs and behave identically."""
    _make("network", True)(impl)
    _make("network_ascii", True)(impl)


def test_sample_authorization_matches_pyiso8583(impl: ModuleType) -> None:
    """The realistic 0100 and 0110 samples encode and decode exactly as pyiso8583 does."""
    from codec import examples

    for spec in (codec.specs.network, iso8583.specs.default):
        _check_parity(impl, examples.auth_request(), spec)
        _check_parity(impl, examples.auth_response(), spec)
