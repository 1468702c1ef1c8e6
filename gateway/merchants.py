"""Merchants and the credentials that speak for them.

A merchant has an id, a name, publishable keys (``pk_...``: they identify the
merchant to the HTTP edge and can only tokenize cards; they are not secret,
they ship in checkout pages) and the web origins allowed to embed the card
frame. The directory is plain data (JSON), loaded at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class MerchantConfigError(ValueError):
    """The merchant directory file is not valid."""


@dataclass(frozen=True)
class Merchant:
    id: str
    name: str
    publishable_keys: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: tuple[str, ...] = ()


class MerchantDirectory:
    """Merchants by id and by publishable key."""

    def __init__(self, merchants: list[Merchant]) -> None:
        self._by_id: dict[str, Merchant] = {}
        self._by_pk: dict[str, Merchant] = {}
        for merchant in merchants:
            if merchant.id in self._by_id:
                raise MerchantConfigError(f"merchant {merchant.id!r} is listed twice")
            self._by_id[merchant.id] = merchant
            for key in merchant.publishable_keys:
                if not key.startswith("pk_"):
                    raise MerchantConfigError(
                        f"publishable key of {merchant.id!r} must start with 'pk_'")
                if key in self._by_pk:
                    raise MerchantConfigError("a publishable key is used by two merchants")
                self._by_pk[key] = merchant

    def __repr__(self) -> str:
        return f"MerchantDirectory({len(self._by_id)} merchants)"

    def __iter__(self) -> Any:
        return iter(self._by_id.values())

    def get(self, merchant_id: str) -> Merchant | None:
        return self._by_id.get(merchant_id)

    def by_publishable_key(self, key: str) -> Merchant | None:
        return self._by_pk.get(key)

    @classmethod
    def from_data(cls, data: Any) -> MerchantDirectory:
        """From ``{"merchants": [{"id", "name", "publishable_keys", "allowed_origins"}]}``."""
        try:
            return cls([Merchant(id=str(m["id"]), name=str(m.get("name", m["id"])),
                                 publishable_keys=frozenset(m.get("publishable_keys", ())),
                                 allowed_origins=tuple(m.get("allowed_origins", ())))
                        for m in data["merchants"]])
        except (KeyError, TypeError) as exc:
            raise MerchantConfigError(f"bad merchant directory: {exc!r}") from None

    @classmethod
    def load(cls, path: Path) -> MerchantDirectory:
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise MerchantConfigError(f"cannot read {path}: {type(exc).__name__}") from None
        return cls.from_data(data)


#: The embedded default: two demo merchants (two, so isolation can be shown).
DEMO = {
    "merchants": [
        {"id": "acme", "name": "ACME Books", "publishable_keys": ["pk_test_acme"],
         "allowed_origins": ["http://localhost:8080", "http://127.0.0.1:8080"]},
        {"id": "globex", "name": "Globex Tools", "publishable_keys": ["pk_test_globex"],
         "allowed_origins": ["http://localhost:8080", "http://127.0.0.1:8080"]},
    ],
}
