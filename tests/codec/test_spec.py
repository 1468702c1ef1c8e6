"""Specs are data: validated once, with a clear error for a bad one, loadable from JSON."""

from __future__ import annotations

import copy
import json
import pickle
from pathlib import Path
from types import ModuleType
from typing import Any

import iso8583.specs
import pytest

import codec
from codec import specs
from codec.errors import SpecError
from codec.spec import compile_spec


def _broken(field: str, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(specs.network)
    spec[field] = {**spec[field], **changes}
    return spec


@pytest.mark.parametrize(("spec", "field", "text"), [
    (_broken("4", data_enc="no-such-codec"), "4", "unknown encoding"),
    (_broken("4", len_enc="utf-16"), "4", "single-byte"),
    (_broken("4", len_type=-1), "4", "len_type"),
    (_broken("4", max_len="12"), "4", "max_len"),
    (_broken("4", len_count="bits"), "4", "len_count"),
    (_broken("2", left_pad="G"), "2", "hex digit"),
    (_broken("4", lenght_type=2), "4", "unknown properties"),
    (_broken("2", len_enc="b", len_type=1, max_len=256), "2", "does not fit"),
    (_broken("2", max_len=100), "2", "does not fit"),
    (_broken("2", data_type="numeric"), "2", "data_type"),
    ({k: v for k, v in specs.network.items() if k != "t"}, "t", "required"),
    ({**specs.network, "200": specs.network["4"]}, "200", "outside 2-192"),
    ({**specs.network, "x": specs.network["4"]}, "x", "unknown spec entry"),
    ({**specs.network, "4": "n12"}, "4", "must be a mapping"),
])
def test_bad_specs_are_rejected_with_the_field_named(impl: ModuleType, spec: dict[str, Any],
                                                     field: str, text: str) -> None:
    """A malformed spec raises SpecError naming the offending entry, on first use."""
    with pytest.raises(SpecError) as err:
        impl.encode({"t": "0800"}, spec)
    with pytest.raises(SpecError):
        impl.decode(b"0800" + bytes(8), spec)
    assert err.value.field == field
    assert text in str(err.value)
    assert pickle.loads(pickle.dumps(err.value)).field == field


def test_spec_is_compiled_once() -> None:
    """Using the same spec dict twice reuses one compiled spec."""
    spec = copy.deepcopy(specs.network)
    assert compile_spec(spec) is compile_spec(spec)


def test_pyiso8583_specs_compile() -> None:
    """pyiso8583's built-in specs are accepted unchanged."""
    for spec in (iso8583.specs.default, iso8583.specs.default_ascii):
        compiled = compile_spec(spec)
        assert compiled.fields[2] is not None and compiled.fields[128] is not None


def test_builtin_specs_are_json_files() -> None:
    """The network specs ship as JSON and load through load_spec like any other file."""
    folder = Path(specs.__file__).parent
    for name in ("network", "network_ascii"):
        path = folder / f"{name}.json"
        assert json.loads(path.read_text()) == getattr(specs, name)
        compiled = codec.load_spec(path)
        assert compiled.name == f"{name}.json"


def test_network_dialect_shape() -> None:
    """The network dialect has binary bitmaps, ASCII fields and a binary LLLVAR field 55."""
    net = specs.network
    assert net["p"]["data_enc"] == "b" and net["1"]["data_enc"] == "b"
    assert net["2"]["data_type"] == "n" and net["4"]["data_type"] == "n"
    assert (net["55"]["data_enc"], net["55"]["len_type"], net["55"]["max_len"]) == ("b", 3, 255)
    ascii_ = specs.network_ascii
    assert ascii_["p"]["data_enc"] == "ascii" and ascii_["55"]["data_enc"] == "ascii"


def test_load_spec_from_a_json_file(impl: ModuleType, tmp_path: Path) -> None:
    """A spec written as JSON by hand loads, compiles and encodes."""
    doc = {"h": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 0},
           "t": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4},
           "p": {"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 8},
           "39": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 2}}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(doc))
    spec = codec.load_spec(path)
    raw = impl.encode({"t": "0810", "39": "00"}, spec)
    assert raw == b"0810" + bytes.fromhex("0000000002000000") + b"00"
    assert impl.decode(raw, spec) == {"t": "0810", "p": "0000000002000000", "39": "00"}


def test_load_spec_rejects_bad_json(tmp_path: Path) -> None:
    """A JSON spec with an error is refused when loaded, not when first used."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"t": {}, "p": {}, "h": {}}))
    with pytest.raises(SpecError):
        codec.load_spec(path)
