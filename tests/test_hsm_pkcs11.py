"""The PKCS#11 backend against a real SoftHSM2 token: what only a token can show (key
attributes, mechanisms SoftHSM lacks, persistence, the lock, login errors).

The behaviour both backends share is in the contract suite; tokens come from
``tests/softhsm.py``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pkcs11
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pkcs11 import Attribute, ObjectClass
from pkcs11.exceptions import AttributeSensitive
from softhsm import SoftHsmToken, make_token, require_softhsm

from hsm_sim import DecryptError, HsmError, KeyNotFound, KeyStoreError, UnsupportedAlgorithm
from hsm_sim.interface import Hsm, Sealed
from hsm_sim.jwk import public_key_from_jwk
from hsm_sim.pkcs11 import FINGERPRINT_LABEL, KEK_LABEL, KEYRING_LABEL, Pkcs11Hsm, dek_label

Jwe = tuple[bytes, bytes, bytes, bytes, bytes]


@pytest.fixture(scope="session")
def softhsm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SoftHSM configuration and token directory for the whole session."""
    require_softhsm()
    return tmp_path_factory.mktemp("softhsm")


@pytest.fixture
def token(softhsm_dir: Path) -> SoftHsmToken:
    """A fresh, empty token for one test."""
    return make_token(softhsm_dir, "pkcs11-test")


@pytest.fixture
def hsm(token: SoftHsmToken) -> Iterator[Pkcs11Hsm]:
    """A Pkcs11Hsm on a fresh token (keys generated on first use), closed afterwards."""
    backend = Pkcs11Hsm(token.module, token.label, token.pin)
    yield backend
    backend.close()


def make_jwe(jwk: dict[str, Any], plaintext: bytes, *, cek_len: int = 32,
             digest: hashes.HashAlgorithm | None = None, aad: bytes = b"header") -> Jwe:
    """JWE parts (encrypted_key, iv, ciphertext, tag, aad) made with ``cryptography``."""
    digest = digest or hashes.SHA1()
    cek = os.urandom(cek_len)
    encrypted_key = public_key_from_jwk(jwk).encrypt(
        cek, padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None))
    iv = os.urandom(12)
    sealed = AESGCM(cek).encrypt(iv, plaintext, aad)
    return encrypted_key, iv, sealed[:-16], sealed[-16:], aad


def token_objects(token: SoftHsmToken, object_class: ObjectClass) -> list[Any]:
    """Attributes of the token's objects of one class (opens its own logged-in session)."""
    found: list[Any] = []
    lib = pkcs11.lib(token.module)
    with lib.get_token(token_label=token.label).open(user_pin=token.pin) as session:
        for obj in session.get_objects({Attribute.CLASS: object_class}):
            attrs: dict[str, Any] = {"label": obj[Attribute.LABEL]}
            if object_class is ObjectClass.DATA:
                attrs["value"] = bytes(obj[Attribute.VALUE])
            else:
                for name in ("TOKEN", "PRIVATE", "SENSITIVE", "EXTRACTABLE",
                             "ALWAYS_SENSITIVE", "NEVER_EXTRACTABLE"):
                    attrs[name] = obj[getattr(Attribute, name)]
                secret = (Attribute.PRIVATE_EXPONENT if object_class is ObjectClass.PRIVATE_KEY
                          else Attribute.VALUE)
                try:
                    obj[secret]
                    attrs["readable"] = True
                except AttributeSensitive:
                    attrs["readable"] = False
            found.append(attrs)
    return found


def test_backend_satisfies_the_protocol(hsm: Pkcs11Hsm) -> None:
    """Pkcs11Hsm is an Hsm, names itself pkcs11 and only offers RSA-OAEP."""
    assert isinstance(hsm, Hsm)
    assert hsm.backend == "pkcs11"
    assert hsm.jwe_algorithms == frozenset({"RSA-OAEP"})
    assert [key["alg"] for key in hsm.jwks()["keys"]] == ["RSA-OAEP"]


def test_private_keys_and_kek_are_sensitive_and_not_extractable(token: SoftHsmToken) -> None:
    """The RSA private key, KEK and HMAC key are token keys that refuse to show their value."""
    Pkcs11Hsm(token.module, token.label, token.pin).close()
    private = token_objects(token, ObjectClass.PRIVATE_KEY)
    secret = token_objects(token, ObjectClass.SECRET_KEY)
    assert len(private) == 1 and private[0]["label"].startswith("paygate-jwe-")
    assert sorted(key["label"] for key in secret) == sorted([KEK_LABEL, FINGERPRINT_LABEL])
    for key in private + secret:
        assert key["TOKEN"] and key["PRIVATE"], key["label"]
        assert key["SENSITIVE"] and key["ALWAYS_SENSITIVE"], key["label"]
        assert not key["EXTRACTABLE"] and key["NEVER_EXTRACTABLE"], key["label"]
        assert key["readable"] is False, key["label"]


def test_deks_are_stored_only_wrapped(token: SoftHsmToken) -> None:
    """DEKs live on the token as 40-byte AES-KW blobs beside the keyring, not as keys."""
    backend = Pkcs11Hsm(token.module, token.label, token.pin)
    backend.rotate_dek()
    backend.close()
    data = {obj["label"]: obj["value"] for obj in token_objects(token, ObjectClass.DATA)}
    assert set(data) == {KEYRING_LABEL, dek_label(1), dek_label(2)}
    assert len(data[dek_label(1)]) == len(data[dek_label(2)]) == 40
    assert data[dek_label(1)] != data[dek_label(2)]
    assert b'"active_dek": 2' in data[KEYRING_LABEL]


def test_rsa_oaep_256_is_unsupported(hsm: Pkcs11Hsm) -> None:
    """RSA-OAEP-256 (which SoftHSM 2.6.1 cannot do) raises UnsupportedAlgorithm."""
    jwk = hsm.jwks()["keys"][0]
    parts = make_jwe(jwk, b"card", digest=hashes.SHA256())
    with pytest.raises(UnsupportedAlgorithm) as caught:
        hsm.open_jwe(jwk["kid"], "RSA-OAEP-256", *parts)
    assert caught.value.alg == "RSA-OAEP-256" and caught.value.backend == "pkcs11"


def test_sha1_oaep_jwe_opens(hsm: Pkcs11Hsm) -> None:
    """A CEK encrypted with cryptography's RSA-OAEP (SHA-1) to the JWKS key opens."""
    jwk = hsm.jwks()["keys"][0]
    assert hsm.open_jwe(jwk["kid"], "RSA-OAEP", *make_jwe(jwk, b"4242")) == b"4242"
    assert hsm.open_jwe(jwk["kid"], "RSA-OAEP", *make_jwe(jwk, b"")) == b""


@pytest.mark.parametrize("damage", ["tag", "aad", "encrypted_key", "cek16", "cek24", "iv"])
def test_bad_jwe_is_a_bare_decrypt_error(hsm: Pkcs11Hsm, damage: str) -> None:
    """Tampering, a wrong-length CEK or IV all give DecryptError with no chained cause."""
    jwk = hsm.jwks()["keys"][0]
    cek_len = {"cek16": 16, "cek24": 24}.get(damage, 32)
    key, iv, ciphertext, tag, aad = make_jwe(jwk, b"card data", cek_len=cek_len)
    if damage == "tag":
        tag = tag[:-1] + bytes([tag[-1] ^ 1])
    elif damage == "aad":
        aad += b"x"
    elif damage == "encrypted_key":
        key = key[:-1] + bytes([key[-1] ^ 1])
    elif damage == "iv":
        iv = iv[:8]
    with pytest.raises(DecryptError) as caught:
        hsm.open_jwe(jwk["kid"], "RSA-OAEP", key, iv, ciphertext, tag, aad)
    assert str(caught.value) == "decryption failed"
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__


def test_keys_persist_across_reopen(token: SoftHsmToken) -> None:
    """A new Pkcs11Hsm on the same token finds every key, status and DEK version."""
    first = Pkcs11Hsm(token.module, token.label, token.pin)
    old_jwk = first.jwks()["keys"][0]
    sealed_v1 = first.seal(b"pan one", b"aad")
    first.rotate_dek()
    sealed_v2 = first.seal(b"pan two", b"aad")
    first.rotate_jwe_key()
    jwks, keys, mark = first.jwks(), first.keys(), first.fingerprint(b"4242")
    first.close()

    second = Pkcs11Hsm(token.module, token.label, token.pin)
    assert second.jwks() == jwks and len(jwks["keys"]) == 2
    assert second.keys() == keys
    assert second.fingerprint(b"4242") == mark
    assert second.unseal(sealed_v1, b"aad") == b"pan one"
    assert second.unseal(sealed_v2, b"aad") == b"pan two"
    assert second.open_jwe(old_jwk["kid"], "RSA-OAEP", *make_jwe(old_jwk, b"old")) == b"old"
    second.retire_dek(1)
    second.retire_jwe_key(old_jwk["kid"])
    second.close()

    third = Pkcs11Hsm(token.module, token.label, token.pin)
    with pytest.raises(KeyNotFound):
        third.unseal(sealed_v1, b"aad")
    with pytest.raises(KeyNotFound):
        third.open_jwe(old_jwk["kid"], "RSA-OAEP", *make_jwe(old_jwk, b"old"))
    assert third.unseal(sealed_v2, b"aad") == b"pan two"
    assert [key["kid"] for key in third.jwks()["keys"]] == [jwks["keys"][0]["kid"]]
    third.close()


def test_two_open_instances_share_the_token(token: SoftHsmToken) -> None:
    """Two live instances on one token see each other's rotations, and closing one
    leaves the other logged in."""
    one = Pkcs11Hsm(token.module, token.label, token.pin)
    two = Pkcs11Hsm(token.module, token.label, token.pin)
    kid = one.rotate_jwe_key()
    version = one.rotate_dek()
    jwk = one.jwks()["keys"][0]
    assert jwk["kid"] == kid
    one.close()
    assert two.open_jwe(kid, "RSA-OAEP", *make_jwe(jwk, b"new key")) == b"new key"
    assert two.jwks()["keys"][0]["kid"] == kid
    sealed = two.seal(b"x", b"")
    assert sealed.key_version == version and len(sealed.blob) == 12 + 1 + 16
    assert two.unseal(sealed, b"") == b"x"
    assert two.health().ok and two.health().active_dek == version
    two.close()


def test_eight_threads_get_correct_results(hsm: Pkcs11Hsm) -> None:
    """Eight threads hammering seal/unseal/fingerprint/open_jwe all get the right answers."""
    jwk = hsm.jwks()["keys"][0]
    jwes = [(f"card {i}".encode(), make_jwe(jwk, f"card {i}".encode())) for i in range(8)]
    marks = {i: hsm.fingerprint(b"%d" % i) for i in range(8)}
    failures: list[str] = []
    start = threading.Barrier(8)

    def worker(n: int) -> None:
        try:
            start.wait()
            for i in range(25):
                data = os.urandom(n + i)
                if hsm.unseal(hsm.seal(data, b"t%d" % n), b"t%d" % n) != data:
                    failures.append(f"thread {n}: unseal mismatch")
                if hsm.fingerprint(b"%d" % ((n + i) % 8)) != marks[(n + i) % 8]:
                    failures.append(f"thread {n}: fingerprint mismatch")
                plaintext, parts = jwes[(n + i) % 8]
                if hsm.open_jwe(jwk["kid"], "RSA-OAEP", *parts) != plaintext:
                    failures.append(f"thread {n}: JWE mismatch")
                if len(hsm.random(16)) != 16:
                    failures.append(f"thread {n}: random length")
        except Exception as exc:
            failures.append(f"thread {n}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


@pytest.mark.parametrize("already_open", [False, True], ids=["first-login", "shared-login"])
def test_wrong_pin_is_a_clear_key_store_error(token: SoftHsmToken, already_open: bool) -> None:
    """A wrong PIN raises KeyStoreError that names the token but not either PIN."""
    other = Pkcs11Hsm(token.module, token.label, token.pin) if already_open else None
    wrong = "9" + token.pin[1:] if token.pin[0] != "9" else "8" + token.pin[1:]
    with pytest.raises(KeyStoreError) as caught:
        Pkcs11Hsm(token.module, token.label, wrong)
    message = str(caught.value)
    assert "incorrect PIN" in message and token.label in message
    assert wrong not in message and token.pin not in message
    assert caught.value.__cause__ is None
    if other is not None:
        other.close()
    good = Pkcs11Hsm(token.module, token.label, token.pin)
    assert good.health().ok
    good.close()


def test_unknown_token_label_is_a_clear_error(token: SoftHsmToken) -> None:
    """A label no token carries raises KeyStoreError naming that label."""
    with pytest.raises(KeyStoreError, match="no PKCS#11 token labelled 'no-such-token'"):
        Pkcs11Hsm(token.module, "no-such-token", token.pin)


def test_missing_module_is_a_clear_error(tmp_path: Path) -> None:
    """A PKCS#11 module path that does not exist raises KeyStoreError naming it."""
    missing = tmp_path / "libnothing.so"
    with pytest.raises(KeyStoreError, match="cannot load the PKCS#11 module"):
        Pkcs11Hsm(missing, "paygate", "1234")


def test_repr_and_errors_show_no_secrets(hsm: Pkcs11Hsm, token: SoftHsmToken) -> None:
    """The repr shows the label only; sealed blobs and PINs appear nowhere."""
    assert repr(hsm) == f"Pkcs11Hsm(token_label={token.label!r})"
    sealed = hsm.seal(b"4111111111111111", b"")
    assert "4111" not in repr(sealed) and sealed.blob.hex() not in repr(sealed)
    with pytest.raises(DecryptError) as caught:
        hsm.unseal(Sealed(sealed.key_version, sealed.blob[:-1] + b"\0"), b"")
    assert str(caught.value) == "decryption failed"


def test_random_comes_from_the_token(hsm: Pkcs11Hsm) -> None:
    """random(n) returns n bytes, differing call to call, and refuses negative n."""
    assert hsm.random(0) == b""
    draws = {hsm.random(32) for _ in range(4)}
    assert len(draws) == 4 and all(len(d) == 32 for d in draws)
    with pytest.raises(ValueError):
        hsm.random(-1)


def test_closed_backend_refuses_work(token: SoftHsmToken) -> None:
    """After close() health is not ok and operations raise HsmError; close is idempotent."""
    backend = Pkcs11Hsm(token.module, token.label, token.pin)
    assert backend.health().ok
    backend.close()
    backend.close()
    assert not backend.health().ok
    with pytest.raises(HsmError, match="closed"):
        backend.seal(b"x", b"")


def test_tokens_made_after_the_library_loaded_are_usable(softhsm_dir: Path,
                                                         hsm: Pkcs11Hsm) -> None:
    """make_token works once SoftHSM is initialised, and the older token keeps working."""
    before = hsm.fingerprint(b"x")
    late = make_token(softhsm_dir, "late-token")
    backend = Pkcs11Hsm(late.module, late.label, late.pin)
    assert backend.health().ok
    assert backend.fingerprint(b"x") != before
    backend.close()
    assert hsm.fingerprint(b"x") == before
