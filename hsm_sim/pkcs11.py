"""The PKCS#11 HSM backend, built on python-pkcs11 and tested against SoftHSM2 2.6.1.

Objects on the token (all ``CKA_TOKEN`` and, but for public keys, ``CKA_PRIVATE``:
only a logged-in user sees them; secret and private keys are ``CKA_SENSITIVE``
and not ``CKA_EXTRACTABLE``):

* ``paygate-jwe-<kid>`` (``CKA_ID`` = kid): an RSA-2048 key pair per JWE key;
  the private key may only ``DECRYPT`` / ``UNWRAP``.
* ``paygate-kek``: the AES-256 KEK (``WRAP`` / ``UNWRAP`` only).
* ``paygate-fingerprint``: a 256-bit generic secret for ``CKM_SHA256_HMAC``.
* ``paygate-dek-v<N>``: a ``CKO_DATA`` object holding DEK version N wrapped by
  the KEK (``CKM_AES_KEY_WRAP``, RFC 3394). A DEK is generated as a session
  key, extractable only so that it can be wrapped, wrapped, and destroyed. On
  start each live DEK is unwrapped into a session key that is sensitive and
  not extractable, and seals/unseals with ``CKM_AES_GCM`` on the token.
* ``paygate-keyring``: a ``CKO_DATA`` object, JSON: kids, DEK versions, their
  status and creation time, the active ones, and a generation counter.
  SoftHSM refuses to change ``CKA_VALUE`` of a data object
  (``CKR_ATTRIBUTE_READ_ONLY``), so a change writes a new object with the next
  generation and then destroys the old one; on load the highest generation wins
  (the format and its status changes: :mod:`hsm_sim.pkcs11_keyring`).

Generating keys happens on the first start, when the token has no keyring. If
it holds a ``paygate-kek`` or ``paygate-fingerprint`` key but no keyring, the
backend refuses to start rather than generate keys over them.

JWE (what SoftHSM 2.6.1 can and cannot do):

* ``CKM_RSA_PKCS_OAEP`` works with SHA-1 / MGF1-SHA1 only; any other hash is
  refused with ``CKR_ARGUMENTS_BAD``. So ``jwe_algorithms`` is ``{"RSA-OAEP"}``,
  the JWKS advertises ``RSA-OAEP`` and ``RSA-OAEP-256`` raises
  :class:`~hsm_sim.interface.UnsupportedAlgorithm`.
* The CEK never leaves the token: ``C_UnwrapKey`` (RSA-OAEP) makes a session
  AES key, ``CKM_AES_GCM`` decrypts with it on the token, and it is destroyed.
  One deviation: SoftHSM unwraps a secret of any length as an "AES key", does
  not set ``CKA_VALUE_LEN`` (it reads 0) and refuses it in the unwrap template,
  and then runs AES-128/192-GCM for 16/24-byte keys. A256GCM needs exactly 32
  bytes, so the CEK is unwrapped sensitive but extractable, wrapped once under
  a session-only probe key (sensitive, never extractable; the 40-byte output
  proves a 32-byte key and is discarded), then ``CKA_EXTRACTABLE`` is set to
  false (a one-way change) before it decrypts anything.

Every decryption failure (padding, length, tag, any PKCS#11 error about the
data) becomes :class:`~hsm_sim.interface.DecryptError`, raised ``from None``.

Concurrency: SoftHSM 2.6.1 crashes when python-pkcs11 drives sessions from
several threads at once. So every call into any token goes through one
process-wide :data:`_LOCK`, on one long-lived logged-in read/write session per
token opened by the constructor. Instances on the same token share that session
(counted; the last ``close()`` closes it and logs out, as PKCS#11 login is per
application and token). Safe from any number of threads; serial on the token.
``jwks()``, ``keys()``, key changes and lookups of an unknown kid or DEK
version re-read the keyring, and ``seal`` / ``health`` do at most once a second,
so instances on one token, in this process or another, stay in step.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, cast

import pkcs11
from pkcs11 import MGF, Attribute, GCMParams, KeyType, Mechanism, MechanismFlag, ObjectClass
from pkcs11.exceptions import PKCS11Error

from hsm_sim.interface import (
    JWE_ENC,
    NONCE_LEN,
    RSA_BITS,
    TAG_LEN,
    DecryptError,
    Health,
    HsmError,
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    Sealed,
    UnsupportedAlgorithm,
)
from hsm_sim.jwk import rsa_jwk_from_numbers
from hsm_sim.pkcs11_keyring import Ring, activate, retire

JWE_ALG: Final = "RSA-OAEP"
KEYRING_LABEL: Final = "paygate-keyring"
KEK_LABEL: Final = "paygate-kek"
FINGERPRINT_LABEL: Final = "paygate-fingerprint"
APPLICATION: Final = "paygate"
_CEK_LEN: Final = 32
_OAEP_SHA1: Final = (Mechanism.SHA_1, MGF.SHA1, None)
_KW_OVERHEAD: Final = 8                     # RFC 3394 adds one 64-bit block
_RESYNC_SECONDS: Final = 1.0

#: The one lock around every call into a token (SoftHSM is not thread-safe here).
_LOCK: Final = threading.Lock()
_T = TypeVar("_T")


class _P11Key(Protocol):
    """The part of python-pkcs11's key objects this module uses."""

    def __getitem__(self, key: Attribute) -> Any: ...
    def __setitem__(self, key: Attribute, value: Any) -> None: ...
    def destroy(self) -> None: ...
    def encrypt(self, data: bytes, **kwargs: Any) -> bytes: ...
    def decrypt(self, data: bytes, **kwargs: Any) -> bytes: ...
    def sign(self, data: bytes, **kwargs: Any) -> bytes: ...
    def wrap_key(self, key: Any, **kwargs: Any) -> bytes: ...
    def unwrap_key(self, object_class: ObjectClass, key_type: KeyType, key_data: bytes,
                   **kwargs: Any) -> Any: ...


def jwe_label(kid: str) -> str:
    """The label of a JWE key pair on the token."""
    return f"paygate-jwe-{kid}"


def dek_label(version: int) -> str:
    """The label of the data object holding wrapped DEK ``version``."""
    return f"paygate-dek-v{version}"


def _session_template(*, extractable: bool = False) -> dict[Attribute, Any]:
    """A session (not token) secret: private, sensitive, extractable only if asked."""
    return {Attribute.TOKEN: False, Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: extractable}


_TOKEN_SECRET: Final = {Attribute.PRIVATE: True, Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False}


@dataclass
class _JweKey:
    private: _P11Key
    n: int
    e: int


@dataclass
class _Login:
    """One logged-in session on one token, shared by the instances that opened it."""

    session: pkcs11.Session
    pin_digest: bytes = field(repr=False)
    refs: int = 1


_LOGINS: dict[tuple[str, bytes], _Login] = {}


def _pin_digest(pin: str) -> bytes:
    return hashlib.sha256(b"paygate pkcs11 pin\0" + pin.encode()).digest()


def _login(module: str, label: str, pin: str) -> tuple[tuple[str, bytes], _Login]:
    """The shared logged-in session on token ``label`` (call with :data:`_LOCK` held)."""
    try:
        lib = pkcs11.lib(module)
    except (PKCS11Error, OSError) as exc:
        raise KeyStoreError(f"cannot load the PKCS#11 module {module}: {exc}") from None
    try:
        token = lib.get_token(token_label=label)
    except pkcs11.NoSuchToken:
        raise KeyStoreError(f"no PKCS#11 token labelled {label!r} in {module}") from None
    except pkcs11.MultipleTokensReturned:
        raise KeyStoreError(f"more than one PKCS#11 token labelled {label!r}") from None
    except PKCS11Error as exc:
        raise KeyStoreError(f"cannot list the tokens of {module}: {type(exc).__name__}") from None
    key = (module, bytes(token.serial))
    digest = _pin_digest(pin)
    shared = _LOGINS.get(key)
    if shared is not None:
        if not hmac.compare_digest(shared.pin_digest, digest):
            raise KeyStoreError(f"login to PKCS#11 token {label!r} failed: incorrect PIN")
        shared.refs += 1
        return key, shared
    try:
        session = token.open(rw=True, user_pin=pin)
    except (pkcs11.PinIncorrect, pkcs11.PinLocked) as exc:
        why = "incorrect PIN" if isinstance(exc, pkcs11.PinIncorrect) else "PIN locked"
        raise KeyStoreError(f"login to PKCS#11 token {label!r} failed: {why}") from None
    except PKCS11Error as exc:
        raise KeyStoreError(f"cannot log in to PKCS#11 token {label!r}: "
                            f"{type(exc).__name__}") from None
    shared = _LOGINS[key] = _Login(session, digest)
    return key, shared


def _logout(key: tuple[str, bytes]) -> None:
    """Drop one reference to a shared session; the last one closes it (lock held)."""
    shared = _LOGINS.get(key)
    if shared is None:
        return
    shared.refs -= 1
    if shared.refs <= 0:
        del _LOGINS[key]
        with suppress(PKCS11Error):
            shared.session.close()


class Pkcs11Hsm:
    """The HSM on a PKCS#11 token. Thread-safe: every token call takes :data:`_LOCK`."""

    backend = "pkcs11"
    jwe_algorithms: frozenset[str] = frozenset({JWE_ALG})
    _kek: _P11Key               # the KEK (token)
    _fp: _P11Key                # the fingerprint HMAC key (token)

    def __init__(self, module: str | Path, token_label: str, pin: str) -> None:
        self._label = token_label
        self._module = os.path.realpath(os.fspath(module))
        self._closed = True
        self._ring = Ring()
        self._jwe: dict[str, _JweKey] = {}          # live (not retired) JWE keys
        self._deks: dict[int, _P11Key] = {}         # live DEKs, as session keys
        self._probe: _P11Key | None = None          # session key that only measures CEKs
        self._synced = 0.0                          # time.monotonic() of the last _sync
        with _LOCK:
            self._login_key, login = _login(self._module, token_label, pin)
            self._session = login.session
            self._closed = False
            try:
                self._start()
            except PKCS11Error as exc:
                self._release()
                raise KeyStoreError(f"cannot start on PKCS#11 token {token_label!r}: "
                                    f"{type(exc).__name__}") from None
            except BaseException:
                self._release()
                raise

    def __repr__(self) -> str:
        return f"Pkcs11Hsm(token_label={self._label!r})"

    # -- plumbing (all with _LOCK held) ---------------------------------------------
    @contextmanager
    def _token(self, what: str, error: type[HsmError] = HsmError) -> Iterator[None]:
        """Hold the lock, check the session is open, and hide PKCS#11 errors."""
        with _LOCK:
            if self._closed:
                raise HsmError(f"{self!r} is closed")
            try:
                yield
            except PKCS11Error as exc:
                raise error(f"PKCS#11 {what} failed on token {self._label!r}: "
                            f"{type(exc).__name__}") from None

    def _objects(self, object_class: ObjectClass, label: str) -> list[_P11Key]:
        found = self._session.get_objects({Attribute.CLASS: object_class,
                                           Attribute.LABEL: label})
        return [cast(_P11Key, obj) for obj in found]

    def _store(self, label: str, value: bytes) -> None:
        """A new private data object on the token."""
        self._session.create_object({
            Attribute.CLASS: ObjectClass.DATA, Attribute.TOKEN: True, Attribute.PRIVATE: True,
            Attribute.LABEL: label, Attribute.APPLICATION: APPLICATION, Attribute.VALUE: value})

    def _one(self, object_class: ObjectClass, label: str) -> _P11Key:
        found = self._objects(object_class, label)
        if len(found) != 1:
            raise KeyStoreError(f"token {self._label!r} holds {len(found)} objects labelled "
                                f"{label!r}; expected one")
        return found[0]

    def _release(self) -> None:
        for key in [*self._deks.values(), *([self._probe] if self._probe else [])]:
            with suppress(PKCS11Error):
                key.destroy()
        self._deks.clear()
        self._probe = None
        self._jwe.clear()
        self._closed = True
        _logout(self._login_key)

    def _start(self) -> None:
        self._probe = cast(_P11Key, self._session.generate_key(
            KeyType.AES, 256, capabilities=MechanismFlag.WRAP, template=_session_template()))
        if self._objects(ObjectClass.DATA, KEYRING_LABEL):
            self._kek = self._one(ObjectClass.SECRET_KEY, KEK_LABEL)
            self._fp = self._one(ObjectClass.SECRET_KEY, FINGERPRINT_LABEL)
            self._sync()
            return
        for label in (KEK_LABEL, FINGERPRINT_LABEL):
            if self._objects(ObjectClass.SECRET_KEY, label):
                raise KeyStoreError(f"token {self._label!r} holds {label!r} but no keyring; "
                                    f"refusing to generate new keys over it")
        self._kek = cast(_P11Key, self._session.generate_key(
            KeyType.AES, 256, label=KEK_LABEL, store=True,
            capabilities=MechanismFlag.WRAP | MechanismFlag.UNWRAP, template=_TOKEN_SECRET))
        self._fp = cast(_P11Key, self._session.generate_key(
            KeyType.GENERIC_SECRET, 256, label=FINGERPRINT_LABEL, store=True,
            mechanism=Mechanism.GENERIC_SECRET_KEY_GEN, capabilities=MechanismFlag.SIGN,
            template=_TOKEN_SECRET))
        ring = Ring()
        self._new_jwe_key(ring)
        self._new_dek(ring)
        self._write(ring)

    def _read_ring(self) -> Ring:
        """The newest keyring on the token; older generations left by a crash are removed."""
        rings: list[tuple[Ring, _P11Key]] = []
        for obj in self._objects(ObjectClass.DATA, KEYRING_LABEL):
            try:
                rings.append((Ring.from_json(bytes(obj[Attribute.VALUE])), obj))
            except (ValueError, KeyError, TypeError):
                raise KeyStoreError(f"the keyring on token {self._label!r} is unreadable") from None
        if not rings:
            raise KeyStoreError(f"the keyring on token {self._label!r} is gone")
        rings.sort(key=lambda pair: pair[0].generation)
        for _, stale in rings[:-1]:
            stale.destroy()
        return rings[-1][0]

    def _sync(self) -> None:
        """Re-read the keyring and load (or drop) keys to match it."""
        self._load(self._read_ring())
        self._synced = time.monotonic()

    def _load(self, ring: Ring) -> None:
        """Load the live keys of ``ring`` that are not loaded yet, drop the retired ones."""
        for kid, entry in ring.jwe.items():
            if entry.status == "retired":
                self._jwe.pop(kid, None)
            elif kid not in self._jwe:
                private = self._one(ObjectClass.PRIVATE_KEY, jwe_label(kid))
                public = self._one(ObjectClass.PUBLIC_KEY, jwe_label(kid))
                self._jwe[kid] = _JweKey(private,
                                         int.from_bytes(public[Attribute.MODULUS], "big"),
                                         int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"))
        for version, entry in ring.deks.items():
            if entry.status == "retired":
                dek = self._deks.pop(version, None)
                if dek is not None:
                    with suppress(PKCS11Error):
                        dek.destroy()
            elif version not in self._deks:
                wrapped = bytes(self._one(ObjectClass.DATA, dek_label(version))[Attribute.VALUE])
                self._deks[version] = self._unwrap_dek(wrapped)
        self._ring = ring

    def _write(self, ring: Ring) -> None:
        """Persist ``ring`` as the next generation, then make it current."""
        old = self._objects(ObjectClass.DATA, KEYRING_LABEL)
        ring.generation = max(ring.generation, self._ring.generation) + 1
        self._store(KEYRING_LABEL, ring.to_json())
        for obj in old:
            obj.destroy()
        self._ring = ring

    def _change(self, what: str, apply: Callable[[Ring], _T]) -> _T:
        """Apply a key change to a fresh copy of the keyring, persist it, load it."""
        with self._token(what, KeyStoreError):
            self._sync()
            ring = copy.deepcopy(self._ring)
            try:
                result = apply(ring)
                self._write(ring)
            except BaseException:   # forget keys made for a change that did not persist
                for version in set(self._deks) - set(self._ring.deks):
                    with suppress(PKCS11Error):
                        self._deks.pop(version).destroy()
                for kid in set(self._jwe) - set(self._ring.jwe):
                    del self._jwe[kid]
                raise
            self._load(ring)
            return result

    def _unwrap_dek(self, wrapped: bytes) -> _P11Key:
        try:
            return cast(_P11Key, self._kek.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, wrapped, mechanism=Mechanism.AES_KEY_WRAP,
                capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
                template=_session_template()))
        except PKCS11Error:
            raise KeyStoreError(f"a DEK on token {self._label!r} does not unwrap under the "
                                f"KEK") from None

    def _new_jwe_key(self, ring: Ring) -> str:
        now = int(time.time())
        kid = (f"p11-{dt.datetime.fromtimestamp(now, dt.UTC):%Y%m%d}-"
               f"{self._session.generate_random(32).hex()}")
        public, private = self._session.generate_keypair(
            KeyType.RSA, RSA_BITS, id=kid.encode(), label=jwe_label(kid), store=True,
            capabilities=(MechanismFlag.ENCRYPT | MechanismFlag.WRAP
                          | MechanismFlag.DECRYPT | MechanismFlag.UNWRAP),
            private_template=dict(_TOKEN_SECRET))
        self._jwe[kid] = _JweKey(cast(_P11Key, private),
                                 int.from_bytes(public[Attribute.MODULUS], "big"),
                                 int.from_bytes(public[Attribute.PUBLIC_EXPONENT], "big"))
        activate(ring.jwe, kid)
        ring.active_kid = kid
        return kid

    def _new_dek(self, ring: Ring) -> int:
        version = max(ring.deks, default=0) + 1
        for orphan in self._objects(ObjectClass.DATA, dek_label(version)):
            orphan.destroy()        # left by a rotation that never reached the keyring
        fresh = cast(_P11Key, self._session.generate_key(
            KeyType.AES, 256, capabilities=MechanismFlag.ENCRYPT | MechanismFlag.DECRYPT,
            template=_session_template(extractable=True)))
        try:
            wrapped = self._kek.wrap_key(fresh, mechanism=Mechanism.AES_KEY_WRAP)
        finally:
            fresh.destroy()
        self._store(dek_label(version), wrapped)
        self._deks[version] = self._unwrap_dek(wrapped)
        activate(ring.deks, version)
        ring.active_dek = version
        return version

    def _lookup(self, cache: dict[Any, _T], kind: str, key_id: str | int) -> _T:
        if key_id not in cache:
            self._sync()            # another instance on this token may have rotated
        if key_id not in cache:
            raise KeyNotFound(kind, key_id)
        return cache[key_id]

    def _open_cek(self, private: _P11Key, encrypted_key: bytes, iv: bytes, data: bytes,
                  aad: bytes) -> bytes:
        """RSA-OAEP-unwrap the CEK into a session key, check it is 32 bytes, lock it
        against extraction, AES-GCM-decrypt on the token, destroy it."""
        cek: _P11Key | None = None
        assert self._probe is not None
        try:
            cek = cast(_P11Key, private.unwrap_key(
                ObjectClass.SECRET_KEY, KeyType.AES, encrypted_key,
                mechanism=Mechanism.RSA_PKCS_OAEP, mechanism_param=_OAEP_SHA1,
                capabilities=MechanismFlag.DECRYPT, template=_session_template(extractable=True)))
            if len(self._probe.wrap_key(cek, mechanism=Mechanism.AES_KEY_WRAP)) != (
                    _CEK_LEN + _KW_OVERHEAD):
                raise DecryptError()
            cek[Attribute.EXTRACTABLE] = False
            return cek.decrypt(data, mechanism=Mechanism.AES_GCM,
                               mechanism_param=GCMParams(iv, aad, TAG_LEN * 8))
        except (PKCS11Error, ValueError):
            raise DecryptError() from None
        finally:
            if cek is not None:
                with suppress(PKCS11Error):
                    cek.destroy()

    def _seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        if time.monotonic() - self._synced >= _RESYNC_SECONDS:
            self._sync()            # pick up a DEK rotation made elsewhere
        version = self._ring.active_dek
        nonce = self._session.generate_random(NONCE_LEN * 8)
        sealed = self._deks[version].encrypt(
            bytes(plaintext), mechanism=Mechanism.AES_GCM,
            mechanism_param=GCMParams(nonce, bytes(aad), TAG_LEN * 8))
        return Sealed(version, nonce + sealed)

    def _unseal(self, sealed: Sealed, aad: bytes) -> bytes:
        dek = self._lookup(self._deks, "dek", sealed.key_version)
        blob = bytes(sealed.blob)
        if len(blob) < NONCE_LEN + TAG_LEN:
            raise DecryptError()
        try:
            return dek.decrypt(blob[NONCE_LEN:], mechanism=Mechanism.AES_GCM,
                               mechanism_param=GCMParams(blob[:NONCE_LEN], bytes(aad),
                                                         TAG_LEN * 8))
        except (PKCS11Error, ValueError):
            raise DecryptError() from None

    # -- the interface ---------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        with self._token("JWKS"):
            self._sync()
            live = [(kid, key, self._ring.jwe[kid]) for kid, key in self._jwe.items()
                    if kid in self._ring.jwe and self._ring.jwe[kid].status != "retired"]
            live.sort(key=lambda t: (t[0] != self._ring.active_kid, -t[2].created))
            return {"keys": [rsa_jwk_from_numbers(key.n, key.e, kid, JWE_ALG)
                             for kid, key, _ in live]}

    def open_jwe(self, kid: str, alg: str, encrypted_key: bytes, iv: bytes,
                 ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        with self._token("JWE decryption"):
            key = self._lookup(self._jwe, "jwe", kid)
            if alg not in self.jwe_algorithms:
                raise UnsupportedAlgorithm(alg, self.backend)
            if len(iv) != NONCE_LEN:
                raise DecryptError()
            return self._open_cek(key.private, bytes(encrypted_key), bytes(iv),
                                  bytes(ciphertext) + bytes(tag), bytes(aad))

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        with self._token("seal"):
            return self._seal(plaintext, aad)

    def unseal(self, sealed: Sealed, aad: bytes) -> bytes:
        with self._token("unseal"):
            return self._unseal(sealed, aad)

    def fingerprint(self, data: bytes) -> bytes:
        with self._token("fingerprint"):
            return self._fp.sign(bytes(data), mechanism=Mechanism.SHA256_HMAC)

    def random(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must not be negative")
        with self._token("random"):
            return self._session.generate_random(n * 8) if n else b""

    def rotate_jwe_key(self) -> str:
        return self._change("JWE key rotation", self._new_jwe_key)

    def rotate_dek(self) -> int:
        return self._change("DEK rotation", self._new_dek)

    def retire_jwe_key(self, kid: str) -> None:
        self._change("JWE key retirement",
                     lambda ring: retire(ring.jwe, ring.active_kid, "jwe", kid, "JWE key"))

    def retire_dek(self, version: int) -> None:
        self._change("DEK retirement",
                     lambda ring: retire(ring.deks, ring.active_dek, "dek", version, "DEK"))

    def keys(self) -> list[KeyInfo]:
        with self._token("key listing"):
            self._sync()
            ring = self._ring
            out = [KeyInfo("jwe", kid, e.status, e.created, JWE_ALG)  # type: ignore[arg-type]
                   for kid, e in ring.jwe.items()]
            out += [KeyInfo("dek", f"v{v}", e.status, e.created, JWE_ENC)  # type: ignore[arg-type]
                    for v, e in ring.deks.items()]
            return out

    def health(self) -> Health:
        with _LOCK:
            if self._closed:
                return Health(False, self.backend, "closed")
            try:
                probe = self._session.generate_random(128)
                ok = self._unseal(self._seal(probe, b"health"), b"health") == probe
            except Exception as exc:
                return Health(False, self.backend, f"self-test failed: {type(exc).__name__}")
            return Health(ok, self.backend, "" if ok else "self-test mismatch",
                          self.jwe_algorithms, self._ring.active_kid, self._ring.active_dek)

    def close(self) -> None:
        """Destroy this instance's session keys and release its share of the session."""
        with _LOCK:
            if not self._closed:
                self._release()
