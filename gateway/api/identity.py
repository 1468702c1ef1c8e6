"""Who is calling, and for which merchants it may act.

A caller is identified by the common name (CN) of the client certificate it presented
over mutual TLS (certificates from the internal CA; gRPC core has verified the chain
before any handler runs). :class:`IdentityPolicy` maps each known identity to the
merchant ids it may act for, or to ``"*"`` for all of them. Pure, no I/O.

Refusals are :class:`~gateway.payments.errors.DomainError`\\ s:

* no identity at all: UNAUTHENTICATED ``identity_missing``;
* an identity the CA vouches for but the policy does not list: PERMISSION_DENIED
  ``identity_unknown`` (the caller *is* authenticated, it is just not authorized;
  UNAUTHENTICATED would tell it to fix credentials that are in fact valid);
* a known identity acting for another merchant: PERMISSION_DENIED ``merchant_forbidden``
  (metadata ``merchant_id``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from gateway.payments.errors import DomainError

__all__ = ["WILDCARD", "IdentityPolicy", "identity_from_auth_context", "merchant_allowed"]

#: In a policy's merchant set: every merchant.
WILDCARD: Final = "*"

_MAX_IDENTITY: Final = 255


def identity_from_auth_context(auth: Mapping[str, Iterable[bytes]]) -> str | None:
    """The client certificate's common name from a gRPC auth context, or ``None``.

    ``None`` unless the transport is TLS and exactly one printable, non-empty UTF-8 CN
    (at most 255 characters) is present.
    """
    if [bytes(v) for v in auth.get("transport_security_type", ())] != [b"ssl"]:
        return None
    names = [bytes(v) for v in auth.get("x509_common_name", ())]
    if len(names) != 1:
        return None
    try:
        name = names[0].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not name or len(name) > _MAX_IDENTITY or not name.isprintable():
        return None
    return name


def merchant_allowed(merchants: frozenset[str], merchant_id: str) -> bool:
    """Whether a merchant set (from a policy) covers ``merchant_id``."""
    return bool(merchant_id) and (WILDCARD in merchants or merchant_id in merchants)


class IdentityPolicy:
    """Which merchants each caller identity may act for (``"*"``: all of them).

    An identity mapped to an empty set is known but may act for no merchant (e.g. a
    monitoring probe that only calls the health service).
    """

    def __init__(self, mapping: Mapping[str, Iterable[str]]) -> None:
        table: dict[str, frozenset[str]] = {}
        for identity, merchants in mapping.items():
            if not isinstance(identity, str) or not identity:
                raise ValueError(f"an identity is a non-empty string: {identity!r}")
            if isinstance(merchants, str):
                raise TypeError(f"{identity!r}: give a set of merchant ids, not a string")
            ids = frozenset(merchants)
            if not all(isinstance(m, str) and m for m in ids):
                raise ValueError(f"{identity!r}: merchant ids are non-empty strings")
            table[identity] = ids
        self._table: Final = table

    def merchants_for(self, identity: str | None) -> frozenset[str] | None:
        """The merchant ids ``identity`` may act for, or ``None`` if it is not in the policy."""
        if not identity:
            return None
        return self._table.get(identity)

    def admit(self, identity: str | None) -> frozenset[str]:
        """The merchants of a caller the policy knows; a :class:`DomainError` otherwise."""
        if not identity:
            raise DomainError("UNAUTHENTICATED", "identity_missing",
                              "a client certificate is required")
        merchants = self._table.get(identity)
        if merchants is None:
            raise DomainError("PERMISSION_DENIED", "identity_unknown",
                              "this client is not authorized to use the API")
        return merchants

    def check(self, identity: str | None, merchant_id: str) -> None:
        """Return if ``identity`` may act for ``merchant_id``; raise a :class:`DomainError`."""
        if not merchant_allowed(self.admit(identity), merchant_id):
            raise DomainError("PERMISSION_DENIED", "merchant_forbidden",
                              "this client may not act for this merchant",
                              {"merchant_id": merchant_id})
