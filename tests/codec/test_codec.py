"""The codec's behaviour field by field, and its errors; every test runs on the
Cython kernel and on the pure-Python twin."""

from __future__ import annotations

import copy
import pickle
from types import ModuleType
from typing import Any

import pytest

import codec
from codec import examples, specs
from codec.errors import DecodeError, EncodeError

NET = specs.network


def _spec(**fields: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(NET)
    spec.update(fields)
    return spec


def test_sample_0100_round_trips(impl: ModuleType) -> None:
    """A realistic 0100 decodes back to what was encoded, plus its bitmap."""
    doc = examples.auth_request()
    decoded = impl.decode(impl.encode(doc, NET), NET)
    assert decoded.pop("p") == "723C468108E08210"
    assert "1" not in decoded
    assert decoded == doc


def test_encode_does_not_modify_the_document(impl: ModuleType) -> None:
    """encode leaves its input untouched (pyiso8583 adds bitmaps to it; we do not)."""
    doc = examples.auth_request()
    doc["p"] = "stale"
    before = dict(doc)
    impl.encode(doc, NET)
    assert doc == before


def test_bitmap_keys_in_the_document_are_ignored(impl: ModuleType) -> None:
    """Bitmaps are always computed: stale `p`, `1` and `65` values do not matter."""
    doc = {"t": "0800", "70": "301", "11": "000001"}
    plain = impl.encode(doc, NET)
    assert impl.encode({**doc, "p": "FFFF", "1": "00", "65": "X"}, NET) == plain


def test_secondary_bitmap_is_built_for_fields_65_to_128(impl: ModuleType) -> None:
    """Field 70 sets bit 1 of the primary bitmap and bit 6 of the secondary bitmap."""
    raw = impl.encode({"t": "0800", "7": "1122193012", "11": "000001", "70": "301"}, NET)
    assert raw[:4] == b"0800"
    assert raw[4:12].hex().upper() == "8220000000000000"
    assert raw[12:20].hex().upper() == "0400000000000000"
    decoded = impl.decode(raw, NET)
    assert decoded["1"] == "0400000000000000" and decoded["70"] == "301"


def test_tertiary_bitmap_is_appended_to_field_1(impl: ModuleType) -> None:
    """Fields 129-192 add a third bitmap, announced by bit 65, and extend `1` to 32 hex."""
    spec = _spec(**{"130": {"data_enc": "ascii", "len_enc": "ascii", "len_type": 0,
                            "max_len": 3, "desc": "x"}})
    raw = impl.encode({"t": "0100", "130": "abc"}, spec)
    assert raw[4:12] == bytes.fromhex("8000000000000000")
    assert raw[12:28] == bytes.fromhex("8000000000000000" "4000000000000000")
    assert impl.decode(raw, spec) == {"t": "0100", "p": "8000000000000000",
                                      "1": "80000000000000004000000000000000", "130": "abc"}


def test_header_is_required_when_the_spec_has_one(impl: ModuleType) -> None:
    """A spec with a header needs `h`; it is written before the MTI and decoded first."""
    spec = _spec(h={"data_enc": "ascii", "len_enc": "ascii", "len_type": 0, "max_len": 4})
    raw = impl.encode({"h": "ISO1", "t": "0800", "70": "001"}, spec)
    assert raw.startswith(b"ISO10800")
    assert list(impl.decode(raw, spec))[:3] == ["h", "t", "p"]
    with pytest.raises(EncodeError) as err:
        impl.encode({"t": "0800"}, spec)
    assert err.value.field == "h"


@pytest.mark.parametrize(("len_enc", "len_type", "prefix"), [
    ("ascii", 2, b"05"), ("ascii", 3, b"005"), ("ascii", 4, b"0005"),
    ("bcd", 1, b"\x05"), ("bcd", 2, b"\x00\x05"), ("b", 1, b"\x05"), ("b", 2, b"\x00\x05"),
    ("cp500", 2, b"\xf0\xf5"),
])
def test_length_prefixes(impl: ModuleType, len_enc: str, len_type: int, prefix: bytes) -> None:
    """Variable lengths are written in ASCII, BCD, binary or EBCDIC of the declared width."""
    spec = _spec(**{"48": {"data_enc": "ascii", "len_enc": len_enc, "len_type": len_type,
                           "max_len": 99}})
    raw = impl.encode({"t": "0100", "48": "hello"}, spec)
    assert raw.endswith(prefix + b"hello")
    assert impl.decode(raw, spec)["48"] == "hello"


def test_ebcdic_and_latin1_data(impl: ModuleType) -> None:
    """cp500 (EBCDIC) and latin-1 fields carry non-ASCII text both ways."""
    spec = _spec(**{
        "43": {"data_enc": "cp500", "len_enc": "ascii", "len_type": 0, "max_len": 5},
        "48": {"data_enc": "latin-1", "len_enc": "ascii", "len_type": 3, "max_len": 99},
    })
    doc = {"t": "0100", "43": "MÜNCH", "48": "café ¤"}
    raw = impl.encode(doc, spec)
    assert "MÜNCH".encode("cp500") in raw and "café ¤".encode("latin-1") in raw
    assert impl.decode(raw, spec) == {**doc, "p": "0000000000210000"}


def test_bcd_nibbles_with_left_and_right_padding(impl: ModuleType) -> None:
    """Odd nibble counts are padded on the declared side and the pad removed on decode."""
    spec = _spec(**{
        "2": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 19,
              "len_count": "nibbles", "left_pad": "0"},
        "35": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 37,
               "len_count": "nibbles", "right_pad": "F"},
    })
    doc = {"t": "0100", "2": "4000000000000000002", "35": "4242424242424242D281210100000"}
    raw = impl.encode(doc, spec)
    assert bytes.fromhex("19" "04000000000000000002") in raw
    assert bytes.fromhex("29" "4242424242424242D281210100000F") in raw
    assert impl.decode(raw, spec) == {**doc, "p": "4000000020000000"}


def test_binary_field_is_upper_case_hex(impl: ModuleType) -> None:
    """Binary fields decode to upper-case hex; lower-case hex is accepted on encode."""
    raw = impl.encode({"t": "0100", "52": "0123456789abcdef"}, NET)
    assert raw.endswith(bytes.fromhex("0123456789ABCDEF"))
    assert impl.decode(raw, NET)["52"] == "0123456789ABCDEF"


def test_zero_length_variable_field(impl: ModuleType) -> None:
    """An empty variable field is sent as a zero length and decodes to an empty string."""
    raw = impl.encode({"t": "0100", "44": ""}, NET)
    assert raw.endswith(b"00")
    assert impl.decode(raw, NET)["44"] == ""


def test_binary_mti(impl: ModuleType) -> None:
    """A binary (BCD) message type takes two bytes."""
    spec = _spec(t={"data_enc": "b", "len_enc": "ascii", "len_type": 0, "max_len": 2})
    raw = impl.encode({"t": "0200", "39": "00"}, spec)
    assert raw[:2] == b"\x02\x00"
    assert impl.decode(raw, spec)["t"] == "0200"


def test_accepts_bytearray_and_memoryview(impl: ModuleType) -> None:
    """decode takes any bytes-like object."""
    raw = impl.encode(examples.auth_response(), NET)
    assert impl.decode(bytearray(raw), NET) == impl.decode(memoryview(raw), NET)


def test_accepts_a_compiled_spec(impl: ModuleType) -> None:
    """A spec compiled once with load_spec is accepted wherever a dict spec is."""
    compiled = codec.load_spec(NET, "network")
    doc = examples.auth_request()
    assert impl.encode(doc, compiled) == impl.encode(doc, NET)


# ---------------------------------------------------------------- encode errors

ENCODE_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"2": "4242"}, "t", "Field data is required"),
    ({"t": "01000"}, "t", "Message type must be 4 digits"),
    ({"t": "01A0"}, "t", "Message type must be 4 digits"),
    ({"t": 100}, "t", "invalid data"),
    ({"t": "0100", "4": "123"}, "4", "Field data is 3 bytes, expecting 12"),
    ({"t": "0100", "4": "00000000100A"}, "4", "non-digit data"),
    ({"t": "0100", "2": "4" * 20}, "2", "Field data is 20 bytes, larger than maximum 19"),
    ({"t": "0100", "43": "é" * 40}, "43", "invalid data"),
    ({"t": "0100", "52": "12345"}, "52", "odd-length hex data"),
    ({"t": "0100", "52": "0123456789ABCDEG"}, "52", "non-hex data"),
    ({"t": "0100", "52": "0123456789ABCDE\u00e9"}, "52", "non-hex data"),
    ({"t": "0100", "2": b"4242424242424242"}, "2", "invalid data"),
    ({"t": "0100", "193": "x"}, "p", "outside of 2-192"),
    ({"t": "0100", "0": "x"}, "p", "outside of 2-192"),
    ({"t": "0100", "02": "x"}, "p", "outside of 2-192"),
    ({"t": "0100", 2: "x"}, "p", "non-string key"),  # type: ignore[dict-item]
    ({"t": "0100", "130": "x"}, "130", "not defined in the specification"),
]


@pytest.mark.parametrize(("doc", "field", "text"), ENCODE_ERRORS)
def test_encode_errors_name_the_field(impl: ModuleType, doc: dict[str, Any], field: str,
                                      text: str) -> None:
    """Every invalid document raises EncodeError naming the field at fault."""
    with pytest.raises(EncodeError) as err:
        impl.encode(doc, NET)
    assert err.value.field == field
    assert text in str(err.value)
    assert isinstance(err.value, ValueError)


def test_encode_error_offset_and_partial_result(impl: ModuleType) -> None:
    """The error gives the byte offset where the field would start and what came before."""
    doc = {"t": "0100", "3": "000000", "4": "12", "11": "000001"}
    with pytest.raises(EncodeError) as err:
        impl.encode(doc, NET)
    assert err.value.pos == 4 + 8 + 6
    assert err.value.partial == {"t": "0100", "3": "000000"}


def test_odd_nibbles_without_pad_is_an_error(impl: ModuleType) -> None:
    """An odd nibble count with no pad character declared cannot be encoded."""
    spec = _spec(**{"2": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 19,
                          "len_count": "nibbles"}})
    with pytest.raises(EncodeError, match="specify pad"):
        impl.encode({"t": "0100", "2": "123"}, spec)


def test_fields_above_64_need_a_secondary_bitmap_in_the_spec(impl: ModuleType) -> None:
    """Without a `1` entry in the spec, fields 65-128 cannot be sent."""
    spec = _spec()
    del spec["1"]
    with pytest.raises(EncodeError) as err:
        impl.encode({"t": "0800", "70": "301"}, spec)
    assert err.value.field == "1"


# ---------------------------------------------------------------- decode errors

def _raw(impl: ModuleType) -> bytes:
    data: bytes = impl.encode(examples.auth_request(), NET)
    return data


def test_truncated_input_names_field_and_offset(impl: ModuleType) -> None:
    """Cutting a message anywhere raises DecodeError with an offset inside the input."""
    raw = _raw(impl)
    for cut in range(len(raw)):
        with pytest.raises(DecodeError) as err:
            impl.decode(raw[:cut], NET)
        assert 0 <= err.value.pos <= cut
        assert err.value.field


def test_trailing_garbage_is_rejected(impl: ModuleType) -> None:
    """Bytes after the last field are an error at the offset where they start."""
    raw = _raw(impl)
    with pytest.raises(DecodeError) as err:
        impl.decode(raw + b"X", NET)
    assert err.value.pos == len(raw)
    assert "Extra data" in err.value.msg


def test_decode_errors(impl: ModuleType) -> None:
    """Non-digit lengths and amounts, oversized lengths and bad bitmaps are DecodeErrors."""
    cases = [
        (b"0100" + bytes.fromhex("4000000000000000") + b"1X4242", "2", 12,
         "non-numeric"),
        (b"0100" + bytes.fromhex("4000000000000000") + b"20" + b"4" * 20, "2", 12,
         "larger than maximum 19"),
        (b"0100" + bytes.fromhex("1000000000000000") + b"00000000100A", "4", 12,
         "non-digit"),
        (b"01X0" + bytes.fromhex("1000000000000000"), "t", 0, "4 digits"),
        (b"0100" + bytes.fromhex("0000000000000001"), "64", 12, "Field data is 0 bytes"),
        (b"0100" + bytes.fromhex("0000000000200000") + b"\xff" * 8, "43", 12, "Field data"),
        (b"0100" + bytes.fromhex("0000000000200000") + b"\xff" * 40, "43", 12,
         "invalid data"),
    ]
    for raw, field, pos, text in cases:
        with pytest.raises(DecodeError) as err:
            impl.decode(raw, NET)
        assert (err.value.field, err.value.pos) == (field, pos), raw
        assert text in err.value.msg


def test_bitmap_announcing_a_field_the_spec_lacks(impl: ModuleType) -> None:
    """A bitmap bit for a field that the spec does not define is a DecodeError."""
    spec = _spec()
    del spec["48"]
    raw = impl.encode({"t": "0100", "48": "abc"}, NET)
    with pytest.raises(DecodeError) as err:
        impl.decode(raw, spec)
    assert (err.value.field, err.value.pos) == ("48", 12)


def test_text_bitmap_must_be_hex(impl: ModuleType) -> None:
    """In the all-ASCII dialect a bitmap that is not 16 hex digits is rejected."""
    with pytest.raises(DecodeError) as err:
        impl.decode(b"0100" + b"40000000000000G0" + b"164242424242424242",
                    specs.network_ascii)
    assert (err.value.field, err.value.pos) == ("p", 4)


def test_bad_bcd_length(impl: ModuleType) -> None:
    """A BCD length with a nibble above 9 is rejected at the length's offset."""
    spec = _spec(**{"2": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 19,
                          "len_count": "nibbles", "left_pad": "0"}})
    with pytest.raises(DecodeError) as err:
        impl.decode(b"0100" + bytes.fromhex("4000000000000000") + b"\x1a" + b"\x00" * 8, spec)
    assert (err.value.field, err.value.pos, err.value.msg) == (
        "2", 12, "Failed to decode field length, invalid BCD data")


def test_missing_pad_nibble(impl: ModuleType) -> None:
    """An odd-length BCD field whose pad nibble is wrong is rejected."""
    spec = _spec(**{"2": {"data_enc": "b", "len_enc": "bcd", "len_type": 1, "max_len": 19,
                          "len_count": "nibbles", "left_pad": "0"}})
    with pytest.raises(DecodeError) as err:
        impl.decode(b"0100" + bytes.fromhex("4000000000000000") + bytes.fromhex("03123"
                    "4"), spec)
    assert err.value.field == "2" and err.value.pos == 13


def test_errors_pickle_with_their_attributes(impl: ModuleType) -> None:
    """DecodeError and EncodeError survive pickling with field, offset and partial result."""
    with pytest.raises(DecodeError) as derr:
        impl.decode(_raw(impl)[:-3], NET)
    with pytest.raises(EncodeError) as eerr:
        impl.encode({"t": "0100", "2": "4242424242424242", "4": "x"}, NET)
    for exc in (derr.value, eerr.value):
        clone = pickle.loads(pickle.dumps(exc))
        assert type(clone) is type(exc)
        assert (str(clone), clone.field, clone.pos, clone.partial) == (
            str(exc), exc.field, exc.pos, exc.partial)


def test_card_data_never_appears_in_errors(impl: ModuleType) -> None:
    """No error text, repr, partial result or pickle carries a PAN, track, PIN or ICC value."""
    pan, track = "4000056655665556", "4000056655665556D28121010000000000"
    doc = {"t": "0100", "2": pan, "35": track, "52": "A1B2C3D4E5F60718",
           "55": examples.ICC_DATA, "64": "zz"}
    with pytest.raises(EncodeError) as eerr:
        impl.encode(doc, NET)
    raw = impl.encode({k: v for k, v in doc.items() if k != "64"}, NET)
    with pytest.raises(DecodeError) as derr:
        impl.decode(raw + b"!", NET)
    for exc in (eerr.value, derr.value):
        blob = str(exc) + repr(exc) + repr(exc.partial) + repr(pickle.dumps(exc))
        for secret in (pan, track, "A1B2C3D4E5F60718", examples.ICC_DATA, pan[6:12]):
            assert secret not in blob
        assert exc.partial["2"] == "400005******5556"


def test_kernel_and_twin_raise_identical_errors() -> None:
    """For the same bad input the kernel and the twin report the same message and offset."""
    from conftest import KERNEL

    from codec import _twin

    if KERNEL is None:
        pytest.skip("kernel not built")
    raw = _twin.encode(examples.auth_request(), NET)
    inputs = [raw[:n] for n in range(0, len(raw), 3)] + [raw + b"\x00"]
    inputs += [raw[:20] + bytes([b ^ 0x40]) + raw[21:] for b in raw[20:21]]
    for data in inputs:
        results = []
        for module in (KERNEL, _twin):
            try:
                results.append(("ok", module.decode(data, NET)))
            except DecodeError as exc:
                results.append(("err", (exc.msg, exc.field, exc.pos, exc.partial)))
        assert results[0] == results[1]
