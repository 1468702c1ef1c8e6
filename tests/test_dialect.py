"""The network dialect's small pure helpers: MTI mapping, matching, fields 7 and 90."""

from __future__ import annotations

import datetime as dt

import pytest

from codec import dialect


def test_every_request_has_a_response_mti() -> None:
    """Requests map to their responses (0421 repeats are answered by 0430); others to None."""
    assert dialect.response_mti("0100") == "0110"
    assert dialect.response_mti("0421") == "0430" == dialect.response_mti("0420")
    assert dialect.response_mti("0110") is None
    assert set(dialect.REQUIRED_FIELDS) == set(dialect.REQUEST_MTIS)


def test_repeats_are_answered_and_checked_as_their_originals() -> None:
    """0221, 0201 and 0401 repeat 0220, 0200 and 0400: the same response MTI and the same
    mandatory fields; 0421 is not one of them (it repeats an advice under a new STAN)."""
    assert dict(dialect.REPEATS) == {"0221": "0220", "0201": "0200", "0401": "0400"}
    for repeat_mti, base in dialect.REPEATS.items():
        assert dialect.response_mti(repeat_mti) == dialect.response_mti(base) is not None
        assert dialect.REQUIRED_FIELDS[repeat_mti] == dialect.REQUIRED_FIELDS[base]
        assert repeat_mti in dialect.REQUEST_MTIS
    assert dialect.response_mti("0221") == "0230"
    assert dialect.response_mti("0201") == "0210"
    assert dialect.response_mti("0401") == "0410"
    assert "0421" not in dialect.REPEATS


def test_match_key_is_terminal_and_stan() -> None:
    """A response is matched by (field 41, field 11)."""
    assert dialect.match_key({"t": "0110", "41": "TERM0001", "11": "000042"}) == (
        "TERM0001", "000042")


def test_transmission_time_is_utc_mmddhhmmss() -> None:
    """Field 7 renders the given moment in UTC, and now as ten digits."""
    moment = dt.datetime(2026, 11, 22, 21, 30, 5, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert dialect.transmission_time(moment) == "1122203005"
    now = dialect.transmission_time()
    assert len(now) == 10 and now.isdigit()
    assert now[:4] == dt.datetime.now(dt.UTC).strftime("%m%d")


def test_original_data_round_trips() -> None:
    """Field 90 packs the original MTI, STAN, field 7 and acquirer into 42 digits."""
    field90 = dialect.original_data("0100", "000123", "1122193012", "440001")
    assert len(field90) == 42
    assert dialect.parse_original_data(field90) == ("0100", "000123", "1122193012", "440001")
    with pytest.raises(ValueError):
        dialect.original_data("0100", "123", "1122193012", "440001")
    with pytest.raises(ValueError):
        dialect.parse_original_data("01000001231122193012")


def test_the_security_code_field_round_trips_and_refuses_anything_else() -> None:
    """Field 48 is CVC + 2-digit length + 3 or 4 digits; anything else is refused."""
    from codec import dialect
    assert dialect.security_code("123") == "CVC03123"
    assert dialect.parse_security_code(dialect.security_code("1234")) == "1234"
    for bad in ("CVC0312", "CVC04123", "XYZ03123", "CVC03ABC", "CVC0212", ""):
        with pytest.raises(ValueError):
            dialect.parse_security_code(bad)
    with pytest.raises(ValueError):
        dialect.security_code("12")
