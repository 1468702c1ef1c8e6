"""The HSM contract: every backend (software, PKCS#11 on SoftHSM2) behaves the same
through the ``Hsm`` interface, within the algorithms it declares."""

from __future__ import annotations

import base64
import itertools
import pickle
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import jwe_encoder
import pytest

from hsm_sim import DecryptError, Hsm, KeyNotFound, KeyStoreError, Sealed, UnsupportedAlgorithm
from hsm_sim.software import SoftwareHsm

_labels = itertools.count(1)


@dataclass
class Backend:
    """Opens (and reopens) one HSM on the same underlying storage."""

    name: str
    open: Callable[[], Hsm]


def _software(folder: Path) -> Backend:
    return Backend("software", lambda: SoftwareHsm(folder / "hsm", environ={}))


def _pkcs11(folder: Path) -> Backend:
    from softhsm import make_token

    from hsm_sim.pkcs11 import Pkcs11Hsm

    token = make_token(folder, f"contract-{next(_labels)}")
    return Backend("pkcs11", lambda: Pkcs11Hsm(token.module, token.label, token.pin))


FACTORIES = {"software": _software, "pkcs11": _pkcs11}


@pytest.fixture(params=sorted(FACTORIES))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each backend in turn, on fresh storage."""
    factory: Callable[[Path], Backend] = FACTORIES[request.param]
    return factory(tmp_path)


@pytest.fixture
def hsm(backend: Backend) -> Iterator[Hsm]:
    opened = backend.open()
    yield opened
    opened.close()


def split(compact: str) -> tuple[str, bytes, bytes, bytes, bytes, bytes]:
    """(kid, encrypted_key, iv, ciphertext, tag, aad) of a compact JWE."""
    parts = compact.split(".")

    def dec(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    import json
    kid = json.loads(dec(parts[0]))["kid"]
    return (kid, dec(parts[1]), dec(parts[2]), dec(parts[3]), dec(parts[4]),
            parts[0].encode("ascii"))


def open_with(hsm: Hsm, compact: str, alg: str) -> bytes:
    kid, key, iv, ct, tag, aad = split(compact)
    return hsm.open_jwe(kid, alg, key, iv, ct, tag, aad)


def test_the_jwks_publishes_public_rsa_encryption_keys_only(hsm: Hsm) -> None:
    """Every JWK has kty RSA, a kid, use enc, an alg the backend opens, and no private part."""
    keys = hsm.jwks()["keys"]
    assert keys
    for jwk in keys:
        assert jwk["kty"] == "RSA" and jwk["use"] == "enc" and jwk["kid"]
        assert jwk["alg"] in hsm.jwe_algorithms
        assert not {"d", "p", "q", "dp", "dq", "qi"} & jwk.keys()
        assert jwe_encoder.public_key(jwk).key_size == 2048


@pytest.mark.parametrize("alg", ["RSA-OAEP", "RSA-OAEP-256"])
def test_open_jwe_decrypts_what_an_independent_encoder_made(hsm: Hsm, alg: str) -> None:
    """A JWE built with `cryptography` opens for each alg the backend declares; others
    raise UnsupportedAlgorithm."""
    jwk = hsm.jwks()["keys"][0]
    compact = jwe_encoder.encrypt(b'{"hello": "card"}', jwk, alg=alg)
    if alg in hsm.jwe_algorithms:
        assert open_with(hsm, compact, alg) == b'{"hello": "card"}'
    else:
        with pytest.raises(UnsupportedAlgorithm):
            open_with(hsm, compact, alg)


def test_an_alg_outside_rsa_oaep_is_unsupported(hsm: Hsm) -> None:
    """RSA1_5 (or anything else) is refused as unsupported, not attempted."""
    jwk = hsm.jwks()["keys"][0]
    compact = jwe_encoder.encrypt(b"x", jwk, alg=jwk["alg"])
    with pytest.raises(UnsupportedAlgorithm):
        open_with(hsm, compact, "RSA1_5")


@pytest.mark.parametrize("part", ["encrypted_key", "iv", "ciphertext", "tag", "aad"])
def test_any_tampered_part_fails_with_the_one_opaque_error(hsm: Hsm, part: str) -> None:
    """Flipping a bit anywhere raises DecryptError('decryption failed'), nothing more."""
    jwk = hsm.jwks()["keys"][0]
    alg = jwk["alg"]
    kid, key, iv, ct, tag, aad = split(jwe_encoder.encrypt(b"secret 4242424242424242", jwk))
    fields = {"encrypted_key": key, "iv": iv, "ciphertext": ct, "tag": tag, "aad": aad}
    flipped = bytearray(fields[part])
    flipped[len(flipped) // 2] ^= 0x01
    fields[part] = bytes(flipped)
    with pytest.raises(DecryptError) as info:
        hsm.open_jwe(kid, alg, fields["encrypted_key"], fields["iv"], fields["ciphertext"],
                     fields["tag"], fields["aad"])
    assert str(info.value) == "decryption failed"
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_an_unknown_kid_is_key_not_found(hsm: Hsm) -> None:
    """A kid the HSM never issued raises KeyNotFound."""
    jwk = dict(hsm.jwks()["keys"][0])
    _kid, key, iv, ct, tag, aad = split(jwe_encoder.encrypt(b"x", jwk))
    with pytest.raises(KeyNotFound):
        hsm.open_jwe("no-such-kid", jwk["alg"], key, iv, ct, tag, aad)


def test_seal_and_unseal_round_trip_with_fresh_nonces(hsm: Hsm) -> None:
    """Sealing the same data twice gives different blobs that both unseal; the blob does
    not contain the plaintext."""
    pan = b"4242424242424242"
    first, second = hsm.seal(pan, b"aad"), hsm.seal(pan, b"aad")
    assert first.blob != second.blob and first.key_version == second.key_version
    assert pan not in first.blob
    assert len(first.blob) == 12 + len(pan) + 16
    assert hsm.unseal(first, b"aad") == pan == hsm.unseal(second, b"aad")


def test_unseal_refuses_other_aad_and_tampered_blobs(hsm: Hsm) -> None:
    """A sealed blob opens only with its own additional data and unmodified bytes."""
    sealed = hsm.seal(b"4242424242424242", b"pan:acme:tok")
    with pytest.raises(DecryptError):
        hsm.unseal(sealed, b"pan:globex:tok")
    for index in (0, 12, len(sealed.blob) - 1):
        blob = bytearray(sealed.blob)
        blob[index] ^= 0x80
        with pytest.raises(DecryptError):
            hsm.unseal(Sealed(sealed.key_version, bytes(blob)), b"pan:acme:tok")
    with pytest.raises(DecryptError):
        hsm.unseal(Sealed(sealed.key_version, sealed.blob[:10]), b"pan:acme:tok")
    with pytest.raises(KeyNotFound):
        hsm.unseal(Sealed(sealed.key_version + 99, sealed.blob), b"pan:acme:tok")


def test_fingerprint_is_keyed_stable_and_distinct(hsm: Hsm) -> None:
    """The same input gives the same 32 bytes; other inputs differ; it is not a bare hash."""
    import hashlib
    a = hsm.fingerprint(b"4242424242424242")
    assert len(a) == 32 and a == hsm.fingerprint(b"4242424242424242")
    assert a != hsm.fingerprint(b"4000000000000002")
    assert a != hashlib.sha256(b"4242424242424242").digest()


def test_random_returns_the_requested_number_of_unpredictable_bytes(hsm: Hsm) -> None:
    """random(n) gives n bytes, and two draws differ."""
    assert len(hsm.random(0)) == 0
    first, second = hsm.random(32), hsm.random(32)
    assert len(first) == 32 and first != second


def test_a_rotated_jwe_key_leads_and_the_old_one_decrypts_until_retired(hsm: Hsm) -> None:
    """After rotation the new kid is first in the JWKS, the old kid still opens its JWEs,
    and after retirement the old kid is gone and refused."""
    old = hsm.jwks()["keys"][0]
    pending = jwe_encoder.encrypt(b"before rotation", old)
    new_kid = hsm.rotate_jwe_key()
    kids = [k["kid"] for k in hsm.jwks()["keys"]]
    assert kids[0] == new_kid and old["kid"] in kids
    assert open_with(hsm, pending, old["alg"]) == b"before rotation"
    fresh = jwe_encoder.encrypt(b"after rotation", hsm.jwks()["keys"][0])
    assert open_with(hsm, fresh, old["alg"]) == b"after rotation"
    with pytest.raises(KeyStoreError):
        hsm.retire_jwe_key(new_kid)
    hsm.retire_jwe_key(old["kid"])
    assert old["kid"] not in [k["kid"] for k in hsm.jwks()["keys"]]
    with pytest.raises(KeyNotFound):
        open_with(hsm, pending, old["alg"])
    statuses = {k.key_id: k.status for k in hsm.keys()  # noqa: SIM118
                if k.kind == "jwe"}
    assert statuses == {old["kid"]: "retired", new_kid: "active"}


def test_a_rotated_dek_seals_new_data_and_old_blobs_open_until_retired(hsm: Hsm) -> None:
    """Rotation makes a new DEK version active; older versions unseal until retired."""
    old = hsm.seal(b"old data", b"a")
    version = hsm.rotate_dek()
    assert version == old.key_version + 1
    new = hsm.seal(b"new data", b"a")
    assert new.key_version == version
    assert hsm.unseal(old, b"a") == b"old data"
    with pytest.raises(KeyStoreError):
        hsm.retire_dek(version)
    hsm.retire_dek(old.key_version)
    with pytest.raises(KeyNotFound):
        hsm.unseal(old, b"a")
    assert hsm.unseal(new, b"a") == b"new data"
    assert hsm.health().active_dek == version


def test_keys_and_health_describe_without_material(hsm: Hsm) -> None:
    """keys() lists one active JWE key and one active DEK; health() passes its self-test."""
    infos = hsm.keys()
    active = [(k.kind, k.status) for k in infos if k.status == "active"]
    assert sorted(active) == [("dek", "active"), ("jwe", "active")]
    health = hsm.health()
    assert health.ok and health.backend == hsm.backend
    assert health.active_kid == hsm.jwks()["keys"][0]["kid"]
    assert health.algorithms == hsm.jwe_algorithms
    assert len(repr(hsm)) < 200


def test_keys_survive_a_restart(backend: Backend) -> None:
    """A second instance on the same storage opens JWEs and blobs made by the first."""
    first = backend.open()
    jwk = first.jwks()["keys"][0]
    compact = jwe_encoder.encrypt(b"persisted", jwk)
    sealed = first.seal(b"vault data", b"aad")
    print_ = first.fingerprint(b"4242424242424242")
    first.close()
    second = backend.open()
    try:
        assert second.jwks()["keys"][0]["kid"] == jwk["kid"]
        assert open_with(second, compact, jwk["alg"]) == b"persisted"
        assert second.unseal(sealed, b"aad") == b"vault data"
        assert second.fingerprint(b"4242424242424242") == print_
    finally:
        second.close()


def test_concurrent_callers_get_correct_answers(hsm: Hsm) -> None:
    """Eight threads sealing, unsealing, fingerprinting and opening JWEs at once all
    get the right results (backends serialise what they must)."""
    jwk = hsm.jwks()["keys"][0]
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(15):
                data = f"{n}-{i}".encode()
                assert hsm.unseal(hsm.seal(data, b"t"), b"t") == data
                assert hsm.fingerprint(data) == hsm.fingerprint(data)
                if i % 5 == 0:
                    assert open_with(hsm, jwe_encoder.encrypt(data, jwk), jwk["alg"]) == data
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_errors_pickle_and_say_nothing_about_data(hsm: Hsm) -> None:
    """DecryptError and KeyNotFound survive pickling with their safe messages."""
    sealed = hsm.seal(b"4242424242424242", b"a")
    with pytest.raises(DecryptError) as info:
        hsm.unseal(sealed, b"b")
    again = pickle.loads(pickle.dumps(info.value))
    assert isinstance(again, DecryptError) and str(again) == "decryption failed"
    missing = pickle.loads(pickle.dumps(KeyNotFound("dek", 7)))
    assert missing.key_id == 7 and "4242" not in str(missing)
