"""The software HSM keeps its keys on disk only encrypted, under a master key that
only its owner can read."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from hsm_sim import KeyStoreError, SoftwareHsm
from hsm_sim.software import KEYSTORE_FILE, MASTER_KEY_ENV, MASTER_KEY_FILE


def test_first_start_creates_a_0600_master_key_and_key_store(tmp_path: Path) -> None:
    """The master key file and the key store are created readable by the owner only."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    for name in (MASTER_KEY_FILE, KEYSTORE_FILE):
        mode = stat.S_IMODE((tmp_path / "hsm" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert len((tmp_path / "hsm" / MASTER_KEY_FILE).read_bytes()) == 32


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o640])
def test_a_master_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Start-up fails, naming the mode, when the master key file is group/world readable."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    os.chmod(tmp_path / "hsm" / MASTER_KEY_FILE, mode)
    with pytest.raises(KeyStoreError, match=f"{mode:04o}"):
        SoftwareHsm(tmp_path / "hsm", environ={})


def test_the_master_key_can_come_from_the_environment(tmp_path: Path) -> None:
    """With PAYGATE_HSM_MASTER_KEY set no key file is written, and the same variable
    reopens the store."""
    env = {MASTER_KEY_ENV: "11" * 32}
    first = SoftwareHsm(tmp_path / "hsm", environ=env)
    sealed = first.seal(b"data", b"a")
    assert not (tmp_path / "hsm" / MASTER_KEY_FILE).exists()
    assert SoftwareHsm(tmp_path / "hsm", environ=env).unseal(sealed, b"a") == b"data"


def test_a_wrong_master_key_does_not_open_the_store(tmp_path: Path) -> None:
    """Another master key gives a clear KeyStoreError, not garbage keys."""
    SoftwareHsm(tmp_path / "hsm", environ={MASTER_KEY_ENV: "11" * 32})
    with pytest.raises(KeyStoreError, match="does not open"):
        SoftwareHsm(tmp_path / "hsm", environ={MASTER_KEY_ENV: "22" * 32})


def test_a_malformed_master_key_variable_is_refused(tmp_path: Path) -> None:
    """A master key that is not 32 bytes of hex or base64url is refused without echoing it."""
    with pytest.raises(KeyStoreError) as info:
        SoftwareHsm(tmp_path / "hsm", environ={MASTER_KEY_ENV: "not-a-key-abcdef"})
    assert "not-a-key" not in str(info.value)


def test_the_key_store_holds_no_key_in_clear(tmp_path: Path) -> None:
    """Neither the RSA private key, the KEK, the fingerprint key nor a DEK appears in
    the key store file's bytes."""
    hsm = SoftwareHsm(tmp_path / "hsm", environ={})
    raw = (tmp_path / "hsm" / KEYSTORE_FILE).read_bytes()
    secrets_in_memory = [hsm._kek, hsm._fp_key]
    for key in hsm._jwe.values():
        numbers = key.private.private_numbers()
        secrets_in_memory.append(key.private.private_bytes(
            serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        secrets_in_memory.append(numbers.p.to_bytes(128, "big"))
    import base64
    for secret in secrets_in_memory:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret)):
            assert form[:24] not in raw


def test_an_unreadable_key_store_is_a_clear_error(tmp_path: Path) -> None:
    """A corrupted key store stops start-up with KeyStoreError."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    (tmp_path / "hsm" / KEYSTORE_FILE).write_text("{not json")
    with pytest.raises(KeyStoreError, match="unreadable"):
        SoftwareHsm(tmp_path / "hsm", environ={})


def _rewrite_store(directory: Path, change: Callable[[dict[str, Any]], object]) -> None:
    path = directory / KEYSTORE_FILE
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(change(doc)))


def _set(doc: dict[str, Any], path: tuple[str | int, ...], value: object) -> dict[str, Any]:
    target: Any = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return doc


def test_a_key_store_that_is_not_a_json_object_is_refused(tmp_path: Path) -> None:
    """A key store whose JSON is a list raises KeyStoreError naming the file."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    _rewrite_store(tmp_path / "hsm", lambda doc: [])
    with pytest.raises(KeyStoreError, match="is not a key store \\(expected a JSON object\\)"):
        SoftwareHsm(tmp_path / "hsm", environ={})


@pytest.mark.parametrize(("where", "value"), [
    (("jwe_keys",), "keys"),
    (("deks",), {"version": 1}),
    (("kek",), 7),
    (("active_dek",), "1"),
    (("active_dek",), 99),
    (("active_kid",), "sw-nobody"),
    (("jwe_keys", 0), 5),
    (("deks", 0), None),
    (("jwe_keys", 0, "kid"), ["x"]),
    (("jwe_keys", 0, "private"), None),
    (("deks", 0, "version"), True),
    (("deks", 0, "wrapped"), "not base64!"),
    (("kek",), "not base64!"),
])
def test_a_key_store_with_wrong_nested_types_is_refused(
        tmp_path: Path, where: tuple[str | int, ...], value: object) -> None:
    """A key store field of the wrong type or shape raises KeyStoreError, not TypeError,
    KeyError or AttributeError."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    _rewrite_store(tmp_path / "hsm", lambda doc: _set(doc, where, value))
    with pytest.raises(KeyStoreError):
        SoftwareHsm(tmp_path / "hsm", environ={})


def test_a_missing_master_key_beside_a_key_store_is_refused_and_nothing_written(
        tmp_path: Path) -> None:
    """With the key store present and master.key gone, start-up names both files and
    writes no new master key."""
    SoftwareHsm(tmp_path / "hsm", environ={})
    (tmp_path / "hsm" / MASTER_KEY_FILE).unlink()
    before = sorted(p.name for p in (tmp_path / "hsm").iterdir())
    with pytest.raises(KeyStoreError, match=r"master key file .* is missing; it is needed to "
                                            r"open the existing key store .*keystore\.json"):
        SoftwareHsm(tmp_path / "hsm", environ={})
    assert sorted(p.name for p in (tmp_path / "hsm").iterdir()) == before
    assert not (tmp_path / "hsm" / MASTER_KEY_FILE).exists()
