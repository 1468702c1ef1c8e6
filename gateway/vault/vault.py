"""The card vault: PAN in, token out; and back again for the network path only.

* ``tokenize`` seals the PAN under the HSM's active DEK (bound to merchant and
  token), stores it with its key version, BIN, last 4 and keyed fingerprint,
  and returns a format-preserving token (see ``gateway.vault.tokens``).
* **One card, one token per merchant.** The same card number tokenized again
  by the same merchant returns the same token (found by fingerprint); the
  expiry on file becomes the one presented last (a reissued card keeps its
  number). Another merchant tokenizing the same card gets its own token: a
  token is useless to any merchant but the one that created it.
* The CVC is never stored: ``tokenize`` hands it to the in-memory
  :class:`~gateway.vault.cvc.CvcCache`, and ``detokenize_for_network``
  consumes it.
* ``detokenize_for_network`` is the only way back to the PAN. Nothing else in
  the gateway calls it but the code that builds the network message.
* With an ``executor``, the HSM's work (fingerprint, token digits, seals, unseals)
  runs there instead of on the event loop: for a PKCS#11 HSM, whose calls are
  serialised behind one lock that a long RSA decrypt in another thread may hold.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Final, TypeVar

from gateway.cards import Card
from gateway.vault.cvc import CvcCache
from gateway.vault.store import Replayed, TokenTaken, VaultEntry, VaultStore
from gateway.vault.tokens import make_token
from hsm_sim.interface import Hsm

_DRAWS: Final = 8
T = TypeVar("T")


class TokenNotFound(LookupError):
    """No such token for this merchant (unknown, or another merchant's)."""

    def __init__(self) -> None:
        super().__init__("no such token for this merchant")


class VaultFull(RuntimeError):
    """No free token could be drawn (practically only with very short PANs)."""


def _pan_aad(merchant_id: str, token: str) -> bytes:
    return f"pan:{merchant_id}:{token}".encode()


@dataclass(frozen=True)
class Tokenized:
    """What the caller learns about a tokenized card (nothing secret)."""

    token: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    created: bool           # False when the merchant already held this card


@dataclass(frozen=True)
class NetworkCard:
    """The card as the network message needs it: PAN, expiry, and the CVC if still held."""

    card: Card
    cvc: str | None = field(repr=False)

    def __repr__(self) -> str:
        return f"NetworkCard({self.card!r}, cvc={'held' if self.cvc else 'none'})"


class Vault:
    """Tokenize and detokenize cards through an HSM and a vault store."""

    def __init__(self, hsm: Hsm, store: VaultStore, *, cvc_cache: CvcCache | None = None,
                 executor: Executor | None = None) -> None:
        self._hsm = hsm
        self._store = store
        self.cvcs = cvc_cache if cvc_cache is not None else CvcCache(hsm)
        self._executor = executor

    async def _hsm_work(self, fn: Callable[[], T]) -> T:
        """``fn`` (HSM calls) in the executor if there is one, else right here."""
        if self._executor is None:
            return fn()
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def __repr__(self) -> str:
        return f"Vault(hsm={self._hsm.backend}, store={self._store!r})"

    async def tokenize(self, merchant_id: str, card: Card, *, cvc: str | None = None,
                       jwe_digest: bytes | None = None, jwe_expires: int = 0) -> Tokenized:
        """Store ``card`` for ``merchant_id`` (or find it) and return its token.

        ``jwe_digest`` marks the client-side JWE the card came in as used, in the
        same transaction; a second use raises :class:`~gateway.vault.store.Replayed`.
        """
        hsm = self._hsm
        pan = card.pan.encode("ascii")
        now = int(time.time())

        def draw() -> VaultEntry:
            token = make_token(card.pan, hsm.random)
            return VaultEntry(
                token=token, merchant_id=merchant_id, fingerprint=hsm.fingerprint(pan),
                sealed=hsm.seal(pan, _pan_aad(merchant_id, token)),
                bin=card.bin, last4=card.last4, brand=card.brand, exp_month=card.exp_month,
                exp_year=card.exp_year, created=now, updated=now)

        for _ in range(_DRAWS):
            entry = await self._hsm_work(draw)
            token = entry.token
            try:
                saved = await self._store.save(entry, jwe_digest=jwe_digest,
                                               jwe_expires=jwe_expires)
            except TokenTaken:
                continue
            if cvc:
                await self._hsm_work(functools.partial(self.cvcs.put, merchant_id,
                                                       saved.token, cvc))
            return Tokenized(saved.token, saved.brand, saved.last4, saved.exp_month,
                             saved.exp_year, created=saved.token == token)
        raise VaultFull("no free token after several draws")

    async def describe(self, merchant_id: str, token: str) -> Tokenized:
        """The public facts of a token (brand, last 4, expiry), for its merchant only."""
        entry = await self._store.get(merchant_id, token)
        if entry is None:
            raise TokenNotFound()
        return Tokenized(entry.token, entry.brand, entry.last4, entry.exp_month,
                         entry.exp_year, created=False)

    async def detokenize_for_network(self, merchant_id: str, token: str) -> NetworkCard:
        """The PAN (and the CVC, consumed) for building the authorization message."""
        entry = await self._store.get(merchant_id, token)
        if entry is None:
            raise TokenNotFound()
        def unseal() -> NetworkCard:
            pan = self._hsm.unseal(entry.sealed, _pan_aad(merchant_id, token)).decode("ascii")
            card = Card(pan, entry.exp_month, entry.exp_year, entry.brand)
            return NetworkCard(card, self.cvcs.take(merchant_id, token))
        return await self._hsm_work(unseal)

    async def purge_replay_records(self, now: int) -> int:
        """Drop the digests of accepted JWEs whose freshness window ended before ``now``."""
        return await self._store.purge_seen(now)

    async def reseal_old_entries(self, batch: int = 500) -> int:
        """Re-seal every PAN sealed under an older DEK with the active one (after a DEK
        rotation, before retiring the old version). Returns how many moved."""
        health = self._hsm.health()
        active = health.active_dek
        if active is None:
            return 0
        moved = 0
        while True:
            entries = await self._store.below_key_version(active, batch)
            if not entries:
                return moved
            fresh = []
            for entry in entries:
                aad = _pan_aad(entry.merchant_id, entry.token)
                pan = self._hsm.unseal(entry.sealed, aad)
                fresh.append(replace(entry, sealed=self._hsm.seal(pan, aad)))
            await self._store.reseal(fresh)
            moved += len(fresh)


__all__ = ["NetworkCard", "Replayed", "TokenNotFound", "Tokenized", "Vault", "VaultFull"]
