"""Property tests: whatever bytes arrive as a JWE or as a decrypted card payload, the
intake answers with its own typed errors (never another exception), and never with
card data in the message."""

from __future__ import annotations

import json
import time
from typing import Any

import jwe_encoder
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway import jwe
from gateway.intake import IntakeError, IntakePolicy, check_card
from hsm_sim import SoftwareHsm

B64URL = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_",
                 max_size=60)
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=25),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12)


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftwareHsm:
    return SoftwareHsm(tmp_path_factory.mktemp("hsm"), environ={})


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.text(max_size=200), st.lists(B64URL, min_size=1, max_size=7).map(".".join)))
def test_any_string_is_parsed_or_refused_with_a_jwe_error(text: str) -> None:
    """jwe.parse raises only JweError subclasses, with stable codes, for arbitrary text."""
    try:
        jwe.parse(text, frozenset({"RSA-OAEP", "RSA-OAEP-256"}))
    except jwe.JweError as exc:
        assert exc.code in {"malformed_jwe", "unsupported_algorithm"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                   HealthCheck.function_scoped_fixture])
@given(header=st.dictionaries(st.sampled_from(["alg", "enc", "kid", "zip", "crit", "typ"]),
                              JSONISH, max_size=5),
       parts=st.lists(st.binary(max_size=300), min_size=4, max_size=4))
def test_any_well_formed_jwe_with_bad_contents_fails_cleanly(
        hsm: SoftwareHsm, header: dict[str, Any], parts: list[bytes]) -> None:
    """Arbitrary headers and part bytes give a JweError, never another exception."""
    compact = ".".join([jwe_encoder.b64u(json.dumps(header).encode())]
                       + [jwe_encoder.b64u(p) for p in parts])
    with pytest.raises(jwe.JweError):
        jwe.open_compact(hsm, jwe.parse(compact, hsm.jwe_algorithms))


@settings(max_examples=400, deadline=None)
@given(payload=JSONISH | st.dictionaries(
    st.sampled_from(["number", "exp_month", "exp_year", "cvc", "iat", "extra"]), JSONISH,
    max_size=6))
def test_any_payload_is_a_card_or_an_intake_error(payload: Any) -> None:
    """check_card either returns a card or raises IntakeError with a 4xx status whose
    message does not repeat the number."""
    try:
        card, _cvc = check_card(payload, time.time(), IntakePolicy())
    except IntakeError as exc:
        assert 400 <= exc.status < 500
        number = payload.get("number") if isinstance(payload, dict) else None
        if isinstance(number, str) and len(number) >= 6:
            assert number not in exc.message
    else:
        assert card.pan.isdigit()


@settings(max_examples=200, deadline=None)
@given(number=st.text(alphabet="0123456789", min_size=12, max_size=19),
       month=st.integers(-5, 20), year=st.integers(1990, 2110), cvc=st.text(max_size=6))
def test_card_checks_agree_with_their_rules(number: str, month: int, year: int,
                                            cvc: str) -> None:
    """A card passes only if it is Luhn-valid, branded, unexpired with a valid month,
    and its CVC has the brand's length."""
    from gateway.cards import brand_of, cvc_length, expired, luhn_ok
    payload = {"number": number, "exp_month": month, "exp_year": year, "cvc": cvc,
               "iat": int(time.time())}
    brand = brand_of(number)
    expected_ok = (luhn_ok(number) and brand is not None and 1 <= month <= 12
                   and 2000 <= year <= 2099 and not expired(month, year)
                   and cvc.isascii() and cvc.isdigit() and len(cvc) == cvc_length(brand))
    try:
        check_card(payload, time.time(), IntakePolicy())
    except IntakeError:
        assert not expected_ok
    else:
        assert expected_ok


def test_the_hsm_fixture_is_usable(hsm: SoftwareHsm) -> None:
    """The module's HSM opens a JWE the independent encoder made (the properties above
    would be vacuous otherwise)."""
    jwk = hsm.jwks()["keys"][0]
    compact = jwe_encoder.encrypt(b"{}", jwk)
    assert jwe.open_compact(hsm, jwe.parse(compact, hsm.jwe_algorithms)) == b"{}"
