"""Tests for codec.emv: BER-TLV for ISO 8583 field 55 (EMV Book 3 Annex B)."""

from __future__ import annotations

import contextlib
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codec import emv
from codec.emv import TLV, Item, Padding, TLVError

# A Visa contact-chip ARQC as a terminal sends it (CVN 10 IAD): 28 tags, 190 bytes.
VISA_ARQC = (
    "9F26087A1C3E5F9B2D4C6E9F2701809F100706010A03A000009F37049D1F3A6B9F3602002795050000008000"
    "9A032403159C01009F02060000000123455F2A02084082025C009F1A0208409F03060000000000009F3303E0"
    "F8C89F34034203009F3501229F1E0831323334353637388407A00000000310109F0902008C9F410400000231"
    "5F3401014F07A0000000031010500B56495341204352454449549F0607A00000000310109F0702FF009F3901"
    "059F6E04207000005F2403271231"
)
VISA_TAGS = [
    "9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82", "9F1A",
    "9F03", "9F33", "9F34", "9F35", "9F1E", "84", "9F09", "9F41", "5F34", "4F", "50", "9F06",
    "9F07", "9F39", "9F6E", "5F24",
]

# A Mastercard M/Chip ARQC (18-byte IAD, CVM list and IACs): 29 tags, 217 bytes.
MC_ARQC = (
    "9F2608B4E0A8F1C2D39E579F2701809F10120110A00003220000000000000000000000FF9F37045E8C21D49F"
    "36020152950500000480009A032409179C01009F02060000000049995F2A020978820219809F1A0202769F03"
    "060000000000009F3303E0F0C89F34034103029F3501229F1E085445524D303030318407A00000000410109F"
    "090200029F4104000012345F3401009F5301524F07A0000000041010500A4D4153544552434152448E0E0000"
    "00000000000042031E031F039F0D05FC50BCA0009F0E0500000000009F0F05FC70BC98009F0702FF00"
)
MC_TAGS = [
    "9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82", "9F1A",
    "9F03", "9F33", "9F34", "9F35", "9F1E", "84", "9F09", "9F41", "5F34", "9F53", "4F", "50",
    "8E", "9F0D", "9F0E", "9F0F", "9F07",
]

# An issuer response (0110 field 55): ARPC + ARC, an issuer script (PIN unblock), ARC.
ISSUER_RESPONSE = (
    "910A1A2B3C4D5E6F708130307216"
    "9F180400000001860D84240000081122334455667788"
    "8A023030"
)

PAN = "4761739001010010"
TRACK2 = "4761739001010010D25122010000012345"


def _t(tag: str, value: bytes) -> bytes:
    """Encode one TLV with a minimal length, independently of the module under test."""
    n = len(value)
    if n < 0x80:
        length = bytes([n])
    else:
        size = (n.bit_length() + 7) // 8
        length = bytes([0x80 | size]) + n.to_bytes(size, "big")
    return bytes.fromhex(tag) + length + value


def _tlvs(items: list[Item]) -> list[TLV]:
    return [item for item in items if isinstance(item, TLV)]


def _first(items: list[Item], tag: int) -> TLV:
    return next(t for _, t in emv.walk(items) if t.tag == tag)


def _error(data: bytes) -> TLVError:
    with pytest.raises(TLVError) as info:
        emv.decode(data)
    return info.value


# --------------------------------------------------------------------------
# real-world vectors


@pytest.mark.parametrize(("hexdata", "tags"), [(VISA_ARQC, VISA_TAGS), (MC_ARQC, MC_TAGS)])
def test_vector_decodes_to_expected_tags_in_order(hexdata: str, tags: list[str]) -> None:
    """A real-world-shaped field 55 decodes to exactly its tags, in wire order, no padding."""
    items = emv.decode_hex(hexdata)
    assert [t.tag_hex for t in _tlvs(items)] == tags
    assert len(items) == len(tags)


@pytest.mark.parametrize("hexdata", [VISA_ARQC, MC_ARQC, ISSUER_RESPONSE])
def test_vector_round_trips_byte_exactly(hexdata: str) -> None:
    """Encoding a decoded real-world field 55 gives back the same upper-case hex."""
    assert emv.encode_hex(emv.decode_hex(hexdata)) == hexdata
    assert emv.encode(emv.decode(bytes.fromhex(hexdata))) == bytes.fromhex(hexdata)


def test_visa_vector_values() -> None:
    """The Visa vector's cryptogram, CID, IAD, amount, currency, AID and label read back."""
    items = emv.decode_hex(VISA_ARQC)
    assert _first(items, 0x9F26).value == bytes.fromhex("7A1C3E5F9B2D4C6E")
    assert _first(items, 0x9F27).value == b"\x80"
    assert _first(items, 0x9F10).value == bytes.fromhex("06010A03A00000")
    assert _first(items, 0x9F02).value == bytes.fromhex("000000012345")
    assert _first(items, 0x5F2A).value == bytes.fromhex("0840")
    assert _first(items, 0x84).value == bytes.fromhex("A0000000031010")
    assert _first(items, 0x50).value == b"VISA CREDIT"


def test_mastercard_vector_values() -> None:
    """The Mastercard vector's 18-byte IAD, ATC, CVM list and category code read back."""
    items = emv.decode_hex(MC_ARQC)
    assert _first(items, 0x9F10).value.hex().upper() == "0110A00003220000000000000000000000FF"
    assert _first(items, 0x9F36).value == bytes.fromhex("0152")
    assert len(_first(items, 0x8E).value) == 14
    assert _first(items, 0x9F53).value == b"R"
    assert _first(items, 0x50).value == b"MASTERCARD"


def test_issuer_response_walks_into_script_template() -> None:
    """walk visits the issuer script template 72 and its 9F18 and 86 children at depth 1."""
    items = emv.decode_hex(ISSUER_RESPONSE)
    seen = [(depth, t.tag_hex) for depth, t in emv.walk(items)]
    assert seen == [(0, "91"), (0, "72"), (1, "9F18"), (1, "86"), (0, "8A")]
    assert _first(items, 0x86).value == bytes.fromhex("84240000081122334455667788")


# --------------------------------------------------------------------------
# tags


@pytest.mark.parametrize(
    ("hexdata", "tag", "tag_hex"),
    [
        ("9F270180", 0x9F27, "9F27"),
        ("DF8F0102ABCD", 0xDF8F01, "DF8F01"),
        ("9F8F0101AA", 0x9F8F01, "9F8F01"),
        ("DF8F8F0101AA", 0xDF8F8F01, "DF8F8F01"),
        ("800100", 0x80, "80"),
    ],
)
def test_multibyte_tags_decode_and_round_trip(hexdata: str, tag: int, tag_hex: str) -> None:
    """Tags of one to four bytes decode to the right int and hex and re-encode exactly."""
    (item,) = emv.decode_hex(hexdata)
    assert isinstance(item, TLV)
    assert (item.tag, item.tag_hex) == (tag, tag_hex)
    assert emv.encode_hex([item]) == hexdata


@pytest.mark.parametrize(
    ("tag", "constructed"),
    [(0x70, True), (0x77, True), (0xA5, True), (0xBF0C, True), (0xFF8101, True),
     (0x9F26, False), (0x5A, False), (0x80, False), (0xDF8F01, False)],
)
def test_constructed_is_bit_6_of_first_tag_byte(tag: int, constructed: bool) -> None:
    """constructed reflects bit 6 of the first tag byte, whatever the tag's length."""
    assert TLV(tag, b"").constructed is constructed


def test_names_come_from_the_table_and_unknown_is_empty() -> None:
    """Known tags have their EMV name and an unknown tag's name is the empty string."""
    assert TLV(0x9F26, b"").name == "Application Cryptogram"
    assert TLV(0x9F27, b"").name == "Cryptogram Information Data"
    assert TLV(0x5F2A, b"").name == "Transaction Currency Code"
    assert TLV(0xDF7F, b"").name == ""
    assert len(emv.TAG_NAMES) >= 40


def test_unknown_tags_are_preserved_in_order() -> None:
    """Proprietary and unknown tags keep their position and bytes through a round trip."""
    hexdata = "DF7F021234" + "C10155" + "9F270180" + "9F8F0101AA" + "FF810100"
    items = emv.decode_hex(hexdata)
    assert [t.tag_hex for t in _tlvs(items)] == ["DF7F", "C1", "9F27", "9F8F01", "FF8101"]
    assert emv.encode_hex(items) == hexdata


@pytest.mark.parametrize("tag", [0, -1, 0x9F, 0x1F, 0x5A26, 0x9F8F, 0x9F8F8F8F01, 0xDF80808001])
def test_invalid_tags_are_rejected(tag: int) -> None:
    """A TLV cannot be built with an int that is not exactly one 1-4 byte BER-TLV tag."""
    with pytest.raises(ValueError, match="not a valid BER-TLV tag"):
        TLV(tag, b"")


def test_wrong_field_types_are_rejected() -> None:
    """A TLV needs an int tag and a bytes value."""
    with pytest.raises(TypeError):
        TLV("9F26", b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        TLV(0x9F26, "00")  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# constructed data


def test_nested_constructed_templates_walk_with_depths() -> None:
    """walk goes depth first through nested templates and reports each object's depth."""
    fci = _t("A5", _t("50", b"VISA") + _t("BF0C", _t("9F4D", b"\x0b\x0a")))
    data = _t("70", _t("5A", bytes.fromhex(PAN)) + fci) + _t("9F27", b"\x80")
    items = emv.decode(data)
    seen = [(depth, t.tag_hex) for depth, t in emv.walk(items)]
    assert seen == [(0, "70"), (1, "5A"), (1, "A5"), (2, "50"), (2, "BF0C"), (3, "9F4D"),
                    (0, "9F27")]
    assert emv.encode(items) == data


def test_children_decode_the_value_of_a_constructed_tag() -> None:
    """children of a 77 template are its TLVs, and encoding them gives back the value."""
    inner = _t("9F27", b"\x80") + _t("9F36", b"\x00\x27") + _t("9F26", bytes(8))
    (template,) = emv.decode(_t("77", inner))
    assert isinstance(template, TLV)
    assert [t.tag_hex for t in _tlvs(template.children)] == ["9F27", "9F36", "9F26"]
    assert emv.encode(template.children) == template.value == inner


def test_children_of_a_primitive_tag_raise() -> None:
    """Asking a primitive object for children is an error, not an empty list."""
    with pytest.raises(ValueError, match="primitive"):
        _ = TLV(0x9F26, bytes(8)).children


def test_constructed_tlv_with_malformed_value_cannot_be_built() -> None:
    """Building a constructed TLV whose value is not TLV data raises TLVError."""
    with pytest.raises(TLVError) as info:
        TLV(0x70, bytes.fromhex("5A0511"))
    assert (info.value.tag, info.value.offset) == ("5A", 2)


def _nest(levels: int) -> bytes:
    data = _t("9F27", b"\x80")
    for _ in range(levels):
        data = _t("70", data)
    return data


def test_nesting_up_to_max_depth_decodes() -> None:
    """Objects may sit at depth MAX_DEPTH: sixteen nested templates around a primitive decode."""
    items = emv.decode(_nest(emv.MAX_DEPTH))
    assert max(depth for depth, _ in emv.walk(items)) == emv.MAX_DEPTH


def test_nesting_beyond_max_depth_raises_tlverror() -> None:
    """A non-empty template at depth MAX_DEPTH raises TLVError at its value's offset."""
    err = _error(_nest(emv.MAX_DEPTH + 1))
    assert (err.tag, err.offset) == ("70", 2 * emv.MAX_DEPTH + 2)
    assert "nested too deep" in err.msg


def test_very_deep_nesting_raises_tlverror_not_recursionerror() -> None:
    """Thousands of nested templates raise TLVError, never RecursionError."""
    data = _nest(3000)
    assert _error(data).tag == "70"
    with pytest.raises(TLVError):
        TLV(0x70, data)


# --------------------------------------------------------------------------
# lengths


@pytest.mark.parametrize(
    ("size", "length_hex"),
    [(0, "00"), (127, "7F"), (128, "8180"), (200, "81C8"), (255, "81FF"), (256, "820100"),
     (300, "82012C"), (65536, "83010000")],
)
def test_lengths_use_the_minimal_form(size: int, length_hex: str) -> None:
    """Values use short form below 128 bytes and the shortest long form above; both decode."""
    item = TLV(0x90, bytes(range(256)) * (size // 256) + bytes(range(size % 256)))
    data = emv.encode([item])
    assert data[1 : 1 + len(length_hex) // 2].hex().upper() == length_hex
    assert emv.decode(data) == [item]


@pytest.mark.parametrize(
    ("hexdata", "length_form"),
    [("9F2681050102030405", 2), ("5F2A8200020978", 3), ("9F27840000000180", 5),
     ("9F10820081" + "AB" * 0x81, 3)],
)
def test_non_minimal_lengths_round_trip(hexdata: str, length_form: int) -> None:
    """A non-minimal length such as 81 05 is kept in length_form and re-encoded exactly."""
    (item,) = emv.decode_hex(hexdata)
    assert isinstance(item, TLV)
    assert item.length_form == length_form
    assert emv.encode_hex([item]) == hexdata


def test_minimal_lengths_decode_with_length_form_zero() -> None:
    """A minimal length decodes to length_form 0, so it equals a freshly built TLV."""
    assert emv.decode_hex("9F2781C8" + "00" * 200) == [TLV(0x9F27, bytes(200))]
    assert emv.decode_hex("9F270180") == [TLV(0x9F27, b"\x80")]


@pytest.mark.parametrize(("size", "length_form"), [(5, 1), (5, 6), (5, -1), (200, 2), (200, 1)])
def test_invalid_length_forms_are_rejected(size: int, length_form: int) -> None:
    """length_form must be 0 or a longer-than-minimal size of at most 5 bytes."""
    with pytest.raises(ValueError, match="length_form"):
        TLV(0x9F10, bytes(size), length_form)


# --------------------------------------------------------------------------
# padding


def test_padding_before_between_and_after_round_trips() -> None:
    """00 bytes around and between objects decode to Padding items and re-encode exactly."""
    hexdata = "0000" + "9F270180" + "00" + "9F36020027" + "000000"
    items = emv.decode_hex(hexdata)
    assert items == [Padding(2), TLV(0x9F27, b"\x80"), Padding(1), TLV(0x9F36, b"\x00\x27"),
                     Padding(3)]
    assert emv.encode_hex(items) == hexdata


def test_padding_inside_a_template_round_trips() -> None:
    """Padding inside a constructed value shows up in its children and round-trips."""
    hexdata = "7007" + "00" + "9F270180" + "0000"
    (template,) = emv.decode_hex(hexdata)
    assert isinstance(template, TLV)
    assert template.children == [Padding(1), TLV(0x9F27, b"\x80"), Padding(2)]
    assert [t.tag_hex for _, t in emv.walk([template])] == ["70", "9F27"]
    assert emv.encode_hex([template]) == hexdata


def test_padding_only_and_empty_input() -> None:
    """All-zero input is one Padding run and empty input is an empty list."""
    assert emv.decode(bytes(5)) == [Padding(5)]
    assert emv.decode(b"") == []
    with pytest.raises(ValueError):
        Padding(0)


# --------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("hexdata", "tag", "offset", "msg"),
    [
        ("9F", "9F", 0, "truncated tag"),
        ("9F2701809F", "9F", 4, "truncated tag"),
        ("000000DF8F", "DF8F", 3, "truncated tag"),
        ("DF8F8F8F0100", "DF8F8F8F", 0, "tag longer than 4 bytes"),
        ("9F26", "9F26", 2, "truncated length"),
        ("9F2681", "9F26", 2, "truncated length"),
        ("9F268200", "9F26", 2, "truncated length"),
        ("9F26820001", "9F26", 5, "value runs past the end"),
        ("9F268000", "9F26", 2, "indefinite length"),
        ("9F268500000000010A", "9F26", 2, "unsupported length form"),
        ("9F26FF", "9F26", 2, "unsupported length form"),
        ("9F2608AABB", "9F26", 3, "value runs past the end"),
        ("9F270180" + "5A0A" + PAN, "5A", 6, "value runs past the end"),
        ("70035A0511", "5A", 4, "value runs past the end"),
        ("70045A0211229F", "9F", 6, "truncated tag"),
    ],
)
def test_malformed_input_raises_tlverror_with_offset(
    hexdata: str, tag: str, offset: int, msg: str
) -> None:
    """Each malformation raises TLVError naming the tag and the malformed element's offset."""
    err = _error(bytes.fromhex(hexdata))
    assert (err.tag, err.offset) == (tag, offset)
    assert msg in err.msg
    assert str(err) == f"{err.msg}: tag {tag} offset {offset}"
    assert isinstance(err, ValueError)


def test_tlverror_pickles_with_its_attributes() -> None:
    """A TLVError survives pickling with msg, tag, offset and text intact."""
    err = _error(bytes.fromhex("9F2608AABB"))
    copy = pickle.loads(pickle.dumps(err))
    assert type(copy) is TLVError
    assert (copy.msg, copy.tag, copy.offset, str(copy)) == (err.msg, "9F26", 3, str(err))


@pytest.mark.parametrize(
    "hexdata",
    [
        "5A0A" + PAN,
        "5711" + TRACK2[:-2],
        "9F270180" + "5711" + TRACK2 + "9F",
        "7014" + "5711" + TRACK2 + "5A",
        "5A" + "8109" + PAN,
    ],
)
def test_error_text_never_contains_card_data(hexdata: str) -> None:
    """The text, repr and args of an error about 5A/57 data never contain their value hex."""
    err = _error(bytes.fromhex(hexdata))
    text = " ".join([str(err), repr(err), *map(str, err.args)]).upper()
    for secret in (PAN, TRACK2[:-2], PAN[:12], PAN[4:]):
        assert secret not in text


def test_non_bytes_input_raises_typeerror() -> None:
    """decode takes bytes-like input only; a str (even hex) raises TypeError."""
    with pytest.raises(TypeError):
        emv.decode("9F270180")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        emv.decode_hex(b"9F270180")  # type: ignore[arg-type]
    assert emv.decode(bytearray(b"\x9f\x27\x01\x80")) == [TLV(0x9F27, b"\x80")]
    assert emv.decode(memoryview(b"\x9f\x27\x01\x80")) == [TLV(0x9F27, b"\x80")]


def test_encode_and_walk_reject_foreign_items() -> None:
    """encode and walk raise TypeError for anything that is not a TLV or Padding."""
    with pytest.raises(TypeError):
        emv.encode([b"\x9f\x27\x01\x80"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        list(emv.walk(["9F27"]))  # type: ignore[list-item]


# --------------------------------------------------------------------------
# hex


def test_hex_is_upper_case_out_and_either_case_in() -> None:
    """encode_hex is upper case, and decode_hex accepts lower case input."""
    items = emv.decode_hex(VISA_ARQC.lower())
    assert emv.encode_hex(items) == VISA_ARQC


@pytest.mark.parametrize(
    ("hexdata", "offset"), [("9F2G0180", 1), ("9F27018", 3), ("9F27 0180", 2), ("9F2701\u06680", 3)]
)
def test_bad_hex_raises_tlverror(hexdata: str, offset: int) -> None:
    """Non-hex characters and odd lengths raise TLVError with tag "" and the byte offset."""
    with pytest.raises(TLVError) as info:
        emv.decode_hex(hexdata)
    assert (info.value.tag, info.value.offset) == ("", offset)


# --------------------------------------------------------------------------
# describe and sensitive data


def test_describe_shows_tag_name_length_and_value() -> None:
    """describe gives one line per object: indented tag, name, [length] and value hex."""
    data = _t("9F27", b"\x80") + _t("DF7F", b"\x12\x34") + _t("77", _t("9F36", b"\x00\x27"))
    assert emv.describe(emv.decode(data)) == [
        "9F27 Cryptogram Information Data [1] 80",
        "DF7F (unknown) [2] 1234",
        "77 Response Message Template Format 2 [5]",
        "  9F36 Application Transaction Counter (ATC) [2] 0027",
    ]


@pytest.mark.parametrize(
    ("pan_hex", "shown"),
    [(PAN, "476173******0010"), ("374245455400126F", "374245*****0126"),
     ("6799998900000060019F", "679999*********0019")],
)
def test_describe_masks_pan_to_first6_last4(pan_hex: str, shown: str) -> None:
    """Tag 5A (BCD, F-padded or not) shows at most its first 6 and last 4 digits."""
    (line,) = emv.describe([TLV(0x5A, bytes.fromhex(pan_hex))])
    assert line == f"5A Application PAN [{len(pan_hex) // 2}] {shown}"


def test_describe_redacts_non_bcd_pan() -> None:
    """A 5A value that is not BCD digits is redacted rather than shown or half-masked."""
    (line,) = emv.describe([TLV(0x5A, bytes.fromhex("4761ABCD01010010"))])
    assert line.endswith("<redacted 8 bytes>")
    assert "4761" not in line


@pytest.mark.parametrize("tag", sorted(emv.SENSITIVE_TAGS - {0x5A}))
def test_describe_redacts_sensitive_tags(tag: int) -> None:
    """Track data, cardholder name, PIN data and the like show only their length."""
    value = bytes.fromhex(TRACK2)
    (line,) = emv.describe([TLV(tag, value)])
    assert line.endswith(f"<redacted {len(value)} bytes>")
    assert TRACK2 not in line.upper()


def test_describe_inside_templates_masks_and_shows_no_template_value() -> None:
    """Sensitive children of a template are masked, and the template's raw value is not shown."""
    data = _t("70", _t("57", bytes.fromhex(TRACK2)) + _t("5A", bytes.fromhex(PAN)))
    text = "\n".join(emv.describe(emv.decode(data)))
    assert "  57 Track 2 Equivalent Data [17] <redacted 17 bytes>" in text
    assert "  5A Application PAN [8] 476173******0010" in text
    assert PAN not in text
    assert TRACK2 not in text


def test_sensitive_tags_cover_card_data() -> None:
    """SENSITIVE_TAGS holds the PAN, track, name and PIN tags but not the service code."""
    assert {0x5A, 0x57, 0x56, 0x9F6B, 0x5F20, 0x9F1F, 0x9F20, 0x99} <= emv.SENSITIVE_TAGS
    assert 0x5F30 not in emv.SENSITIVE_TAGS


def test_repr_hides_sensitive_values() -> None:
    """repr of a TLV holding card data, directly or in a template, never shows the value."""
    pan = TLV(0x5A, bytes.fromhex(PAN))
    record = TLV(0x70, _t("57", bytes.fromhex(TRACK2)))
    for item in (pan, record):
        assert "redacted" in repr(item)
        assert PAN not in repr(item).upper()
    assert "80" in repr(TLV(0x9F27, b"\x80"))


# --------------------------------------------------------------------------
# properties


def _length_forms(size: int) -> st.SearchStrategy[int]:
    minimal = 1 if size < 0x80 else 1 + (size.bit_length() + 7) // 8
    return st.sampled_from([0, *range(minimal + 1, 6)])


@st.composite
def _tags(draw: st.DrawFn, constructed: bool) -> int:
    first = (draw(st.integers(0, 3)) << 6) | (0x20 if constructed else 0)
    size = draw(st.integers(1, 4))
    if size == 1:
        return first | draw(st.integers(0 if first else 1, 0x1E))
    middle = [draw(st.integers(0x80, 0xFF)) for _ in range(size - 2)]
    last = draw(st.integers(0, 0x7F))
    return int.from_bytes(bytes([first | 0x1F, *middle, last]), "big")


@st.composite
def _primitive(draw: st.DrawFn) -> TLV:
    value = draw(st.one_of(st.binary(max_size=16), st.binary(min_size=120, max_size=300)))
    return TLV(draw(_tags(False)), value, draw(_length_forms(len(value))))


@st.composite
def _constructed(draw: st.DrawFn, depth: int) -> TLV:
    value = emv.encode(draw(_item_lists(depth - 1)))
    return TLV(draw(_tags(True)), value, draw(_length_forms(len(value))))


def _item_lists(depth: int) -> st.SearchStrategy[list[Item]]:
    leaf: st.SearchStrategy[Item] = st.one_of(_primitive(), st.builds(Padding, st.integers(1, 3)))
    if depth > 0:
        leaf = st.one_of(leaf, _constructed(depth))
    return st.lists(leaf, max_size=5)


def _merge_padding(items: list[Item]) -> list[Item]:
    out: list[Item] = []
    for item in items:
        if isinstance(item, Padding) and out and isinstance(out[-1], Padding):
            out[-1] = Padding(out[-1].size + item.size)
        else:
            out.append(item)
    return out


@settings(max_examples=300, database=None, deadline=None)
@given(_item_lists(3))
def test_property_generated_sequences_round_trip(items: list[Item]) -> None:
    """Any valid TLV sequence decodes back to itself (padding runs merged) and re-encodes."""
    data = emv.encode(items)
    decoded = emv.decode(data)
    assert decoded == _merge_padding(items)
    assert emv.encode(decoded) == data


@settings(max_examples=500, database=None, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_arbitrary_bytes_decode_or_raise_tlverror(data: bytes) -> None:
    """Arbitrary bytes either decode, and then re-encode to the same bytes, or raise TLVError."""
    try:
        items = emv.decode(data)
    except TLVError:
        return
    assert emv.encode(items) == data
    emv.describe(items)


@settings(max_examples=300, database=None, deadline=None)
@given(_item_lists(3), st.data())
def test_fuzz_mutated_valid_data_decodes_or_raises_tlverror(
    items: list[Item], data: st.DataObject
) -> None:
    """Valid encodings with a byte changed or cut off either round-trip or raise TLVError."""
    raw = bytearray(emv.encode(items))
    if raw:
        index = data.draw(st.integers(0, len(raw) - 1))
        raw[index] = data.draw(st.integers(0, 255))
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    try:
        decoded = emv.decode(bytes(raw))
    except TLVError:
        return
    assert emv.encode(decoded) == raw


@settings(max_examples=200, database=None, deadline=None)
@given(st.text(alphabet="0123456789abcdefABCDEF G", max_size=40))
def test_fuzz_hex_text_decodes_or_raises_tlverror(text: str) -> None:
    """Any hex-ish text either decodes via decode_hex or raises TLVError."""
    with contextlib.suppress(TLVError):
        emv.decode_hex(text)


@settings(max_examples=200, database=None, deadline=None)
@given(st.text(alphabet="0123456789", min_size=13, max_size=19))
def test_property_describe_never_shows_whole_pan(digits: str) -> None:
    """describe shows at most 10 digits of any 13-19 digit PAN and never the whole of it."""
    padded = digits + "F" * (len(digits) % 2)
    (line,) = emv.describe([TLV(0x5A, bytes.fromhex(padded))])
    shown = line.rsplit(" ", 1)[1]
    assert digits not in line
    assert sum(ch.isdigit() for ch in shown) <= 10
    assert shown[:6] == digits[:6]
    assert shown[-4:] == digits[-4:]
