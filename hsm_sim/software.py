"""The software HSM: the embedded default, with its key material on disk.

Layout of its directory (created 0700):

* ``master.key``: 32 random bytes, created 0600 on first start, unless the
  master key comes from the environment (``PAYGATE_HSM_MASTER_KEY``, 64 hex
  digits or 43 base64url characters). A master key file that anyone but its
  owner can read or write is refused.
* ``keystore.json`` (0600, replaced atomically): every key, encrypted.
  The KEK and the fingerprint key are AES-256-GCM encrypted under a key derived
  from the master key (HKDF-SHA256); RSA private keys likewise (PKCS#8 DER);
  DEKs are wrapped by the KEK (AES key wrap, RFC 3394).

Everything it decrypts goes through :mod:`cryptography`; failures become the
one :class:`~hsm_sim.interface.DecryptError`.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import os
import secrets
import stat
import threading
import time
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any, Final, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from hsm_sim.interface import (
    JWE_ALGS,
    NONCE_LEN,
    RSA_BITS,
    DecryptError,
    Health,
    KeyInfo,
    KeyNotFound,
    KeyStoreError,
    Sealed,
    UnsupportedAlgorithm,
)
from hsm_sim.jwk import rsa_jwk
from hsm_sim.randompool import POOL

MASTER_KEY_ENV: Final = "PAYGATE_HSM_MASTER_KEY"
MASTER_KEY_FILE: Final = "master.key"
KEYSTORE_FILE: Final = "keystore.json"
_FORMAT: Final = 1
_OAEP: Final = {
    "RSA-OAEP": padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(),
                             label=None),
    "RSA-OAEP-256": padding.OAEP(mgf=padding.MGF1(hashes.SHA256()),
                                 algorithm=hashes.SHA256(), label=None),
}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def parse_master_key(text: str) -> bytes:
    """A master key as written in the environment: 64 hex digits or base64url of 32 bytes."""
    text = text.strip()
    try:
        key = bytes.fromhex(text) if len(text) == 64 else base64.urlsafe_b64decode(text + "=")
    except (ValueError, binascii.Error):
        raise KeyStoreError(f"{MASTER_KEY_ENV} is not 32 bytes as hex or base64url") from None
    if len(key) != 32:
        raise KeyStoreError(f"{MASTER_KEY_ENV} is not 32 bytes as hex or base64url")
    return key


def load_master_key(directory: Path, environ: dict[str, str] | None = None) -> bytes:
    """The master key: from the environment if set, else from ``master.key`` (created
    0600 when missing, unless a key store already exists: then it is refused, as a new
    master key could not open it). Refuses a key file readable or writable by group or
    others."""
    env = os.environ if environ is None else environ
    if env.get(MASTER_KEY_ENV):
        return parse_master_key(env[MASTER_KEY_ENV])
    path = directory / MASTER_KEY_FILE
    if not path.exists():
        store = directory / KEYSTORE_FILE
        if store.exists():
            raise KeyStoreError(f"master key file {path} is missing; it is needed to open "
                                f"the existing key store {store}")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(32))
            os.fsync(fd)
        finally:
            os.close(fd)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyStoreError(f"refusing to start: master key file {path} has mode {mode:04o}; "
                            f"it must be readable by its owner only (chmod 600)")
    key = path.read_bytes()
    if len(key) != 32:
        raise KeyStoreError(f"master key file {path} does not hold 32 bytes")
    return key


_STR: Final = (str, "a string")
_INT: Final = (int, "an integer")
_TOP_FIELDS: Final = {"kek": _STR, "fingerprint_key": _STR, "jwe_keys": (list, "a list"),
                      "deks": (list, "a list"), "active_kid": _STR, "active_dek": _INT}
_JWE_FIELDS: Final = {"kid": _STR, "alg": _STR, "status": _STR, "created": _INT,
                      "private": _STR}
_DEK_FIELDS: Final = {"version": _INT, "status": _STR, "created": _INT, "wrapped": _STR}


def _check_fields(path: Path, where: str, obj: dict[str, Any],
                  fields: dict[str, tuple[type, str]]) -> None:
    for name, (kind, what) in fields.items():
        value = obj.get(name)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise KeyStoreError(f"key store {path} is not a key store "
                                f"({where}{name} is not {what})")


def check_keystore_doc(path: Path, doc: object) -> dict[str, Any]:
    """``doc`` (the parsed ``keystore.json`` at ``path``) if it has the key store's
    shape, else KeyStoreError naming the first field that is wrong."""
    if not isinstance(doc, dict):
        raise KeyStoreError(f"key store {path} is not a key store (expected a JSON object)")
    if doc.get("format") != _FORMAT:
        raise KeyStoreError(f"key store {path} has an unknown format")
    _check_fields(path, "", doc, _TOP_FIELDS)
    for section, fields in (("jwe_keys", _JWE_FIELDS), ("deks", _DEK_FIELDS)):
        for i, entry in enumerate(doc[section]):
            if not isinstance(entry, dict):
                raise KeyStoreError(f"key store {path} is not a key store "
                                    f"({section}[{i}] is not a JSON object)")
            _check_fields(path, f"{section}[{i}].", entry, fields)
    if doc["active_kid"] not in {e["kid"] for e in doc["jwe_keys"]}:
        raise KeyStoreError(f"key store {path} is not a key store (active_kid names no key)")
    if doc["active_dek"] not in {e["version"] for e in doc["deks"]}:
        raise KeyStoreError(f"key store {path} is not a key store (active_dek names no DEK)")
    return doc


@dataclass
class _JweKey:
    kid: str
    alg: str
    status: str
    created: int
    private: rsa.RSAPrivateKey


@dataclass
class _Dek:
    version: int
    status: str
    created: int
    aead: AESGCM


class SoftwareHsm:
    """The software HSM. Thread-safe: key changes take a lock, reads use snapshots."""

    backend = "software"
    jwe_algorithms: frozenset[str] = JWE_ALGS

    def __init__(self, directory: str | Path, *, environ: dict[str, str] | None = None,
                 jwe_alg: str = "RSA-OAEP-256") -> None:
        if jwe_alg not in JWE_ALGS:
            raise UnsupportedAlgorithm(jwe_alg, self.backend)
        self._dir = Path(directory)
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        master = load_master_key(self._dir, environ)
        self._store_key = AESGCM(HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                                      info=b"paygate software hsm keystore v1").derive(master))
        self._lock = threading.RLock()
        self._jwe_alg = jwe_alg
        self._jwe: dict[str, _JweKey] = {}
        self._deks: dict[int, _Dek] = {}
        self._wrapped_deks: dict[int, bytes] = {}
        self._active_kid = ""
        self._active_dek = 0
        path = self._dir / KEYSTORE_FILE
        if path.exists():
            self._load(path)
        else:
            self._kek = secrets.token_bytes(32)
            self._fp_key = secrets.token_bytes(32)
            self._new_jwe_key()
            self._new_dek()
            self._save()

    def __repr__(self) -> str:
        return f"SoftwareHsm({str(self._dir)!r}, active_kid={self._active_kid!r})"

    # -- persistence ---------------------------------------------------------------
    def _encrypt(self, label: str, data: bytes) -> str:
        nonce = secrets.token_bytes(NONCE_LEN)
        return _b64(nonce + self._store_key.encrypt(nonce, data, label.encode()))

    def _decrypt(self, label: str, text: str) -> bytes:
        path = self._dir / KEYSTORE_FILE
        try:
            raw = _unb64(text)
        except ValueError:
            raise KeyStoreError(f"key store {path} is not a key store "
                                f"({label} is not base64)") from None
        try:
            return self._store_key.decrypt(raw[:NONCE_LEN], raw[NONCE_LEN:], label.encode())
        except (ValueError, InvalidTag):
            raise KeyStoreError(f"the master key does not open this key store ({path})"
                                ) from None

    def _load(self, path: Path) -> None:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise KeyStoreError(f"refusing to start: key store {path} has mode {mode:04o}; "
                                f"chmod 600 it")
        try:
            doc = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"key store {path} is unreadable: {type(exc).__name__}") from None
        doc = check_keystore_doc(path, doc)
        self._kek = self._decrypt("kek", doc["kek"])
        self._fp_key = self._decrypt("fingerprint", doc["fingerprint_key"])
        for entry in doc["jwe_keys"]:
            der = self._decrypt("jwe:" + entry["kid"], entry["private"])
            key = serialization.load_der_private_key(der, password=None)
            self._jwe[entry["kid"]] = _JweKey(entry["kid"], entry["alg"], entry["status"],
                                             entry["created"], cast(rsa.RSAPrivateKey, key))
        for entry in doc["deks"]:
            try:
                wrapped = _unb64(entry["wrapped"])
            except ValueError:
                raise KeyStoreError(f"key store {path} is not a key store "
                                    f"(DEK v{entry['version']} is not base64)") from None
            self._wrapped_deks[entry["version"]] = wrapped
            self._deks[entry["version"]] = _Dek(entry["version"], entry["status"],
                                                entry["created"], self._unwrap_dek(wrapped))
        self._active_kid = doc["active_kid"]
        self._active_dek = doc["active_dek"]

    def _unwrap_dek(self, wrapped: bytes) -> AESGCM:
        try:
            return AESGCM(aes_key_unwrap(self._kek, wrapped))
        except (ValueError, InvalidUnwrap):
            raise KeyStoreError("a DEK does not unwrap under the KEK") from None

    def _save(self) -> None:
        doc = {
            "format": _FORMAT,
            "kek": self._encrypt("kek", self._kek),
            "fingerprint_key": self._encrypt("fingerprint", self._fp_key),
            "jwe_keys": [
                {"kid": k.kid, "alg": k.alg, "status": k.status, "created": k.created,
                 "private": self._encrypt("jwe:" + k.kid, k.private.private_bytes(
                     serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                     serialization.NoEncryption()))}
                for k in self._jwe.values()],
            "deks": [{"version": d.version, "status": d.status, "created": d.created,
                      "wrapped": _b64(self._wrapped_deks[d.version])}
                     for d in self._deks.values()],
            "active_kid": self._active_kid,
            "active_dek": self._active_dek,
        }
        path = self._dir / KEYSTORE_FILE
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(doc, indent=1).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    # -- key generation ------------------------------------------------------------
    def _new_jwe_key(self) -> str:
        now = int(time.time())
        kid = f"sw-{dt.datetime.fromtimestamp(now, dt.UTC):%Y%m%d}-{secrets.token_hex(4)}"
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
        for key in self._jwe.values():
            if key.status == "active":
                key.status = "decrypt-only"
        self._jwe[kid] = _JweKey(kid, self._jwe_alg, "active", now, private)
        self._active_kid = kid
        return kid

    def _new_dek(self) -> int:
        version = max(self._deks, default=0) + 1
        dek = secrets.token_bytes(32)
        self._wrapped_deks[version] = aes_key_wrap(self._kek, dek)
        for old in self._deks.values():
            if old.status == "active":
                old.status = "decrypt-only"
        self._deks[version] = _Dek(version, "active", int(time.time()), AESGCM(dek))
        self._active_dek = version
        return version

    def rotate_jwe_key(self) -> str:
        with self._lock:
            kid = self._new_jwe_key()
            self._save()
            return kid

    def rotate_dek(self) -> int:
        with self._lock:
            version = self._new_dek()
            self._save()
            return version

    def retire_jwe_key(self, kid: str) -> None:
        with self._lock:
            key = self._jwe.get(kid)
            if key is None or key.status == "retired":
                raise KeyNotFound("jwe", kid)
            if kid == self._active_kid:
                raise KeyStoreError("the active JWE key cannot be retired; rotate first")
            key.status = "retired"
            self._save()

    def retire_dek(self, version: int) -> None:
        with self._lock:
            dek = self._deks.get(version)
            if dek is None or dek.status == "retired":
                raise KeyNotFound("dek", version)
            if version == self._active_dek:
                raise KeyStoreError("the active DEK cannot be retired; rotate first")
            dek.status = "retired"
            self._save()

    # -- the interface -------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        live = [k for k in self._jwe.values() if k.status != "retired"]
        live.sort(key=lambda k: (k.kid != self._active_kid, -k.created))
        return {"keys": [rsa_jwk(k.private.public_key(), k.kid, k.alg) for k in live]}

    def open_jwe(self, kid: str, alg: str, encrypted_key: bytes, iv: bytes,
                 ciphertext: bytes, tag: bytes, aad: bytes) -> bytes:
        key = self._jwe.get(kid)
        if key is None or key.status == "retired":
            raise KeyNotFound("jwe", kid)
        oaep = _OAEP.get(alg)
        if oaep is None:
            raise UnsupportedAlgorithm(alg, self.backend)
        try:
            cek = key.private.decrypt(encrypted_key, oaep)
            if len(cek) != 32 or len(iv) != NONCE_LEN:
                raise DecryptError()
            return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
        except (ValueError, InvalidTag):
            raise DecryptError() from None

    def seal(self, plaintext: bytes, aad: bytes) -> Sealed:
        dek = self._deks[self._active_dek]
        nonce = POOL.draw(NONCE_LEN)
        return Sealed(dek.version, nonce + dek.aead.encrypt(nonce, plaintext, aad))

    def unseal(self, sealed: Sealed, aad: bytes) -> bytes:
        dek = self._deks.get(sealed.key_version)
        if dek is None or dek.status == "retired":
            raise KeyNotFound("dek", sealed.key_version)
        blob = sealed.blob
        try:
            return dek.aead.decrypt(blob[:NONCE_LEN], blob[NONCE_LEN:], aad)
        except (ValueError, InvalidTag):
            raise DecryptError() from None

    def fingerprint(self, data: bytes) -> bytes:
        return hmac.new(self._fp_key, data, sha256).digest()

    def random(self, n: int) -> bytes:
        if n < 0:
            raise ValueError("n must not be negative")
        return POOL.draw(n)

    def keys(self) -> list[KeyInfo]:
        out = [KeyInfo("jwe", k.kid, k.status, k.created, k.alg)  # type: ignore[arg-type]
               for k in self._jwe.values()]
        out += [KeyInfo("dek", f"v{d.version}", d.status, d.created, "A256GCM")  # type: ignore[arg-type]
                for d in self._deks.values()]
        return out

    def health(self) -> Health:
        try:
            probe = secrets.token_bytes(16)
            ok = self.unseal(self.seal(probe, b"health"), b"health") == probe
        except Exception as exc:
            return Health(False, self.backend, f"self-test failed: {type(exc).__name__}")
        return Health(ok, self.backend, "" if ok else "self-test mismatch",
                      self.jwe_algorithms, self._active_kid, self._active_dek)

    def close(self) -> None:
        """Nothing to release: the key material lives in this object only."""
