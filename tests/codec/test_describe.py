"""describe(): a readable dump in which card data is masked or hidden."""

from __future__ import annotations

from codec import decode, describe, emv, encode, examples, specs

PAN = "4000056655665556"
TRACK2 = "4000056655665556D28121010000000000"


def _doc() -> dict[str, str]:
    doc = examples.auth_request()
    doc.update({"2": PAN, "35": TRACK2, "52": "A1B2C3D4E5F60718"})
    # Field 55 with the PAN (5A) and track 2 equivalent data (57) inside.
    icc = emv.decode_hex(examples.ICC_DATA)
    icc += [emv.TLV(0x5A, bytes.fromhex(PAN)), emv.TLV(0x57, bytes.fromhex(TRACK2))]
    doc["55"] = emv.encode_hex(icc)
    return doc


def test_pan_is_masked_to_first_six_last_four() -> None:
    """Field 2 shows at most the first 6 and last 4 digits."""
    text = describe(_doc(), specs.network)
    assert "400005******5556" in text
    assert PAN not in text and "665566" not in text


def test_track_data_and_pin_block_are_hidden() -> None:
    """Track 2 and the PIN block appear only as a length."""
    text = describe(_doc(), specs.network)
    assert TRACK2 not in text and "D2812101" not in text
    assert "A1B2C3D4E5F60718" not in text
    assert "<hidden, 34 chars>" in text and "<hidden, 16 chars>" in text


def test_icc_data_is_unfolded_with_sensitive_tags_masked() -> None:
    """Field 55 is listed tag by tag; tag 5A is masked and tag 57 redacted."""
    text = describe(_doc(), specs.network)
    assert "9F26 Application Cryptogram [8] C3A0F4D2B1E7A965" in text
    assert "400005******5556" in text.split("55   ")[1]
    assert "<redacted 17 bytes>" in text
    assert "D2812101" not in text


def test_describe_accepts_raw_bytes() -> None:
    """describe decodes raw bytes first, then dumps them the same way."""
    doc = _doc()
    raw = encode(doc, specs.network)
    text = describe(raw, specs.network)
    assert text == describe(decode(raw, specs.network), specs.network)
    assert "400005******5556" in text and PAN not in text


def test_invalid_icc_data_is_reported_not_raised() -> None:
    """A field 55 that is not valid BER-TLV is flagged, not shown and not an exception."""
    doc = {"t": "0100", "55": "9F2608C3A0"}
    text = describe(doc, specs.network)
    assert "<not valid BER-TLV>" in text and "C3A0" not in text
