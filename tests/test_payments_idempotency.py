"""Idempotency keys: key validation, request fingerprints, and claim / replay / refuse."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.payments import idempotency
from gateway.payments.errors import DomainError
from gateway.payments.idempotency import IdempotencyRecord, decide

NOW = 1_700_000_000_000
FP = idempotency.request_fingerprint("/paygate.v1.Payments/ConfirmPaymentIntent", b"\x0a\x01x")
OTHER_FP = idempotency.request_fingerprint("/paygate.v1.Payments/ConfirmPaymentIntent", b"y")


def record(state: str = "done", fingerprint: str = FP, created: int = NOW) -> IdempotencyRecord:
    claimed = idempotency.new_record("svc-orders", "key-1", fingerprint, created)
    if state == "done":
        return idempotency.complete(claimed, b"response", 0, b"", created + 5)
    return claimed


def refusal(existing: IdempotencyRecord | None, fingerprint: str, now: int) -> tuple[str, str]:
    with pytest.raises(DomainError) as exc:
        decide(existing, fingerprint, now)
    return exc.value.status, exc.value.reason


# -- keys ---------------------------------------------------------------------------------


ALL_PRINTABLE = "".join(map(chr, range(0x20, 0x7F)))


@pytest.mark.parametrize("key", ["a", "x" * 255, "order-42/retry 1", ALL_PRINTABLE])
def test_printable_ascii_keys_of_1_to_255_characters_are_valid(key: str) -> None:
    """Keys of 1 to 255 printable ASCII characters are accepted as they are."""
    assert idempotency.validate_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "line\nbreak", "tab\t", "caf\u00e9", "del\x7f",
                                 "nul\x00", None, b"bytes", 42])
def test_empty_long_non_printable_or_non_text_keys_are_invalid(key: object) -> None:
    """Empty, over-255, control, non-ASCII and non-str keys are INVALID_ARGUMENT
    idempotency_key_invalid."""
    with pytest.raises(DomainError) as exc:
        idempotency.validate_key(key)
    assert (exc.value.status, exc.value.reason) == ("INVALID_ARGUMENT", "idempotency_key_invalid")


def test_max_key_length_is_255() -> None:
    """MAX_KEY_LEN is 255 characters."""
    assert idempotency.MAX_KEY_LEN == 255


# -- fingerprints -------------------------------------------------------------------------


def test_fingerprint_is_sha256_of_method_nul_request() -> None:
    """The fingerprint is the SHA-256 hex digest of method, NUL, request bytes."""
    assert idempotency.request_fingerprint("M", b"body") == hashlib.sha256(
        b"M\x00body").hexdigest()


def test_fingerprint_separates_method_from_request() -> None:
    """Moving bytes between method and request changes the fingerprint."""
    assert (idempotency.request_fingerprint("ab", b"c")
            != idempotency.request_fingerprint("a", b"bc"))


def test_same_request_to_another_method_has_another_fingerprint() -> None:
    """The method is part of the fingerprint."""
    assert (idempotency.request_fingerprint("/p.v1.P/Capture", b"r")
            != idempotency.request_fingerprint("/p.v1.P/Cancel", b"r"))


# -- records ------------------------------------------------------------------------------


def test_retention_is_at_least_24_hours() -> None:
    """Records are kept at least 24 hours."""
    assert idempotency.RETENTION_MS >= 24 * 3600 * 1000


def test_new_record_is_in_progress_and_expires_after_retention() -> None:
    """A claim is in_progress, with no response, expiring RETENTION_MS after now."""
    claim = idempotency.new_record("scope", "k", FP, NOW)
    assert (claim.scope, claim.key, claim.fingerprint, claim.state) == (
        "scope", "k", FP, "in_progress")
    assert (claim.response, claim.code, claim.details) == (b"", 0, b"")
    assert (claim.created, claim.expires) == (NOW, NOW + idempotency.RETENTION_MS)


def test_complete_stores_the_response_and_extends_retention() -> None:
    """Completing keeps the claim's identity and stores response, code and details for at
    least RETENTION_MS from completion."""
    claim = idempotency.new_record("scope", "k", FP, NOW)
    done = idempotency.complete(claim, b"resp", 9, b"details", NOW + 60_000)
    assert (done.state, done.response, done.code, done.details) == ("done", b"resp", 9, b"details")
    assert (done.scope, done.key, done.fingerprint, done.created) == ("scope", "k", FP, NOW)
    assert done.expires == NOW + 60_000 + idempotency.RETENTION_MS


# -- decide -------------------------------------------------------------------------------


def test_no_record_is_claimed() -> None:
    """Without a stored record the request claims the key."""
    assert decide(None, FP, NOW) == "claim"


def test_same_request_after_completion_is_replayed() -> None:
    """A done record with the same fingerprint replays the stored response."""
    assert decide(record("done"), FP, NOW + 1000) == "replay"


@pytest.mark.parametrize("state", ["done", "in_progress"])
def test_other_request_with_the_same_key_is_refused(state: str) -> None:
    """Another fingerprint under a live key is INVALID_ARGUMENT idempotency_key_reused."""
    assert refusal(record(state), OTHER_FP, NOW + 1000) == (
        "INVALID_ARGUMENT", "idempotency_key_reused")


def test_same_request_while_in_progress_is_aborted() -> None:
    """The same request while the first is in progress is ABORTED idempotency_key_in_use."""
    assert refusal(record("in_progress"), FP, NOW + 1000) == ("ABORTED", "idempotency_key_in_use")


@pytest.mark.parametrize("state", ["done", "in_progress"])
@pytest.mark.parametrize("fingerprint", [FP, OTHER_FP])
def test_expired_record_counts_as_absent(state: str, fingerprint: str) -> None:
    """At or after its expiry a record is ignored: the request claims the key."""
    old = record(state)
    assert decide(old, fingerprint, old.expires) == "claim"
    assert decide(old, fingerprint, old.expires + 10**9) == "claim"


def test_record_is_live_until_its_expiry() -> None:
    """One millisecond before expiry the record still decides."""
    old = record("done")
    assert decide(old, FP, old.expires - 1) == "replay"


@given(stored=st.sampled_from(["done", "in_progress"]), same=st.booleans(),
       age=st.integers(0, 3 * idempotency.RETENTION_MS))
def test_decide_never_replays_another_request(stored: str, same: bool, age: int) -> None:
    """Whatever the record and time, a response is replayed only to the same request,
    only when done and live."""
    existing = record(stored)
    fingerprint = FP if same else OTHER_FP
    now = existing.created + age
    try:
        outcome = decide(existing, fingerprint, now)
    except DomainError:
        assert not existing.expired(now)
    else:
        if outcome == "replay":
            assert same and stored == "done" and not existing.expired(now)
        else:
            assert existing.expired(now)


def test_records_are_immutable() -> None:
    """An IdempotencyRecord cannot be changed in place."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        record().state = "in_progress"  # type: ignore[misc]
