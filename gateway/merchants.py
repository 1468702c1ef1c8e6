"""Merchants and the credentials that speak for them.

A merchant has an id, a name, publishable keys (``pk_...``: they identify the
merchant to the HTTP edge and can only tokenize cards; they are not secret,
they ship in checkout pages), the web origins allowed to embed the card
frame, and what the card network knows it by: the card acceptor id (ISO 8583
field 42, 15 characters; by default the id upper-cased, space-padded) and the
merchant category code (field 18, four digits; by default 5999). The directory
is plain data (JSON, or the gateway's TOML configuration), loaded at start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

#: ISO 8583 field 42 (card acceptor identification code) is fixed at 15 characters.
CARD_ACCEPTOR_ID_LENGTH = 15
#: Field 18 (merchant category code) when a merchant does not name one: "misc. retail".
DEFAULT_MCC = "5999"


def default_card_acceptor_id(merchant_id: str) -> str:
    """Field 42 derived from a merchant id: upper-cased, cut and space-padded to 15."""
    return merchant_id.upper()[:CARD_ACCEPTOR_ID_LENGTH].ljust(CARD_ACCEPTOR_ID_LENGTH)


class MerchantConfigError(ValueError):
    """The merchant directory file is not valid."""


@dataclass(frozen=True)
class Merchant:
    """One merchant. ``card_acceptor_id`` is stored space-padded to 15 characters
    (empty means: derived from ``id``); ``mcc`` must be four digits."""

    id: str
    name: str
    publishable_keys: frozenset[str] = field(default_factory=frozenset)
    allowed_origins: tuple[str, ...] = ()
    card_acceptor_id: str = ""
    mcc: str = DEFAULT_MCC

    def __post_init__(self) -> None:
        acceptor = self.card_acceptor_id or default_card_acceptor_id(self.id)
        if (len(acceptor) > CARD_ACCEPTOR_ID_LENGTH or not acceptor.isascii()
                or not acceptor.isprintable() or not acceptor.strip()):
            raise MerchantConfigError(
                f"card_acceptor_id of {self.id!r} must be 1 to {CARD_ACCEPTOR_ID_LENGTH} "
                "printable ASCII characters")
        object.__setattr__(self, "card_acceptor_id", acceptor.ljust(CARD_ACCEPTOR_ID_LENGTH))
        if not (len(self.mcc) == 4 and self.mcc.isascii() and self.mcc.isdigit()):
            raise MerchantConfigError(f"mcc of {self.id!r} must be four digits")


class MerchantDirectory:
    """Merchants by id and by publishable key."""

    def __init__(self, merchants: list[Merchant]) -> None:
        self._by_id: dict[str, Merchant] = {}
        self._by_pk: dict[str, Merchant] = {}
        acceptors: set[str] = set()
        for merchant in merchants:
            if merchant.id in self._by_id:
                raise MerchantConfigError(f"merchant {merchant.id!r} is listed twice")
            if merchant.card_acceptor_id in acceptors:
                raise MerchantConfigError(
                    f"card_acceptor_id of {merchant.id!r} is used by another merchant")
            acceptors.add(merchant.card_acceptor_id)
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

    def allow_origins(self, merchant_id: str, origins: tuple[str, ...]) -> Merchant:
        """Add ``origins`` to the merchant's ``allowed_origins`` (at start-up, e.g. the
        demo checkout's page origin once the edge's port is known); returns the result."""
        merchant = self._by_id[merchant_id]
        extra = tuple(o for o in origins if o not in merchant.allowed_origins)
        updated = replace(merchant, allowed_origins=merchant.allowed_origins + extra)
        self._by_id[merchant_id] = updated
        for key in updated.publishable_keys:
            self._by_pk[key] = updated
        return updated

    @classmethod
    def from_data(cls, data: Any) -> MerchantDirectory:
        """From ``{"merchants": [{"id", "name", "publishable_keys", "allowed_origins",
        "card_acceptor_id", "mcc"}]}`` (all but ``id`` optional)."""
        entries = data.get("merchants") if isinstance(data, dict) else None
        if not isinstance(entries, list):
            raise MerchantConfigError(
                "the merchant directory must be an object with a merchants list")
        merchants = []
        for number, m in enumerate(entries):
            if not isinstance(m, dict) or "id" not in m:
                raise MerchantConfigError(
                    f"merchants[{number}] must be an object with an id")
            merchants.append(Merchant(
                id=str(m["id"]), name=str(m.get("name", m["id"])),
                publishable_keys=frozenset(_strings(m, "publishable_keys", number)),
                allowed_origins=tuple(_strings(m, "allowed_origins", number)),
                card_acceptor_id=str(m.get("card_acceptor_id", "")),
                mcc=str(m.get("mcc", DEFAULT_MCC))))
        return cls(merchants)

    @classmethod
    def load(cls, path: Path) -> MerchantDirectory:
        try:
            text = path.read_text("utf-8")
        except (OSError, ValueError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
            raise MerchantConfigError(f"cannot read {path}: {reason}") from None
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise MerchantConfigError(f"{path} is not valid JSON: {exc}") from None
        return cls.from_data(data)


def _strings(entry: dict[str, Any], key: str, number: int) -> list[str]:
    """``entry[key]`` (absent: empty), which must be a list of strings."""
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise MerchantConfigError(f"merchants[{number}].{key} must be a list of strings")
    return value


#: The embedded default: two demo merchants (two, so isolation can be shown).
DEMO = {
    "merchants": [
        {"id": "acme", "name": "ACME Books", "publishable_keys": ["pk_test_acme"],
         "allowed_origins": ["http://localhost:8080", "http://127.0.0.1:8080"],
         "card_acceptor_id": "ACME00000000001", "mcc": "5942"},
        {"id": "globex", "name": "Globex Tools", "publishable_keys": ["pk_test_globex"],
         "allowed_origins": ["http://localhost:8080", "http://127.0.0.1:8080"],
         "card_acceptor_id": "GLOBEX000000001", "mcc": "5251"},
    ],
}
