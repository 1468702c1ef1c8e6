"""The network errors: what they carry, and that their text never contains card data."""

from __future__ import annotations

import pickle

from codec import examples
from gateway.network import NetworkError, NotSent, OutcomeUnknown

PAN = "4242424242424242"
TRACK2 = "4242424242424242D28122011234567890"
PIN_BLOCK = "0123456789ABCDEF"


def _card_request() -> dict[str, str]:
    doc = examples.auth_request()
    doc.update({"2": PAN, "35": TRACK2, "52": PIN_BLOCK})
    return doc


def _secrets(doc: dict[str, str]) -> list[str]:
    return [doc["2"], doc["35"], doc["52"], doc["55"], PAN[:12], PAN[-12:]]


def test_outcome_unknown_names_the_request_by_match_key_only() -> None:
    """OutcomeUnknown keeps MTI, terminal and STAN of the request, nothing else."""
    doc = _card_request()
    exc = OutcomeUnknown.for_request("no response before the deadline", doc)
    assert isinstance(exc, NetworkError)
    assert (exc.mti, exc.terminal_id, exc.stan) == ("0100", "TERM0001", "000123")
    assert exc.match_key == ("TERM0001", "000123")
    for text in (str(exc), repr(exc)):
        assert "TERM0001" in text and "000123" in text
        for secret in _secrets(doc):
            assert secret not in text


def test_not_sent_text_has_no_card_data() -> None:
    """NotSent built from a card request shows no PAN, track, PIN block or chip data."""
    doc = _card_request()
    exc = NotSent.for_request("too many requests in flight", doc)
    assert isinstance(exc, NetworkError)
    for text in (str(exc), repr(exc), str(exc.args)):
        for secret in _secrets(doc):
            assert secret not in text


def test_a_pan_in_the_wrong_field_is_not_shown() -> None:
    """If a caller puts a PAN where the STAN or terminal belongs, the error drops it."""
    doc = {"t": "0100", "41": PAN, "11": PAN}
    exc = OutcomeUnknown.for_request("connection lost in flight", doc)
    assert exc.terminal_id is None and exc.stan is None
    assert PAN not in str(exc) and PAN not in repr(exc)


def test_errors_survive_pickling() -> None:
    """An error pickles with its type and match key (it may cross a process boundary)."""
    exc = OutcomeUnknown("connection lost in flight", mti="0100", terminal_id="TERM0001",
                         stan="000007")
    again = pickle.loads(pickle.dumps(exc))
    assert type(again) is OutcomeUnknown
    assert again.match_key == ("TERM0001", "000007") and again.reason == exc.reason
    assert str(again) == str(exc)
