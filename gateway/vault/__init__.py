"""The card vault: tokens for PANs (sealed by the HSM), the CVC cache, and the
vault's store interface. See ``gateway.vault.vault`` for the rules."""

from gateway.vault.cvc import CvcCache
from gateway.vault.store import Replayed, SqliteVaultStore, VaultEntry, VaultStore
from gateway.vault.vault import NetworkCard, Tokenized, TokenNotFound, Vault, VaultFull

__all__ = ["CvcCache", "NetworkCard", "Replayed", "SqliteVaultStore", "TokenNotFound",
           "Tokenized", "Vault", "VaultEntry", "VaultFull", "VaultStore"]
