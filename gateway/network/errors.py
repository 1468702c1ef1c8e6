"""Errors of the network client, split by what they mean for the caller.

* :class:`NotSent` - the request definitely did not leave the gateway (no ready
  connection, back-pressure, client closed, cannot be encoded): safe to retry.
* :class:`OutcomeUnknown` - the request may have reached the network (deadline
  passed, connection lost with the request in flight). Never a decline: the
  attempt is ``unknown`` and belongs to the reconciler.

An error names a request only by its MTI and match key (field 41, field 11).
Its text is built from those and a fixed reason, so ``str()`` and ``repr()``
never contain card data (fields 2, 35, 52, 55 or any other field value).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

__all__ = ["NetworkError", "NotSent", "OutcomeUnknown"]


class NetworkError(Exception):
    """Base of the network client's errors.

    ``reason`` is a fixed description; ``mti``, ``terminal_id`` and ``stan``
    name the request concerned, or are ``None`` when there is none.
    """

    def __init__(
        self,
        reason: str,
        *,
        mti: str | None = None,
        terminal_id: str | None = None,
        stan: str | None = None,
    ) -> None:
        self.reason = reason
        self.mti = mti
        self.terminal_id = terminal_id
        self.stan = stan
        super().__init__(self._text())

    @classmethod
    def for_request(cls, reason: str, doc: Mapping[str, str] | None) -> Self:
        """Build the error for request ``doc``, keeping only its MTI and match key."""
        if doc is None:
            return cls(reason)
        return cls(reason, mti=_plain(doc.get("t")), terminal_id=_plain(doc.get("41")),
                   stan=_plain(doc.get("11")))

    @property
    def match_key(self) -> tuple[str, str] | None:
        """(field 41, field 11) of the request, or None when no request is named."""
        if self.terminal_id is None or self.stan is None:
            return None
        return self.terminal_id, self.stan

    def _text(self) -> str:
        if self.mti is None and self.terminal_id is None and self.stan is None:
            return self.reason
        return f"{self.reason} (mti={self.mti} terminal={self.terminal_id} stan={self.stan})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._text()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.reason, self.mti, self.terminal_id, self.stan))


class OutcomeUnknown(NetworkError):
    """The request may have reached the network; its outcome is not known."""


class NotSent(NetworkError):
    """The request definitely did not reach the network; it is safe to retry."""


def _plain(value: Any) -> str | None:
    """A short, printable identifier (MTI, terminal id, STAN) or None.

    Anything longer than 16 characters or not printable ASCII is not an
    identifier and is dropped, so a misplaced card number cannot leak.
    """
    if not isinstance(value, str) or len(value) > 16 or not value.isascii():
        return None
    if not value.isprintable() or (len(value) > 8 and value.isdigit()):
        return None
    return value


def _rebuild(
    cls: type[NetworkError], reason: str, mti: str | None, terminal_id: str | None,
    stan: str | None,
) -> NetworkError:
    return cls(reason, mti=mti, terminal_id=terminal_id, stan=stan)
