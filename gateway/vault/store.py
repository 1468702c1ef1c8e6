"""Where vault entries live: a small engine-agnostic interface and its SQLite engine.

A vault entry holds the PAN only sealed (with the DEK version beside it), plus
what may be kept in clear: BIN (first 6), last 4, brand, expiry, and the
keyed fingerprint. The same table design carries over to PostgreSQL.

The store also remembers every client-side JWE it accepted until the end of
the freshness window (``jwe_seen``), written in the same transaction as the
entry, so a replay is refused even after a restart.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol

from gateway.store.sqlite import SqliteDatabase
from hsm_sim.interface import Sealed

SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS vault_cards (
        token       TEXT PRIMARY KEY,
        merchant_id TEXT NOT NULL,
        fingerprint BLOB NOT NULL,
        key_version INTEGER NOT NULL,
        pan_sealed  BLOB NOT NULL,
        bin         TEXT NOT NULL,
        last4       TEXT NOT NULL,
        brand       TEXT NOT NULL,
        exp_month   INTEGER NOT NULL,
        exp_year    INTEGER NOT NULL,
        created     INTEGER NOT NULL,
        updated     INTEGER NOT NULL,
        UNIQUE (merchant_id, fingerprint)
    )""",
    "CREATE INDEX IF NOT EXISTS vault_cards_key_version ON vault_cards (key_version)",
    """CREATE TABLE IF NOT EXISTS jwe_seen (
        digest  BLOB PRIMARY KEY,
        expires INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS jwe_seen_expires ON jwe_seen (expires)",
)


class Replayed(Exception):
    """This JWE was accepted before (within the freshness window)."""


class TokenTaken(Exception):
    """The freshly drawn token already exists (draw again)."""


@dataclass(frozen=True)
class VaultEntry:
    """One card in the vault: sealed PAN and the columns that may be kept in clear."""

    token: str
    merchant_id: str
    fingerprint: bytes = field(repr=False)
    sealed: Sealed = field(repr=False)
    bin: str
    last4: str
    brand: str
    exp_month: int
    exp_year: int
    created: int
    updated: int


class VaultStore(Protocol):
    """What the vault needs from a store."""

    async def save(self, entry: VaultEntry, *, jwe_digest: bytes | None,
                   jwe_expires: int) -> VaultEntry:
        """Insert ``entry``, or, when the merchant already holds this card (same
        fingerprint), update its expiry and return the existing entry. Records
        ``jwe_digest`` in the same transaction. Raises :class:`Replayed` if the
        digest is already there, :class:`TokenTaken` if the token is."""
        ...

    async def get(self, merchant_id: str, token: str) -> VaultEntry | None:
        """The entry for ``token`` if ``merchant_id`` created it, else ``None``."""
        ...

    async def reseal(self, entries: list[VaultEntry]) -> None:
        """Replace the sealed PANs (and key versions) of ``entries`` (key rotation)."""
        ...

    async def below_key_version(self, version: int, limit: int) -> list[VaultEntry]:
        """Entries sealed under a DEK older than ``version``."""
        ...

    async def purge_seen(self, now: int) -> int:
        """Forget JWE digests whose window is over; returns how many."""
        ...


_COLUMNS: Final = ("token, merchant_id, fingerprint, key_version, pan_sealed, bin, last4, "
                   "brand, exp_month, exp_year, created, updated")


def _row(row: Any) -> VaultEntry:
    (token, merchant_id, fingerprint, version, blob, bin_, last4, brand, exp_month,
     exp_year, created, updated) = row
    return VaultEntry(str(token), str(merchant_id), bytes(fingerprint),
                      Sealed(int(version), bytes(blob)),
                      str(bin_), str(last4), str(brand), int(exp_month),
                      int(exp_year), int(created), int(updated))


class SqliteVaultStore:
    """The vault's tables in the gateway's SQLite store."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        db.write_sync(_create)

    def __repr__(self) -> str:
        return f"SqliteVaultStore({self._db!r})"

    async def save(self, entry: VaultEntry, *, jwe_digest: bytes | None,
                   jwe_expires: int) -> VaultEntry:
        def job(conn: sqlite3.Connection) -> VaultEntry:
            if jwe_digest is not None:
                try:
                    conn.execute("INSERT INTO jwe_seen (digest, expires) VALUES (?, ?)",
                                 (jwe_digest, jwe_expires))
                except sqlite3.IntegrityError:
                    raise Replayed() from None
            found = conn.execute(
                f"SELECT {_COLUMNS} FROM vault_cards WHERE merchant_id = ? AND fingerprint = ?",
                (entry.merchant_id, entry.fingerprint)).fetchone()
            if found is not None:
                old = _row(found)
                conn.execute("UPDATE vault_cards SET exp_month = ?, exp_year = ?, updated = ? "
                             "WHERE token = ?",
                             (entry.exp_month, entry.exp_year, entry.updated, old.token))
                return replace(old, exp_month=entry.exp_month, exp_year=entry.exp_year,
                               updated=entry.updated)
            try:
                conn.execute(
                    f"INSERT INTO vault_cards ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (entry.token, entry.merchant_id, entry.fingerprint, entry.sealed.key_version,
                     entry.sealed.blob, entry.bin, entry.last4, entry.brand, entry.exp_month,
                     entry.exp_year, entry.created, entry.updated))
            except sqlite3.IntegrityError:
                raise TokenTaken() from None
            return entry
        return await self._db.write(job)

    async def get(self, merchant_id: str, token: str) -> VaultEntry | None:
        def job(conn: sqlite3.Connection) -> VaultEntry | None:
            row = conn.execute(f"SELECT {_COLUMNS} FROM vault_cards WHERE token = ?",
                               (token,)).fetchone()
            return None if row is None else _row(row)
        entry = await self._db.read(job)
        # Compared here, not in SQL, so that another merchant's token and an
        # unknown token take the same path.
        return entry if entry is not None and entry.merchant_id == merchant_id else None

    async def reseal(self, entries: list[VaultEntry]) -> None:
        def job(conn: sqlite3.Connection) -> None:
            conn.executemany("UPDATE vault_cards SET key_version = ?, pan_sealed = ? "
                             "WHERE token = ?",
                             [(e.sealed.key_version, e.sealed.blob, e.token) for e in entries])
        await self._db.write(job)

    async def below_key_version(self, version: int, limit: int) -> list[VaultEntry]:
        def job(conn: sqlite3.Connection) -> list[VaultEntry]:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM vault_cards WHERE key_version < ? "
                                "LIMIT ?", (version, limit)).fetchall()
            return [_row(r) for r in rows]
        return await self._db.read(job)

    async def purge_seen(self, now: int) -> int:
        def job(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM jwe_seen WHERE expires < ?", (now,)).rowcount
        return await self._db.write(job)


def _create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA:
        conn.execute(statement)
