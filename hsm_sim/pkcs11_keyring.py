"""The keyring of the PKCS#11 backend (:mod:`hsm_sim.pkcs11`), as plain data.

Owns what the ``paygate-keyring`` data object holds: the JWE kids and DEK
versions with their status and creation time, the active ones and the
generation counter; its JSON form; and the status changes of a rotation or a
retirement. No token calls: :class:`~hsm_sim.pkcs11.Pkcs11Hsm` reads, writes
and acts on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Final

from hsm_sim.interface import KeyNotFound, KeyStoreError

_FORMAT: Final = 1


@dataclass
class Entry:
    status: str                 # active | decrypt-only | retired
    created: int


@dataclass
class Ring:
    """The keyring: what ``paygate-keyring`` holds."""

    generation: int = 0
    jwe: dict[str, Entry] = field(default_factory=dict)
    deks: dict[int, Entry] = field(default_factory=dict)
    active_kid: str = ""
    active_dek: int = 0

    def to_json(self) -> bytes:
        return json.dumps({
            "format": _FORMAT, "generation": self.generation,
            "jwe": [{"kid": k, "status": e.status, "created": e.created}
                    for k, e in self.jwe.items()],
            "deks": [{"version": v, "status": e.status, "created": e.created}
                     for v, e in self.deks.items()],
            "active_kid": self.active_kid, "active_dek": self.active_dek,
        }, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Ring:
        doc = json.loads(raw)
        if doc.get("format") != _FORMAT:
            raise ValueError("unknown keyring format")
        return cls(int(doc["generation"]),
                   {str(j["kid"]): Entry(str(j["status"]), int(j["created"]))
                    for j in doc["jwe"]},
                   {int(d["version"]): Entry(str(d["status"]), int(d["created"]))
                    for d in doc["deks"]},
                   str(doc["active_kid"]), int(doc["active_dek"]))


def activate(entries: dict[Any, Entry], key_id: str | int) -> None:
    for entry in entries.values():
        if entry.status == "active":
            entry.status = "decrypt-only"
    entries[key_id] = Entry("active", int(time.time()))


def retire(entries: dict[Any, Entry], active: object, kind: str, key_id: str | int,
           name: str) -> None:
    entry = entries.get(key_id)
    if entry is None or entry.status == "retired":
        raise KeyNotFound(kind, key_id)
    if key_id == active:
        raise KeyStoreError(f"the active {name} cannot be retired; rotate first")
    entry.status = "retired"
